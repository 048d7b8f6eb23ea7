//! Abbreviations a document defines, linked as their long forms are: after "indomethacin
//! (IDM)", every `IDM` of the document (the one in parentheses too) is a mention of the
//! concept the matcher found for "indomethacin". A local definition outranks whatever the
//! dictionary made of the same characters.

use crate::abbrev::{definitions, short_form_after};
use crate::matcher::Match;
use crate::word::find_bytes;

/// Adds to each field's matches (`fields`: the field's text and its matches, in order) a
/// match for every whole-word occurrence of an abbreviation the document defines (as
/// Schwartz & Hearst find them, or in parentheses right after a match), with the
/// concept and score of the match that ends its long form; matches that overlap one are
/// dropped. An abbreviation whose long form is no concept ("mean arterial pressure (MAP)")
/// is no concept anywhere in the document: the dictionary's matches of it are dropped. Each
/// field's matches stay sorted by position.
pub fn link_defined_abbreviations(fields: &mut [(&str, Vec<Match>)]) {
    // (short form, concept and score), the first definition of a short form winning
    let mut defined: Vec<(String, Option<Linked>)> = Vec::new();
    let mut in_part: Vec<String> = Vec::new();
    for (text, found) in fields.iter() {
        for d in definitions(text) {
            let long_end = d.long_start + d.long.len();
            let m = found.iter().find(|m| m.end == long_end && m.start >= d.long_start);
            // a long form its match names only in part ("puromycin amino-nucleoside" of
            // "nucleoside") defines nothing: the dictionary's sense of the short form stands
            if m.is_some_and(|m| 2 * letters(&text[m.start..m.end]) < letters(&d.long)) {
                in_part.push(d.short);
                continue;
            }
            if !defined.iter().any(|(s, _)| *s == d.short) {
                defined.push((d.short, m.map(|m| (m.concept, m.score))));
            }
        }
    }
    // a short form in parentheses right after a match ("sodium (Na)"), where the letters
    // need not be the long form's; the longest match ending there names it
    for (text, found) in fields.iter() {
        for (i, m) in found.iter().enumerate() {
            // sorted by start and apart, matches share an end only with their neighbour
            if i > 0 && found[i - 1].end == m.end {
                continue;
            }
            let Some((a, b)) = short_form_after(text, m.end) else { continue };
            let (short, long) = (&text[a..b], &text[m.start..m.end]);
            let known = defined.iter().any(|(s, _)| s == short) || in_part.iter().any(|s| s == short);
            if short.len() < long.len() && !long.contains(short) && !known {
                defined.push((short.to_owned(), Some((m.concept, m.score))));
            }
        }
    }
    if defined.is_empty() {
        return;
    }
    for (text, found) in fields.iter_mut() {
        let mut added: Vec<(usize, usize, Option<Linked>)> = Vec::new();
        for (short, concept) in &defined {
            for (start, end) in whole_words(text, short) {
                // a later definition's occurrence wins over an earlier one's it overlaps ("IL-6", "IL")
                added.retain(|&(s, e, _)| e <= start || end <= s);
                added.push((start, end, *concept));
            }
        }
        if added.is_empty() {
            continue;
        }
        added.sort_by_key(|a| a.0);
        // a match of exactly an occurrence whose long form is no concept goes; one that
        // overlaps an occurrence of a linked one gives way to it
        found.retain(|m| {
            !added.iter().any(|&(start, end, c)| match c {
                Some(_) => m.start < end && start < m.end,
                None => m.start == start && m.end == end,
            })
        });
        let added: Vec<(usize, usize, u32, f32)> = added.into_iter().filter_map(|(s, e, c)| c.map(|(c, x)| (s, e, c, x))).collect();
        // character offsets counted once, left to right (a text's ASCII prefix needs none)
        let ascii = text.is_ascii();
        let (mut byte, mut chars) = (0, 0u32);
        let mut char_at = |at: usize| {
            if ascii {
                return at as u32;
            }
            chars += text[byte..at].chars().count() as u32;
            byte = at;
            chars
        };
        for (start, end, concept, score) in added {
            let char_start = char_at(start);
            let char_end = char_at(end);
            found.push(Match { start, end, char_start, char_end, concept, score });
        }
        found.sort_by_key(|m| m.start);
    }
}

/// The number of letters and digits of a text.
fn letters(text: &str) -> usize {
    text.chars().filter(|c| c.is_alphanumeric()).count()
}

/// The concept and score an abbreviation's long form was matched with.
type Linked = (u32, f32);

/// The byte ranges of `word` in `text` with no letter or digit right before or after.
fn whole_words<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
    let alnum_before = |i: usize| text[..i].chars().next_back().is_some_and(char::is_alphanumeric);
    let alnum_after = |i: usize| text[i..].chars().next().is_some_and(char::is_alphanumeric);
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = find_bytes(text.as_bytes(), from, word.as_bytes())?;
        from = at + word.len();
        Some((at, at + word.len()))
    })
    // a one-letter abbreviation before a comparison is a statistic's name
    .filter(move |&(a, b)| !(alnum_before(a) || alnum_after(b) || (word.len() == 1 && compared(&text[b..]))))
}

/// Whether a text begins with a comparison ("P < 0.05", "n = 12"): a one-letter abbreviation
/// before one is a statistic's name, not the defined one.
fn compared(rest: &str) -> bool {
    rest.trim_start().starts_with(['<', '>', '=', '\u{2264}', '\u{2265}'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matcher, Options, parse_concepts};

    #[test]
    fn a_defined_abbreviation_is_its_long_forms_concept_everywhere() {
        let m = Matcher::new(
            &parse_concepts("D007213\tIndomethacin\t\nD001\tIdm Syndrome\tIDM\nD004298\tDopamine\t\n").expect("vocab"),
            Options::default(),
        );
        let title = "IDM and dopamine (DA) in rats.";
        let body = "Rats given indomethacin (IDM) and DA; IDM-treated rats, not IDMS.";
        let mut fields: Vec<(&str, Vec<Match>)> = [title, body].into_iter().map(|t| (t, m.find(t))).collect();
        link_defined_abbreviations(&mut fields);
        let named = |(text, found): &(&str, Vec<Match>)| -> Vec<(String, String)> {
            found.iter().map(|x| (text[x.start..x.end].to_owned(), m.concept(x.concept).0.to_owned())).collect()
        };
        assert_eq!(
            named(&fields[0]),
            [("IDM", "D007213"), ("dopamine", "D004298"), ("DA", "D004298")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            named(&fields[1]),
            [("indomethacin", "D007213"), ("IDM", "D007213"), ("DA", "D004298"), ("IDM", "D007213")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!((fields[1].1[1].char_start, fields[1].1[1].char_end), (25, 28));
    }

    /// A short form right after a match is that match's concept, though its letters are not
    /// the long form's; a one-letter one before a comparison is a statistic.
    #[test]
    fn a_short_form_right_after_a_match_is_its_concept() {
        let m = Matcher::new(
            &parse_concepts("D012964\tSodium\t\nD010695\tPhlorizin\t\nD002713\tChlorides\tchloride\n").expect("vocab"),
            Options::default(),
        );
        let text = "Serum sodium (Na) fell after phlorizin (P; 1 g) and Na rose (P < 0.05); P and Cl.";
        let mut fields: Vec<(&str, Vec<Match>)> = vec![(text, m.find(text))];
        link_defined_abbreviations(&mut fields);
        let found: Vec<(usize, &str, &str)> =
            fields[0].1.iter().map(|x| (x.start, &text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(
            found,
            [
                (6, "sodium", "D012964"),
                (14, "Na", "D012964"),
                (29, "phlorizin", "D010695"),
                (40, "P", "D010695"),
                (52, "Na", "D012964"),
                (72, "P", "D010695")
            ]
        );
    }

    /// A long form matched only in part defines nothing: the dictionary's concept of the
    /// short form stands.
    #[test]
    fn a_long_form_matched_in_part_leaves_the_dictionarys_sense() {
        let m = Matcher::new(
            &parse_concepts("D011692\tPuromycin Aminonucleoside\tPAN\nD009705\tNucleosides\t\n").expect("vocab"),
            Options::default(),
        );
        let text = "Rats given puromycin amino-nucleoside (PAN); PAN again.";
        let mut fields: Vec<(&str, Vec<Match>)> = vec![(text, m.find(text))];
        link_defined_abbreviations(&mut fields);
        let found: Vec<(&str, &str)> = fields[0].1.iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(found, [("nucleoside", "D009705"), ("PAN", "D011692"), ("PAN", "D011692")]);
    }

    /// An abbreviation whose long form is no concept is none anywhere in the document, whatever
    /// the dictionary makes of its letters.
    #[test]
    fn an_abbreviation_defined_as_no_concept_is_none() {
        let m = Matcher::new(&parse_concepts("D008694\tMethamphetamine\tMAP\n").expect("vocab"), Options::default());
        let title = "MAP in rats.";
        let body = "The mean arterial pressure (MAP) fell; MAP rose.";
        let mut fields: Vec<(&str, Vec<Match>)> = [title, body].into_iter().map(|t| (t, m.find(t))).collect();
        assert_eq!(fields.iter().map(|f| f.1.len()).sum::<usize>(), 3, "the dictionary's");
        link_defined_abbreviations(&mut fields);
        assert!(fields.iter().all(|f| f.1.is_empty()), "{:?}", fields);
    }
}
