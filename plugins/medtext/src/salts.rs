//! Salts: a drug named with its counter-ion ("piperacillin sodium", "lidocaine
//! hydrochloride", "sodium warfarin") is the drug, as MeSH indexes it and annotators link it.

use crate::matcher::Match;

/// Counter-ions written after a drug's name, in lowercase (a plural `s` is dropped).
const AFTER: &[&str] = &[
    "acetate",
    "besilate",
    "besylate",
    "bisulfate",
    "bitartrate",
    "bromide",
    "calcium",
    "chloride",
    "citrate",
    "dihydrate",
    "dihydrochloride",
    "dimesylate",
    "disodium",
    "fumarate",
    "gluconate",
    "hcl",
    "hemifumarate",
    "hydrate",
    "hydrobromide",
    "hydrochloride",
    "isethionate",
    "lactate",
    "magnesium",
    "maleate",
    "mesilate",
    "mesylate",
    "monohydrate",
    "phosphate",
    "potassium",
    "sodium",
    "succinate",
    "sulfate",
    "sulphate",
    "tartrate",
    "tosylate",
    "trihydrate",
];

/// Cations written before a drug's name ("sodium warfarin", "calcium disodium edetate").
const BEFORE: &[&str] = &["calcium", "disodium", "magnesium", "potassium", "sodium"];

/// Extends each match `is_drug` accepts over the counter-ion words written right next to it
/// (a space or a hyphen between), and drops the matches of those words: "piperacillin
/// sodium" is one match of piperacillin. `matches` are `text`'s, sorted by position, none
/// overlapping; they stay so.
pub fn fold_salts(text: &str, matches: &mut Vec<Match>, is_drug: impl Fn(u32) -> bool) {
    if matches.is_empty() {
        return;
    }
    let mut changed = false;
    for i in 0..matches.len() {
        let m = &matches[i];
        if !is_drug(m.concept) || is_counter_ion(&text[m.start..m.end]) {
            continue;
        }
        let (mut start, mut end) = (m.start, m.end);
        while let Some(after) = word_after(text, end).filter(|&(a, b)| one_of(&text[a..b], AFTER)) {
            end = after.1;
        }
        // a cation before a class ("calcium ions", "calcium antagonists") is a concept of its
        // own; never taken into the last match before that is no counter-ion (it may have it)
        let class = text[m.start..m.end].ends_with(['s', 'S']);
        let floor = matches[..i].iter().rev().find(|p| !is_counter_ion(&text[p.start..p.end])).map_or(0, |p| p.end);
        while let Some(before) = word_before(text, start).filter(|&(a, b)| !class && a >= floor && one_of(&text[a..b], BEFORE)) {
            start = before.0;
        }
        if (start, end) != (m.start, m.end) {
            let m = &mut matches[i];
            m.char_start -= text[start..m.start].chars().count() as u32;
            m.char_end += text[m.end..end].chars().count() as u32;
            (m.start, m.end) = (start, end);
            changed = true;
        }
    }
    if changed {
        // the counter-ions' own matches are inside the drug's now
        let spans: Vec<(usize, usize)> = matches.iter().map(|m| (m.start, m.end)).collect();
        matches.retain(|m| !spans.iter().any(|&(a, b)| a <= m.start && m.end <= b && (a, b) != (m.start, m.end)));
    }
}

/// Whether a text is one counter-ion word.
fn is_counter_ion(text: &str) -> bool {
    one_of(text, AFTER)
}

/// Whether a word is one of `list`'s, in any case, or its plural; no allocation (a data
/// stage's every chemical match asks).
fn one_of(word: &str, list: &[&str]) -> bool {
    let w = word.as_bytes();
    if w.len() > 16 || !word.is_ascii() {
        return false;
    }
    let mut buf = [0u8; 16];
    buf[..w.len()].copy_from_slice(w);
    buf[..w.len()].make_ascii_lowercase();
    let lower = &buf[..w.len()];
    let singular = lower.strip_suffix(b"s").unwrap_or(lower);
    list.iter().any(|x| x.as_bytes() == lower || x.as_bytes() == singular)
}

/// The word (letters) right after byte `end`, past one space or hyphen.
fn word_after(text: &str, end: usize) -> Option<(usize, usize)> {
    let rest = &text[end..];
    let sep = rest.chars().next().filter(|c| matches!(c, ' ' | '-'))?;
    let from = end + sep.len_utf8();
    let len = text[from..].find(|c: char| !c.is_alphabetic()).unwrap_or(text.len() - from);
    (len > 0 && !text[from + len..].starts_with(|c: char| c.is_alphanumeric())).then_some((from, from + len))
}

/// The word (letters) right before byte `start`, before one space or hyphen.
fn word_before(text: &str, start: usize) -> Option<(usize, usize)> {
    let before = &text[..start];
    let sep = before.chars().next_back().filter(|c| matches!(c, ' ' | '-'))?;
    let to = start - sep.len_utf8();
    let from = text[..to].rfind(|c: char| !c.is_alphabetic()).map_or(0, |i| i + text[i..].chars().next().map_or(1, char::len_utf8));
    (from < to && !text[..from].ends_with(|c: char| c.is_alphanumeric())).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matcher, Options, parse_concepts};

    #[test]
    fn a_drug_with_its_counter_ion_is_the_drug() {
        let m = Matcher::new(
            &parse_concepts(
                "D010878\tPiperacillin\t\tchemical\nD012964\tSodium\t\tchemical\nD014859\tWarfarin\t\tchemical\n\
                 D008012\tLidocaine\t\tchemical\nD013431\tSulfates\t\tchemical\nD012965\tSodium Chloride\t\tchemical\n\
                 D003\tFever\t\tdisease\nD002118\tCalcium\t\tchemical\nD007477\tIons\t\tchemical\n",
            )
            .expect("vocab"),
            Options::default(),
        );
        let text = "Piperacillin sodium, sodium warfarin, lidocaine hydrochloride; sodium chloride, sulfates; fever sodium; \
                    piperacillin sodium warfarin; calcium ions.";
        let mut found = m.find(text);
        fold_salts(text, &mut found, |c| m.concept(c).0 != "D003");
        let named: Vec<(&str, &str)> = found.iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(
            named,
            [
                ("Piperacillin sodium", "D010878"),
                ("sodium warfarin", "D014859"),
                ("lidocaine hydrochloride", "D008012"),
                ("sodium chloride", "D012965"),
                ("sulfates", "D013431"),
                ("fever", "D003"),
                ("sodium", "D012964"),
                ("piperacillin sodium", "D010878"),
                ("warfarin", "D014859"),
                ("calcium", "D002118"),
                ("ions", "D007477")
            ]
        );
        let warfarin = &found[1];
        assert_eq!((warfarin.char_start, warfarin.char_end), (21, 36));
    }
}
