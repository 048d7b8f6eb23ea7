//! One-edit word lookup (insertion, deletion, substitution) by a deletion index (SymSpell).

use std::collections::HashMap;

use crate::matcher::FxBuild;

/// Maps every word and each of its one-character deletions to the word ids they come from.
#[derive(Default)]
pub struct DeletionIndex {
    keys: HashMap<String, Vec<u32>, FxBuild>,
}

fn deletions(word: &str) -> impl Iterator<Item = String> + '_ {
    word.char_indices().map(move |(i, c)| {
        let mut s = String::with_capacity(word.len());
        s.push_str(&word[..i]);
        s.push_str(&word[i + c.len_utf8()..]);
        s
    })
}

impl DeletionIndex {
    /// Indexes `(word, id)` pairs.
    pub fn build<'a>(words: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut keys: HashMap<String, Vec<u32>, FxBuild> = HashMap::default();
        for (w, id) in words {
            keys.entry(w.to_owned()).or_default().push(id);
            for d in deletions(w) {
                keys.entry(d).or_default().push(id);
            }
        }
        for ids in keys.values_mut() {
            ids.sort_unstable();
            ids.dedup();
        }
        DeletionIndex { keys }
    }

    /// The id of the one vocabulary word within one edit of `word`, if exactly one is.
    pub fn lookup(&self, word: &str) -> Option<u32> {
        let mut found: Option<u32> = None;
        let probes = std::iter::once(word.to_owned()).chain(deletions(word));
        for probe in probes {
            for &id in self.keys.get(&probe).map(Vec::as_slice).unwrap_or(&[]) {
                match found {
                    None => found = Some(id),
                    Some(f) if f == id => {}
                    Some(_) => return None,
                }
            }
        }
        found
    }
}
