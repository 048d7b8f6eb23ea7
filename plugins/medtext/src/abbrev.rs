//! Abbreviations: finding them in text, finding their definitions ("myocardial infarction
//! (MI)", Schwartz & Hearst 2003), and comparing long forms.

use std::collections::{HashMap, HashSet};

use crate::token::{normalize_token, tokens};
use crate::vocab::VocabError;
use crate::word::find_byte;

/// An abbreviation written in a text, in byte offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
}

/// A definition found in a text: `long (short)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The abbreviation, e.g. `MI`.
    pub short: String,
    /// The long form, e.g. `myocardial infarction`.
    pub long: String,
    /// Byte range of the long form.
    pub long_start: usize,
    /// Byte offset one past the closing parenthesis.
    pub end: usize,
}

/// Whether a word looks like an abbreviation: 2-10 characters, starting with a letter or
/// digit, with at least two capitals, or a capital and a digit (MI, COPD, IL-6, HbA1c).
pub fn is_abbreviation(word: &str) -> bool {
    let n = word.chars().count();
    if !(2..=10).contains(&n) || !word.starts_with(|c: char| c.is_alphanumeric()) {
        return false;
    }
    let upper = word.chars().filter(|c| c.is_uppercase()).count();
    let digits = word.chars().filter(|c| c.is_ascii_digit()).count();
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    letters > 0 && (upper >= 2 || (upper >= 1 && digits >= 1)) && !word.ends_with('-')
}

/// The abbreviation-like words of `text`: runs of letters, digits and inner hyphens.
pub fn occurrences(text: &str) -> Vec<Occurrence> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    while let Some((b, c)) = chars.next() {
        let inner_hyphen = c == '-' && start.is_some() && chars.peek().is_some_and(|&(_, n)| n.is_alphanumeric());
        if c.is_alphanumeric() || inner_hyphen {
            start.get_or_insert(b);
        } else if let Some(s) = start.take()
            && is_abbreviation(&text[s..b])
        {
            out.push(Occurrence { start: s, end: b });
        }
        i = b + c.len_utf8();
    }
    if let Some(s) = start
        && is_abbreviation(&text[s..i.min(bytes.len())])
    {
        out.push(Occurrence { start: s, end: i });
    }
    out
}

/// The definitions `long form (SF)` in `text`.
pub fn definitions(text: &str) -> Vec<Definition> {
    let mut out = Vec::new();
    let mut search = 0;
    let bytes = text.as_bytes();
    while let Some(open) = find_byte(bytes, search, b'(') {
        search = open + 1;
        // a short form is at most 10 characters before `)`, `;` or `,`: look no further
        // (most parentheses hold no abbreviation, and this is the whole cost of those)
        let window = &bytes[open + 1..bytes.len().min(open + 1 + 4 * 10 + 2)];
        let Some(stop) = window.iter().position(|&b| matches!(b, b')' | b';' | b',')) else {
            out.extend(reversed(text, open));
            continue;
        };
        let Some(close) = find_byte(bytes, open, b')') else { break };
        let inside = text[open + 1..open + 1 + stop].trim();
        if !is_abbreviation(inside) || inside.split_whitespace().count() > 1 {
            out.extend(reversed(text, open));
            continue;
        }
        let max_words = (inside.chars().count() + 5).min(inside.chars().count() * 2);
        let Some((w0, w_end)) = last_words(&text[..open], max_words) else { continue };
        let candidate = &text[w0..w_end];
        if let Some(offset) = best_long_form(inside, candidate) {
            let long = candidate[offset..].trim();
            let long_start = w0 + offset;
            if long.chars().count() > inside.chars().count() && !long.contains(inside) {
                out.push(Definition { short: inside.to_owned(), long: long.to_owned(), long_start, end: close + 1 });
            }
        }
    }
    out
}

/// The short form written in parentheses right after a named thing that ends at byte `end`
/// of `text` ("sodium (Na)", "uridine (Urd)", "ammonia (NH3)", "diethylnitrosamine (DEN: 10
/// mg)"): one word of at most 10 characters with a letter, and a capital or a digit, closed
/// by `)`, `;`, `,` or `:`. Its byte range. Schwartz & Hearst ask its letters to be the long
/// form's; a named thing right before it needs no such proof, so it is found only where
/// the caller knows what ends at `end` (a dictionary match, a gold mention).
pub fn short_form_after(text: &str, end: usize) -> Option<(usize, usize)> {
    let rest = text.get(end..)?;
    let open = rest.len() - rest.trim_start_matches([' ', '\u{a0}']).len();
    if !rest[open..].starts_with('(') || open > 1 {
        return None;
    }
    let start = end + open + 1;
    // at most 10 characters of up to 4 bytes, then the closing mark: look no further
    let window = &text.as_bytes()[start..text.len().min(start + 4 * 10 + 1)];
    let len = window.iter().position(|b| matches!(b, b')' | b';' | b',' | b':'))?;
    let short = &text[start..start + len];
    let n = short.chars().count();
    let fits = (1..=10).contains(&n)
        && !short.contains(char::is_whitespace)
        && short.starts_with(char::is_alphanumeric)
        && short.contains(char::is_alphabetic)
        && short.contains(|c: char| c.is_uppercase() || c.is_ascii_digit());
    fits.then_some((start, start + len))
}

/// The definition `SF (long form)`, the other way round (`cAMP (cyclic adenosine
/// monophosphate)`): the word right before the parenthesis at `open` is an abbreviation, the
/// parentheses (closed within 120 bytes) hold a name of two words or more, and Schwartz &
/// Hearst find its letters in all of it.
fn reversed(text: &str, open: usize) -> Option<Definition> {
    let before = text[..open].trim_end();
    if text[before.len()..open].chars().count() > 1 {
        return None;
    }
    // an abbreviation is at most 10 characters: read back no further
    let start = before
        .char_indices()
        .rev()
        .take(11)
        .find(|&(_, c)| c.is_whitespace() || matches!(c, '(' | '[' | '/'))
        .map_or(if before.len() <= 40 { 0 } else { before.len() }, |(i, c)| i + c.len_utf8());
    let short = &before[start..];
    if !is_abbreviation(short) {
        return None;
    }
    let close = open + 1 + text.as_bytes()[open + 1..text.len().min(open + 121)].iter().position(|&b| b == b')')?;
    let inside = &text[open + 1..close];
    let long = inside.trim();
    let words: Vec<&str> = long.split_whitespace().collect();
    let n = short.chars().count();
    // a name, not a figure or a list ("p = 0.94", "n = 54", "CI, 1.1-1.9", "[ECD]"), of at
    // most Schwartz & Hearst's min(|SF| + 5, 2 |SF|) words, none of them the abbreviation
    // itself ("AF group")
    let singular = short.strip_suffix('s').unwrap_or(short);
    if words.len() < 2
        || words.len() > (n + 5).min(2 * n)
        || long.contains(['(', '[', '=', '<', '>', ';'])
        || long.contains(", ")
        || words.iter().any(|w| w.eq_ignore_ascii_case(short) || w.eq_ignore_ascii_case(singular))
    {
        return None;
    }
    // the long form is all of it, and a two-letter abbreviation's letters begin its words
    // ("VS (vegetative state)", not "OR (occasional partners)")
    if best_long_form(short, long)? != 0 {
        return None;
    }
    let initials: String = words.iter().filter_map(|w| w.chars().next()).flat_map(char::to_lowercase).collect();
    let mut letters = short.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase);
    if n <= 2 && !letters.all(|c| initials.contains(c)) {
        return None;
    }
    let long_start = open + 1 + (inside.len() - inside.trim_start().len());
    (long.chars().count() > n).then(|| Definition { short: short.to_owned(), long: long.to_owned(), long_start, end: close + 1 })
}

/// Where the last `max_words` whitespace-separated words of `before` begin and where the
/// last of them ends, reading back no further than the sentence (after the last `.`, `;`,
/// `:`, `(`, `)` or line break); `None` if it has no word. One backward pass over only the
/// characters it needs.
fn last_words(before: &str, max_words: usize) -> Option<(usize, usize)> {
    let (mut start, mut end) = (None, None);
    let (mut words, mut in_word) = (0, false);
    for (i, c) in before.char_indices().rev() {
        if matches!(c, '.' | ';' | ':' | '(' | ')' | '\n') {
            break;
        }
        if c.is_whitespace() {
            if in_word && words == max_words {
                break;
            }
            in_word = false;
        } else {
            if !in_word {
                in_word = true;
                words += 1;
                end.get_or_insert(i + c.len_utf8());
            }
            start = Some(i);
        }
    }
    Some((start?, end?))
}

/// Schwartz & Hearst's `findBestLongForm`: match the short form's characters right to left in
/// the candidate, the first one at the start of a word; the byte offset of the long form.
fn best_long_form(short: &str, long: &str) -> Option<usize> {
    let s: Vec<char> = short.chars().flat_map(char::to_lowercase).collect();
    let l: Vec<(usize, char)> = long.char_indices().map(|(i, c)| (i, c.to_lowercase().next().unwrap_or(c))).collect();
    let mut si = s.len() as isize - 1;
    let mut li = l.len() as isize - 1;
    while si >= 0 {
        let c = s[si as usize];
        if !c.is_alphanumeric() {
            si -= 1;
            continue;
        }
        while li >= 0 && (l[li as usize].1 != c || (si == 0 && li > 0 && l[li as usize - 1].1.is_alphanumeric())) {
            li -= 1;
        }
        if li < 0 {
            return None;
        }
        li -= 1;
        si -= 1;
    }
    let li = (li + 1) as usize;
    let start = l[..=li.min(l.len().saturating_sub(1))].iter().rev().find(|(_, c)| c.is_whitespace()).map_or(0, |(i, c)| i + c.len_utf8());
    Some(start)
}

/// A long form as compared: lowercase, hyphens as spaces, one space between words, a plural
/// `s` dropped from each word.
pub fn normalize_long_form(s: &str) -> String {
    s.to_lowercase()
        .replace(['-', '/'], " ")
        .split_whitespace()
        .map(|w| if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") { &w[..w.len() - 1] } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words that carry no sense.
const STOPWORDS: &[&str] = &["a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "of", "on", "or", "the", "to", "with"];

/// One sense of an abbreviation, with the words that point to it.
#[derive(Debug, Clone)]
pub struct Sense {
    /// The long form.
    pub long: String,
    /// Normalized content words of the long form and of its cue words.
    words: Vec<String>,
}

/// A sense inventory: abbreviation -> senses, most common first.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    senses: HashMap<String, Vec<Sense>>,
}

fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    tokens(text).map(|t| normalize_token(&text[t.start..t.end])).filter(|w| w.len() > 1 && !STOPWORDS.contains(&w.as_str()))
}

impl Inventory {
    /// Reads `abbreviations.tsv` (`abbreviation<TAB>sense|sense...`).
    pub fn parse(tsv: &str) -> Result<Self, VocabError> {
        let mut inv = Inventory::default();
        inv.add(tsv, false)?;
        Ok(inv)
    }

    /// Adds senses and cue words (`abbreviation<TAB>sense<TAB>cue|cue...`): a sense the
    /// inventory lacks is appended, a known one gets the cues.
    pub fn add_supplement(&mut self, tsv: &str) -> Result<(), VocabError> {
        self.add(tsv, true)
    }

    fn add(&mut self, tsv: &str, supplement: bool) -> Result<(), VocabError> {
        for (n, line) in tsv.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let bad = |m: &str| VocabError { line: n + 1, message: m.to_owned() };
            let (abbr, senses) = match cols.as_slice() {
                [a, s, ..] if !a.trim().is_empty() && !s.trim().is_empty() => (a.trim(), *s),
                _ => return Err(bad("expected `abbreviation<TAB>senses`")),
            };
            let entry = self.senses.entry(abbr.to_owned()).or_default();
            if supplement {
                let cues = cols.get(2).copied().unwrap_or("");
                let long = senses.trim();
                let key = normalize_long_form(long);
                let extra: Vec<String> = content_words(&cues.replace('|', " ")).collect();
                match entry.iter_mut().find(|s| normalize_long_form(&s.long) == key) {
                    Some(sense) => sense.words.extend(extra),
                    None => {
                        let mut words: Vec<String> = content_words(long).collect();
                        words.extend(extra);
                        entry.push(Sense { long: long.to_owned(), words });
                    }
                }
            } else {
                for long in senses.split('|').map(str::trim).filter(|s| !s.is_empty()) {
                    entry.push(Sense { long: long.to_owned(), words: content_words(long).collect() });
                }
            }
        }
        for senses in self.senses.values_mut() {
            for s in senses.iter_mut() {
                s.words.sort();
                s.words.dedup();
            }
        }
        Ok(())
    }

    /// The senses of an abbreviation (as written, else in capitals).
    pub fn senses(&self, abbr: &str) -> Option<&[Sense]> {
        self.senses.get(abbr).or_else(|| self.senses.get(&abbr.to_uppercase())).map(Vec::as_slice)
    }

    /// The number of abbreviations.
    pub fn len(&self) -> usize {
        self.senses.len()
    }

    /// Whether the inventory is empty.
    pub fn is_empty(&self) -> bool {
        self.senses.is_empty()
    }
}

/// A sense chosen for one occurrence of an abbreviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Byte offset of the abbreviation.
    pub start: usize,
    /// Byte offset one past it.
    pub end: usize,
    /// The abbreviation as written.
    pub short: String,
    /// The chosen long form.
    pub long: String,
    /// How sure: 0.99 for a definition in the text, else the sense's share of the evidence.
    pub confidence: f32,
}

/// How [`disambiguate`] weighs evidence.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Prior of the inventory's first (most common) sense.
    pub first_sense: f32,
    /// Added to every sense's score.
    pub smoothing: f32,
    /// Confidence of an abbreviation with a single sense in the inventory.
    pub single_sense: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { first_sense: 0.5, smoothing: 0.25, single_sense: 0.8 }
    }
}

/// The sense of every abbreviation in `text`: from a definition in the text when there is
/// one, else from the inventory by the words around it; choices under `threshold` are left out.
pub fn disambiguate(inv: &Inventory, text: &str, threshold: f32, w: &Weights) -> Vec<Choice> {
    let mut defined: HashMap<String, String> = HashMap::new();
    for d in definitions(text) {
        defined.entry(d.short).or_insert(d.long); // the first definition of a short form wins
    }
    let doc_words: HashSet<String> = content_words(text).collect();
    let mut memo: HashMap<&str, Option<(String, f32)>> = HashMap::new();
    let mut out = Vec::new();
    for o in occurrences(text) {
        let short = &text[o.start..o.end];
        let pick = memo.entry(short).or_insert_with(|| {
            if let Some(long) = defined.get(short) {
                return Some((long.clone(), 0.99));
            }
            let senses = inv.senses(short)?;
            if senses.len() == 1 {
                return Some((senses[0].long.clone(), w.single_sense));
            }
            let own = normalize_token(short);
            let scores: Vec<f32> = senses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let hits = s.words.iter().filter(|x| **x != own && doc_words.contains(*x)).count() as f32;
                    hits + w.smoothing + if i == 0 { w.first_sense } else { 0.0 }
                })
                .collect();
            let total: f32 = scores.iter().sum();
            let (best, score) = scores.iter().enumerate().fold((0, f32::MIN), |a, (i, &s)| if s > a.1 { (i, s) } else { a });
            Some((senses[best].long.clone(), score / total))
        });
        if let Some((long, confidence)) = pick.clone()
            && confidence >= threshold
        {
            out.push(Choice { start: o.start, end: o.end, short: short.to_owned(), long, confidence });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_abbreviation_like_words() {
        let text = "After MI, COPD and IL-6 rose; HbA1c fell (p<0.05). The Study had 3 arms.";
        let words: Vec<&str> = occurrences(text).iter().map(|o| &text[o.start..o.end]).collect();
        assert_eq!(words, vec!["MI", "COPD", "IL-6", "HbA1c"]);
    }

    #[test]
    fn schwartz_hearst_definitions() {
        let text = "Patients with acute myocardial infarction (MI) and chronic obstructive pulmonary disease (COPD) were seen. \
                    Heart rate variability (HRV; beats) was low.";
        let d = definitions(text);
        let pairs: Vec<(&str, &str)> = d.iter().map(|d| (d.short.as_str(), d.long.as_str())).collect();
        assert_eq!(
            pairs,
            vec![("MI", "myocardial infarction"), ("COPD", "chronic obstructive pulmonary disease"), ("HRV", "Heart rate variability"),]
        );
        assert_eq!(&text[d[0].long_start..d[0].end], "myocardial infarction (MI)");
        let text = "Intraplatelet\u{a0}cAMP (cyclic adenosine 3',5'-monophosphate) rose; MI (see above) and (a b) too, \
                    IV\u{a0}(intra venous) \u{a0}(a\u{a0}b); OR (occasional partners), AF (AF group), PVR (p = 0.94), \
                    CD (confidence interval, 1.1-1.9), CT (CT in the index visit).";
        let d = definitions(text);
        let pairs: Vec<(&str, &str)> = d.iter().map(|d| (d.short.as_str(), d.long.as_str())).collect();
        assert_eq!(pairs, [("cAMP", "cyclic adenosine 3',5'-monophosphate"), ("IV", "intra venous")]);
        assert_eq!(&text[d[0].long_start..d[0].end], "cyclic adenosine 3',5'-monophosphate)");
    }

    #[test]
    fn a_short_form_follows_a_named_thing_in_parentheses() {
        let text = "sodium (Na), uridine (Urd); DEN (DEN: 10 mg) rats (n = 5) saline (0.9%) X (ip) Y  (Z)";
        let after = |word: &str| {
            let end = text.find(word).expect("in the text") + word.len();
            short_form_after(text, end).map(|(a, b)| &text[a..b])
        };
        assert_eq!(after("sodium"), Some("Na"));
        assert_eq!(after("uridine"), Some("Urd"));
        assert_eq!(after("DEN"), Some("DEN"));
        assert_eq!(after("rats"), None, "more than one word");
        assert_eq!(after("saline"), None, "no letter");
        assert_eq!(after("X"), None, "no capital or digit");
        assert_eq!(after("Y"), None, "not right after");
        assert_eq!(after("(Z)"), None, "nothing after");
    }

    #[test]
    fn a_long_form_is_looked_for_among_the_last_words_of_its_sentence() {
        // a sentence break inside a number, a thin space between words, words past the limit
        let text = "Dose was 3.5 mg\u{2009}tumour necrosis factor (TNF) now. one two three four five six seven eight (OTE)";
        let d = definitions(text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].short.as_str(), d[0].long.as_str()), ("TNF", "tumour necrosis factor"));
        assert_eq!(last_words("one two three four five  ", 4), Some((4, 23)));
        assert_eq!(last_words("x. one two", 4), Some((3, 10)));
        assert_eq!(last_words("3.5 mg", 4), Some((2, 6)));
        assert_eq!(last_words("a (  ", 4), None);
    }

    #[test]
    fn context_chooses_the_sense() {
        let mut inv = Inventory::parse("MI\tmyocardial infarction\nHR\thazard ratio|heart rate\n").expect("valid");
        inv.add_supplement("MI\tmicroinfarction\tbrain|cerebral|cortical|dementia\n").expect("valid");
        let w = Weights::default();
        let cardiac = disambiguate(&inv, "Troponin after MI in the coronary care unit.", 0.5, &w);
        assert_eq!(cardiac[0].long, "myocardial infarction");
        let brain = disambiguate(&inv, "Cortical MI were counted in brains of patients with dementia.", 0.5, &w);
        assert_eq!(brain[0].long, "microinfarction");
        assert!(brain[0].confidence > 0.5);
        let rate = disambiguate(&inv, "HR rose to 120 beats per minute, heart monitoring.", 0.5, &w);
        assert_eq!(rate[0].long, "heart rate");
        let defined = disambiguate(&inv, "Hazard ratio (HR) was 2. The HR fell.", 0.5, &w);
        assert_eq!(defined.len(), 2);
        assert!(defined.iter().all(|c| c.long == "Hazard ratio" && c.confidence > 0.9));
    }

    #[test]
    fn long_forms_compare_loosely() {
        assert_eq!(normalize_long_form("Myocardial  infarctions"), normalize_long_form("myocardial infarction"));
        assert_eq!(normalize_long_form("non-small-cell"), "non small cell");
    }
}
