//! The vocabulary name nearest a whole mention by character trigrams (TF-IDF weighted cosine,
//! each word padded with a space on both sides): for a span known to be one mention that no
//! name matches word for word ("tuberculous", "choreoathetosis").

use std::cell::RefCell;
use std::collections::HashMap;

use crate::matcher::FxBuild;
use crate::token::normalize_name;

/// The trigrams of a normalized name, each packed as three 21-bit characters.
fn grams(name: &str, out: &mut Vec<u64>) {
    out.clear();
    for word in name.split(' ').filter(|w| !w.is_empty()) {
        let chars: Vec<u64> = std::iter::once(' ').chain(word.chars()).chain(std::iter::once(' ')).map(|c| c as u64).collect();
        out.extend(chars.windows(3).map(|w| (w[0] << 42) | (w[1] << 21) | w[2]));
    }
}

/// An inverted index from trigrams to the names holding them.
pub struct NameIndex {
    /// Each name's concept.
    concepts: Vec<u32>,
    /// Each name's vector length (its trigrams' counts times their idf).
    norms: Vec<f32>,
    gram_ids: HashMap<u64, u32, FxBuild>,
    idf: Vec<f32>,
    /// `postings[offsets[g]..offsets[g + 1]]`: the names holding trigram `g`, a name once per
    /// time it holds it.
    offsets: Vec<u32>,
    postings: Vec<u32>,
    /// Each name's score so far, zero between queries.
    scores: RefCell<Vec<f32>>,
}

impl NameIndex {
    /// Indexes normalized names with their concepts.
    pub fn build(names: &[(String, u32)]) -> Self {
        let mut gram_ids: HashMap<u64, u32, FxBuild> = HashMap::default();
        let (mut counts, mut df): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut buf = Vec::new();
        // first pass: each trigram's postings and names
        for (name, _) in names {
            grams(name, &mut buf);
            buf.sort_unstable();
            let mut last = u64::MAX;
            for &g in &buf {
                let next = gram_ids.len() as u32;
                let id = *gram_ids.entry(g).or_insert(next) as usize;
                if id == counts.len() {
                    counts.push(0);
                    df.push(0);
                }
                counts[id] += 1;
                if g != last {
                    df[id] += 1;
                    last = g;
                }
            }
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        offsets.push(0u32);
        for c in &counts {
            offsets.push(offsets[offsets.len() - 1] + c);
        }
        // sklearn's smooth idf: ln((1 + n) / (1 + df)) + 1
        let n = names.len() as f32;
        let idf: Vec<f32> = df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect();
        // second pass: the postings, and each name's length
        let mut fill: Vec<u32> = offsets[..counts.len()].to_vec();
        let mut postings = vec![0u32; offsets[counts.len()] as usize];
        let mut norms = Vec::with_capacity(names.len());
        for (i, (name, _)) in names.iter().enumerate() {
            grams(name, &mut buf);
            buf.sort_unstable();
            let mut sum = 0f32;
            for run in buf.chunk_by(|a, b| a == b) {
                let id = gram_ids[&run[0]] as usize;
                let w = run.len() as f32 * idf[id];
                sum += w * w;
                for _ in run {
                    postings[fill[id] as usize] = i as u32;
                    fill[id] += 1;
                }
            }
            norms.push(sum.sqrt().max(f32::MIN_POSITIVE));
        }
        let concepts = names.iter().map(|(_, c)| *c).collect();
        NameIndex { concepts, norms, gram_ids, idf, offsets, postings, scores: RefCell::new(Vec::new()) }
    }

    /// The concept of the name nearest `text` among those `keep` accepts, with its cosine
    /// similarity (at most 1); `None` when no name shares a trigram with it.
    pub fn nearest(&self, text: &str, keep: impl Fn(u32) -> bool) -> Option<(u32, f32)> {
        let mut buf = Vec::new();
        grams(&normalize_name(text), &mut buf);
        buf.sort_unstable();
        let query: Vec<(usize, f32)> = buf
            .chunk_by(|a, b| a == b)
            .filter_map(|run| self.gram_ids.get(&run[0]).map(|&id| (id as usize, run.len() as f32 * self.idf[id as usize])))
            .collect();
        let norm = query.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm == 0.0 {
            return None;
        }
        let mut scores = self.scores.borrow_mut();
        scores.resize(self.concepts.len(), 0.0);
        let mut touched: Vec<u32> = Vec::new();
        for &(g, w) in &query {
            let w = w / norm * self.idf[g];
            for &n in &self.postings[self.offsets[g] as usize..self.offsets[g + 1] as usize] {
                let s = &mut scores[n as usize];
                if *s == 0.0 {
                    touched.push(n);
                }
                *s += w;
            }
        }
        let mut best: Option<(u32, f32)> = None;
        for &n in &touched {
            let s = std::mem::take(&mut scores[n as usize]) / self.norms[n as usize];
            if best.is_none_or(|(b, bs)| s > bs || (s == bs && n < b)) && keep(self.concepts[n as usize]) {
                best = Some((n, s));
            }
        }
        // a cosine of identical vectors may round to just above 1
        best.map(|(n, s)| (self.concepts[n as usize], s.min(1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cosines pinned to scikit-learn's (`tests/fixtures/trigram_golden.py`).
    #[test]
    fn cosines_are_scikit_learns_char_wb_tfidf() {
        let names: Vec<(String, u32)> = ["tuberculosi", "tuberculosi meningeal", "obesity", "ischemia", "obese"]
            .iter()
            .zip(0..)
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let index = NameIndex::build(&names);
        for (query, concept, golden) in [("tuberculou", 0, 0.852803), ("ischemic", 3, 0.866025), ("meningeal tuberculosi", 1, 1.0)] {
            let (c, s) = index.nearest(query, |_| true).expect("a name");
            assert_eq!(c, concept, "{query}");
            assert!((s - golden).abs() < 1e-5, "{query}: {s} against {golden}");
        }
        assert_eq!(index.nearest("obese", |c| c != 4).map(|x| x.0), Some(2), "the next one when filtered");
        // the same words in another order: a cosine of 1, never rounded above it
        let names = [("adenosine cyclic monophosphate".to_owned(), 0), ("adenosine monophosphate".to_owned(), 1)];
        let s = NameIndex::build(&names).nearest("cyclic adenosine monophosphate", |_| true).map(|x| x.1);
        assert!(s.is_some_and(|s| (0.9999..=1.0).contains(&s)), "{s:?}");
        assert_eq!(index.nearest("zzz", |_| true), None, "no trigram in common");
    }
}
