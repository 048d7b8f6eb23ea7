//! Word rewrites learned from an annotated corpus (`rewrites.tsv`, written by `medtune vocab
//! build --from-corpus`): a word its annotators' mentions use where the linked concept's name
//! has another ("renal" for "kidney", "toxicity" for "disease"), to try on a mention no name
//! covers ("pulmonary toxicity": "pulmonary disease", Lung Diseases).

use std::collections::HashMap;

use crate::token::normalize_name;
use crate::vocab::VocabError;

/// Each word's replacements, the most often learned first.
#[derive(Debug, Default)]
pub struct Rewrites {
    by_word: HashMap<String, Vec<(String, u32)>>,
}

impl Rewrites {
    /// Reads `from<TAB>to<TAB>times` lines (normalized words; `#` lines are comments).
    pub fn parse(tsv: &str) -> Result<Self, VocabError> {
        let mut by_word: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for (n, line) in tsv.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |m: &str| VocabError { line: n + 1, message: format!("{m}: {line:?}") };
            let [from, to, times] = line.split('\t').collect::<Vec<_>>()[..] else {
                return Err(bad("expected from, to and times, tab-separated"));
            };
            let (from, to) = (normalize_name(from), normalize_name(to));
            if from.is_empty() || to.is_empty() || from.contains(' ') || to.contains(' ') {
                return Err(bad("from and to must be one word each"));
            }
            let times = times.trim().parse().map_err(|_| bad("times must be a whole number"))?;
            by_word.entry(from).or_default().push((to, times));
        }
        for subs in by_word.values_mut() {
            subs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        Ok(Rewrites { by_word })
    }

    /// Whether no rewrite was learned.
    pub fn is_empty(&self) -> bool {
        self.by_word.is_empty()
    }

    /// `text` (two words or more) with one word replaced, normalized, the most often learned
    /// replacement first (ties: earlier words first).
    pub fn variants(&self, text: &str) -> Vec<String> {
        let norm = normalize_name(text);
        let words: Vec<&str> = norm.split(' ').collect();
        if words.len() < 2 {
            return Vec::new();
        }
        let mut out: Vec<(u32, usize, String)> = Vec::new();
        for (i, w) in words.iter().enumerate() {
            for (to, times) in self.by_word.get(*w).into_iter().flatten() {
                let mut v = words.clone();
                v[i] = to;
                out.push((*times, i, v.join(" ")));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out.into_iter().map(|(_, _, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_replace_one_word_most_learned_first() {
        let r = Rewrites::parse("# learned\nrenal\tkidney\t5\ntoxicity\tdisease\t10\ntoxicity\tdisorder\t4\n").expect("parses");
        assert_eq!(r.variants("Renal toxicities"), ["renal disease", "kidney toxicity", "renal disorder"]);
        assert!(r.variants("toxicity").is_empty(), "one word: no rewrite");
        assert!(r.variants("liver failure").is_empty());
        let e = Rewrites::parse("renal\tkidney\tmany\n").expect_err("times not a number");
        assert_eq!(e.line, 1);
        assert!(Rewrites::parse("renal\tkidney disease\t3\n").is_err(), "two words");
    }
}
