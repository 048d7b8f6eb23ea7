//! Longest-match concept matching over a vocabulary table, insensitive to case, plurals,
//! hyphens, punctuation and British/American spelling, with one-edit matching of long words.

use std::cell::RefCell;

use crate::fuzzy::DeletionIndex;
use crate::nearest::NameIndex;
use crate::table::{EdgeTable, WordTable};
use crate::token::{Token, ascii_lowercase_into, is_caps_acronym_s, normalize_lowercase, normalize_token_into, normalize_word, tokens};
use crate::vocab::ConceptRow;
use crate::word::{load, load_short};

/// One match of a concept in a text, in byte and character offsets of that text.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
    /// Character offset of the first character.
    pub char_start: u32,
    /// Character offset one past the last character.
    pub char_end: u32,
    /// Index of the concept in [`Matcher::concept`].
    pub concept: u32,
    /// 1.0 for an exact (normalized) match, lower when a word matched with one edit.
    pub score: f32,
}

/// How the matcher treats approximate matches.
#[derive(Debug, Clone)]
pub struct Options {
    /// Words at least this long (in characters) may match a vocabulary word one edit away.
    pub fuzzy_min_len: usize,
    /// The score of a match that used a one-edit word.
    pub fuzzy_score: f32,
    /// Single-word names shorter than this are not matched through the normalized trie (too
    /// ambiguous once lowercased).
    pub min_single_word_len: usize,
    /// Whether those short names that have a capital (`Na`, `K`, `DA`) are matched as
    /// written, case and all.
    pub short_names: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { fuzzy_min_len: 8, fuzzy_score: 0.85, min_single_word_len: 3, short_names: false }
    }
}

/// No trie node.
const NONE: u32 = u32::MAX;

/// A compiled vocabulary: a trie over normalized words.
pub struct Matcher {
    ids: Vec<String>,
    names: Vec<String>,
    words: WordTable,
    edges: EdgeTable,
    /// The trie node each word leads to from the root (`NONE` if no name starts with it): the
    /// first step from every word of a text is an index, not a second hash lookup.
    root: Vec<u32>,
    terminal: Vec<Option<u32>>,
    /// Names matched only as written, case and all: one-word acronyms (`WHO`, `AIDS`: "who"
    /// and "aids" are other words), and with `short_names` the names too short for the trie
    /// (`Na`, `K`, `DA`).
    exact: WordTable,
    fuzzy: DeletionIndex,
    /// One-edit lookups done so far: the word id, or `NONE`.
    fuzzy_cache: RefCell<WordTable>,
    /// Buffers [`Matcher::find`] reuses from text to text (inside WebAssembly each growth of
    /// a fresh buffer is an allocation and a copy out of the guest).
    scratch: RefCell<Scratch>,
    /// The trigram index of the trie's names, built by the first [`Matcher::nearest`].
    nearest: std::cell::OnceCell<NameIndex>,
    /// The trie nodes only a spelling variant ends at ([`Matcher::insert_with_variants`]): no
    /// names of their own for [`Matcher::nearest`].
    variants: std::collections::HashSet<u32, FxBuild>,
    options: Options,
}

/// See [`Matcher::scratch`].
#[derive(Default)]
struct Scratch {
    lower: String,
    word: String,
    words: Vec<(Token, Option<(u32, bool)>)>,
    /// The names ending along one walk of the trie: (last word, concept, fuzzy).
    ends: Vec<(usize, u32, bool)>,
}

impl Matcher {
    /// Compiles concept rows (preferred names first, so they win over synonyms).
    pub fn new(rows: &[ConceptRow], options: Options) -> Self {
        let mut m = Matcher {
            ids: Vec::with_capacity(rows.len()),
            names: Vec::with_capacity(rows.len()),
            words: WordTable::default(),
            edges: EdgeTable::default(),
            root: Vec::new(),
            terminal: vec![None],
            exact: WordTable::default(),
            fuzzy: DeletionIndex::default(),
            fuzzy_cache: RefCell::new(WordTable::default()),
            scratch: RefCell::new(Scratch::default()),
            nearest: std::cell::OnceCell::new(),
            variants: Default::default(),
            options,
        };
        for row in rows {
            m.ids.push(row.id.clone());
            m.names.push(row.preferred.clone());
        }
        for (i, row) in rows.iter().enumerate() {
            m.insert_with_variants(&row.preferred, i as u32);
        }
        for (i, row) in rows.iter().enumerate() {
            for syn in &row.synonyms {
                m.insert_with_variants(syn, i as u32);
            }
        }
        let long = m.words.iter().filter(|(w, _)| w.chars().count() >= m.options.fuzzy_min_len);
        m.fuzzy = DeletionIndex::build(long);
        m.root = vec![NONE; m.words.len()];
        for (node, word, next) in m.edges.iter() {
            if node == 0 {
                m.root[word as usize] = next;
            }
        }
        m
    }

    /// The number of concepts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A concept's id and preferred name.
    pub fn concept(&self, index: u32) -> (&str, &str) {
        let i = index as usize;
        (self.ids[i].as_str(), self.names[i].as_str())
    }

    /// The concept whose name is nearest the whole of `text` by character trigrams (see
    /// the `nearest` module), among those `keep` accepts, with the cosine similarity. The first call
    /// indexes every name of the trie (not the names matched only as written).
    pub fn nearest(&self, text: &str, keep: impl Fn(u32) -> bool) -> Option<(u32, f32)> {
        self.nearest.get_or_init(|| NameIndex::build(&self.trie_names())).nearest(text, keep)
    }

    /// Every name of the trie, its normalized words joined by a space, with its concept.
    fn trie_names(&self) -> Vec<(String, u32)> {
        let mut words = vec![""; self.words.len()];
        for (w, id) in self.words.iter() {
            words[id as usize] = w;
        }
        let mut edges: Vec<(u32, u32, u32)> = self.edges.iter().collect();
        edges.sort_unstable();
        let mut names = Vec::new();
        // depth first from the root: (node, the word that led to it, its depth)
        let mut stack: Vec<(u32, &str, usize)> = vec![(0, "", 0)];
        let mut path: Vec<&str> = Vec::new();
        while let Some((node, word, depth)) = stack.pop() {
            if node != 0 {
                path.truncate(depth - 1);
                path.push(word);
                if let Some(c) = self.terminal[node as usize].filter(|_| !self.variants.contains(&node)) {
                    names.push((path.join(" "), c));
                }
            }
            let from = edges.partition_point(|e| e.0 < node);
            for &(_, w, next) in edges[from..].iter().take_while(|e| e.0 == node) {
                stack.push((next, words[w as usize], depth + 1));
            }
        }
        names
    }

    /// A name, and its other spellings: a code name's ("KF 17837" and "KF17837") and a
    /// British `sulph` for `sulf` ("sulphate"), as names of their own (no cost per word of
    /// text).
    fn insert_with_variants(&mut self, name: &str, concept: u32) {
        if let Some((node, _)) = self.insert(name, concept) {
            self.variants.remove(&node);
        }
        for other in [code_name_variant(name), sulph_variant(name)].into_iter().flatten() {
            if let Some((node, true)) = self.insert(&other, concept) {
                self.variants.insert(node);
            }
        }
    }

    /// Adds a name: the trie node it ends at, and whether it was no name's end before (none
    /// for a name kept as written).
    fn insert(&mut self, name: &str, concept: u32) -> Option<(u32, bool)> {
        let toks: Vec<String> = tokens(name).map(|t| normalize_word(&name[t.start..t.end])).collect();
        let written = name.trim();
        let one_word = toks.len() == 1 && written.len() == toks[0].len();
        if one_word && is_acronym(written) && (written.len() >= self.options.min_single_word_len || self.options.short_names) {
            self.exact.get_or_insert(written, concept);
            return None;
        }
        if toks.len() == 1 && toks[0].chars().count() < self.options.min_single_word_len {
            if self.options.short_names && one_word && written.chars().any(char::is_uppercase) {
                self.exact.get_or_insert(written, concept);
            }
            return None;
        }
        if toks.is_empty() {
            return None;
        }
        let mut node = 0u32;
        for t in toks {
            let next_word = self.words.len() as u32;
            let word = self.words.get_or_insert(&t, next_word);
            let next_node = self.terminal.len() as u32;
            node = self.edges.get_or_insert(node, word, next_node);
            if node == next_node {
                self.terminal.push(None);
            }
        }
        let slot = &mut self.terminal[node as usize];
        let new = slot.is_none();
        if new {
            *slot = Some(concept);
        }
        Some((node, new))
    }

    fn word_id(&self, word: &str) -> Option<(u32, bool)> {
        if let Some(id) = self.words.get(word) {
            return Some((id, false));
        }
        if word.len() < self.options.fuzzy_min_len || (!word.is_ascii() && word.chars().count() < self.options.fuzzy_min_len) {
            return None;
        }
        let cached = self.fuzzy_cache.borrow().get(word);
        let hit = cached.unwrap_or_else(|| {
            let hit = self.fuzzy.lookup(word).unwrap_or(NONE);
            self.fuzzy_cache.borrow_mut().get_or_insert(word, hit)
        });
        (hit != NONE).then_some((hit, true))
    }

    /// All longest, non-overlapping matches in `text`, left to right.
    pub fn find(&self, text: &str) -> Vec<Match> {
        self.find_where(text, |_, _| true)
    }

    /// All longest, non-overlapping matches in `text` that `keep` accepts (given the matched
    /// text and the concept), left to right: where it refuses the longest name at a word, the
    /// next longer one it accepts is taken ("creatine" of "creatine kinase" when the enzyme
    /// is refused).
    pub fn find_where(&self, text: &str, keep: impl Fn(&str, u32) -> bool) -> Vec<Match> {
        let mut scratch = self.scratch.borrow_mut();
        let Scratch { lower, word: buf, words, ends } = &mut *scratch;
        // The text's ASCII letters are lowercased once, whole; most of its words (the ASCII
        // ones: as many bytes as characters) are then looked up as slices of it, without a
        // copy each.
        ascii_lowercase_into(text, lower);
        words.clear();
        for t in tokens(text) {
            let word = if t.end - t.start == (t.char_end - t.char_start) as usize {
                // an acronym ending in S keeps it (only the last byte is looked at for most words)
                if text.as_bytes()[t.end - 1] == b'S' && is_caps_acronym_s(&text[t.start..t.end]) {
                    &lower[t.start..t.end]
                } else {
                    normalize_lowercase(&lower[t.start..t.end], buf)
                }
            } else {
                normalize_token_into(&text[t.start..t.end], buf);
                buf.as_str()
            };
            words.push((t, self.word_id(word)));
        }
        let mut out: Vec<Match> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let mut node = 0u32;
            let mut fuzzy = false;
            ends.clear();
            for (j, (_, word)) in words.iter().enumerate().skip(i) {
                let Some((w, f)) = *word else { break };
                let next = if node == 0 { self.root[w as usize] } else { self.edges.get(node, w).unwrap_or(NONE) };
                if next == NONE {
                    break;
                }
                node = next;
                fuzzy |= f;
                if let Some(c) = self.terminal[node as usize] {
                    ends.push((j, c, fuzzy));
                }
            }
            let start = words[i].0.start;
            let best = ends.iter().rev().find(|&&(j, c, _)| keep(&text[start..words[j].0.end], c)).copied();
            match best {
                Some((j, concept, fuzzy)) => {
                    let score = if fuzzy { self.options.fuzzy_score } else { 1.0 };
                    let composite = if j > i { self.composite(lower, words, i, j) } else { None };
                    let composite = composite.filter(|&(c, k)| keep(&text[words[k].0.start..words[j].0.end], c));
                    let from = match composite {
                        // "breast and ovarian cancer": both concepts over the whole phrase; a
                        // match of "breast" alone gives way
                        Some((other, k)) => {
                            if out.last().is_some_and(|m| m.end > words[k].0.start) {
                                out.pop();
                            }
                            let (a, b) = (&words[k].0, &words[j].0);
                            out.push(Match {
                                start: a.start,
                                end: b.end,
                                char_start: a.char_start,
                                char_end: b.char_end,
                                concept: other,
                                score,
                            });
                            k
                        }
                        None => i,
                    };
                    out.push(Match {
                        start: words[from].0.start,
                        end: words[j].0.end,
                        char_start: words[from].0.char_start,
                        char_end: words[j].0.char_end,
                        concept,
                        score,
                    });
                    i = j + 1;
                }
                None => i += 1,
            }
        }
        if self.exact.len() > 0 {
            self.find_exact(text, words, &mut out, &keep);
        }
        out
    }

    /// The concept of a coordinated name before the match of words `i..=j`: in "breast and
    /// ovarian cancer" (words `k`, `k + 1`, then the match), the name "breast cancer" made of
    /// word `k` and the match's words after its first; with the index `k`.
    fn composite(&self, lower: &str, words: &[(Token, Option<(u32, bool)>)], i: usize, j: usize) -> Option<(u32, usize)> {
        let k = i.checked_sub(2)?;
        let (and, _) = &words[k + 1];
        if !matches!(&lower[and.start..and.end], "and" | "or") {
            return None;
        }
        let (first, _) = words[k].1?;
        let mut node = self.root[first as usize];
        for (_, w) in &words[i + 1..=j] {
            let (w, _) = (*w)?;
            if node == NONE {
                return None;
            }
            node = self.edges.get(node, w).unwrap_or(NONE);
        }
        let concept = self.terminal.get(node as usize).copied().flatten()?;
        Some((concept, k))
    }

    /// Adds the matches of the short names kept as written ([`Matcher::exact`]) among the
    /// words no match covers.
    fn find_exact(&self, text: &str, words: &[(Token, Option<(u32, bool)>)], out: &mut Vec<Match>, keep: &impl Fn(&str, u32) -> bool) {
        let before = out.len();
        let mut next = 0;
        let bytes = text.as_bytes();
        for (t, _) in words {
            // every name kept as written starts with a capital
            if !bytes[t.start].is_ascii_uppercase() {
                continue;
            }
            while next < before && out[next].end <= t.start {
                next += 1;
            }
            if next < before && out[next].start < t.end {
                continue;
            }
            let word = &text[t.start..t.end];
            // an acronym's plural: "CABGs"
            let singular = word.strip_suffix('s').filter(|w| is_acronym(w));
            let concept = self.exact.get(word).or_else(|| singular.and_then(|w| self.exact.get(w)));
            if let Some(concept) = concept.filter(|&c| keep(word, c)) {
                out.push(Match { start: t.start, end: t.end, char_start: t.char_start, char_end: t.char_end, concept, score: 1.0 });
            }
        }
        if out.len() > before {
            out.sort_by_key(|m| m.start);
        }
    }
}

/// A code name's other spelling: a code of one to four letters (a capital among them) and
/// two or more digits, or of two letters or more and a digit, is written with a space or
/// hyphen between them or none ("KF 17837", "KF-17837", "KF17837"; "Ro 15-1788", "Ro15-1788";
/// "PGE2", "PGE(2)"): the name with its first such code
/// written the other way (joined if it was apart, a space between if it was joined).
pub fn code_name_variant(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let letters = b[i..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
        if !word_start || letters == 0 {
            i += letters.max(1);
            continue;
        }
        let end = i + letters;
        let apart = matches!(b.get(end), Some(b' ' | b'-'));
        let from = end + usize::from(apart);
        let digits = b[from.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        let code = letters <= 4 && b[i..end].iter().any(u8::is_ascii_uppercase) && (digits >= 2 || (digits == 1 && letters >= 2));
        if code && !b.get(from + digits).is_some_and(u8::is_ascii_alphabetic) {
            let sep = if apart { "" } else { " " };
            return Some(format!("{}{sep}{}", &name[..end], &name[from..]));
        }
        i = end;
    }
    None
}

/// A name with `sulf` spelled the British way, `sulph` ("Sulfates", "Sulphates"; the text's
/// "sulphate" then matches it).
pub fn sulph_variant(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let mut at = lower.match_indices("sulf").map(|(i, _)| i).peekable();
    at.peek()?;
    let mut out = String::with_capacity(name.len() + 2);
    let mut from = 0;
    for i in at {
        out.push_str(&name[from..i + 3]);
        let f_upper = name.as_bytes()[i + 3] == b'F';
        out.push_str(if f_upper { "PH" } else { "ph" });
        from = i + 4;
    }
    out.push_str(&name[from..]);
    Some(out)
}

/// Whether a word is an acronym: two to eight ASCII capitals and digits, a capital first.
fn is_acronym(word: &str) -> bool {
    let b = word.as_bytes();
    (2..=8).contains(&b.len()) && b[0].is_ascii_uppercase() && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// FxHash (rustc's hasher): fast for the short keys of the trie.
#[derive(Default, Clone, Copy)]
pub struct FxBuild;

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

/// The hasher of [`FxBuild`].
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes at a time, then the tail zero-extended. Words of up to sixteen bytes
        // (nearly all) take no loop: inside WebAssembly every loop back-edge pays an epoch
        // check, and a variable-length copy of the tail is a `memcpy` call out of the guest.
        let n = bytes.len();
        if n <= 8 {
            if n > 0 {
                self.add(load_short(bytes));
            }
            return;
        }
        if n <= 16 {
            self.add(load::<8>(bytes, 0));
            self.add(load_short(&bytes[8..]));
            return;
        }
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(load::<8>(chunk, 0));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.add(load_short(tail));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::parse_concepts;

    fn matcher(tsv: &str) -> Matcher {
        Matcher::new(&parse_concepts(tsv).expect("valid"), Options::default())
    }

    #[test]
    fn longest_match_wins_and_variants_fold() {
        let m = matcher(
            "D1\tMyocardial Infarction\tHeart Attack|Infarction, Myocardial\n\
             D2\tInfarction\t\n\
             D3\tTumor Necrosis Factor-alpha\tTNF-alpha\n\
             D4\tEsophagus\t\n\
             D5\tHemorrhage\t\n",
        );
        let text = "Acute myocardial infarctions, heart-attacks and TNF alpha; oesophagus haemorrhage.";
        let found: Vec<(&str, &str)> = m.find(text).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(
            found,
            vec![
                ("myocardial infarctions", "D1"),
                ("heart-attacks", "D1"),
                ("TNF alpha", "D3"),
                ("oesophagus", "D4"),
                ("haemorrhage", "D5"),
            ]
        );
    }

    #[test]
    fn a_text_with_other_characters_matches_as_an_ascii_one() {
        let m = matcher("D1\tMyocardial Infarction\t\nD2\tAnemia\t\nD3\tÄrztekammer\t\n");
        let text = "MYOCARDIAL infarction\u{2009}± anaemias; \u{e4}rztekammer, Anemia≥2.";
        let found: Vec<(&str, &str)> = m.find(text).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(found, vec![("MYOCARDIAL infarction", "D1"), ("anaemias", "D2"), ("\u{e4}rztekammer", "D3"), ("Anemia", "D2")]);
        let chars: Vec<(u32, u32)> = m.find(text).iter().map(|x| (x.char_start, x.char_end)).collect();
        assert_eq!(chars, [(0, 21), (24, 32), (34, 45), (47, 53)]);
    }

    #[test]
    fn the_hash_is_the_chunked_one() {
        use std::hash::Hasher;
        // The reference: eight-byte little-endian chunks, then the tail zero-extended.
        fn reference(bytes: &[u8]) -> u64 {
            let mut h = FxHasher(0);
            for chunk in bytes.chunks(8) {
                h.add(chunk.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
            }
            h.finish()
        }
        let text = b"pneumonoultramicroscopicsilicovolcanoconiosis";
        for n in 0..text.len() {
            let mut h = FxHasher(0);
            h.write(&text[..n]);
            assert_eq!(h.finish(), reference(&text[..n]), "{n} bytes");
        }
    }

    /// A name shorter than a word may be (`Na`, `K`) matches only as written.
    #[test]
    fn short_names_match_only_as_written() {
        let tsv = "D012964\tNa\t\nD011188\tK\t\nD1\tno\t\nD012965\tSodium Chloride\t\n";
        assert_eq!(matcher(tsv).find("Na and K").len(), 0, "off by default");
        let m = Matcher::new(&parse_concepts(tsv).expect("valid"), Options { short_names: true, ..Options::default() });
        let text = "Na and K (not na, k or no); Sodium Chloride Na.";
        let found: Vec<(&str, &str)> = m.find(text).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(found, [("Na", "D012964"), ("K", "D011188"), ("Sodium Chloride", "D012965"), ("Na", "D012964")]);
    }

    /// A name with `sulf` matches the British `sulph` too.
    #[test]
    fn sulf_names_match_sulph() {
        assert_eq!(sulph_variant("Pregnenolone Sulfate, disulfiram").as_deref(), Some("Pregnenolone Sulphate, disulphiram"));
        assert_eq!(sulph_variant("SULFUR").as_deref(), Some("SULPHUR"));
        assert_eq!(sulph_variant("Sodium"), None);
        let m = matcher("C1\tpregnenolone sulfate\t\n");
        assert_eq!(m.find("Pregnenolone sulphate and pregnenolone sulfates.").len(), 2);
    }

    /// A drug code matches written apart, hyphenated or joined, whichever way its name is.
    #[test]
    fn code_names_match_apart_or_joined() {
        assert_eq!(code_name_variant("KF 17837").as_deref(), Some("KF17837"));
        assert_eq!(code_name_variant("Ro15-1788").as_deref(), Some("Ro 15-1788"));
        assert_eq!(code_name_variant("CGS-21680 hydrochloride").as_deref(), Some("CGS21680 hydrochloride"));
        assert_eq!(code_name_variant("PGE2").as_deref(), Some("PGE 2"));
        for none in ["T 3", "Sodium 12", "ab 123", "5-HT1A", "PGE2alpha"] {
            assert_eq!(code_name_variant(none), None, "{none}");
        }
        let m = matcher("C1\tKF 17837\t\nD2\tFlumazenil\tRo15-1788\nD3\tDinoprostone\tPGE2\n");
        let text = "KF17837, KF-17837 and Ro 15-1788; PGE(2).";
        let found: Vec<(&str, &str)> = m.find(text).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(found, [("KF17837", "C1"), ("KF-17837", "C1"), ("Ro 15-1788", "D2"), ("PGE(2", "D3")]);
    }

    /// A coordination of two names sharing their head ("breast and ovarian cancer") is both,
    /// over the whole phrase.
    #[test]
    fn a_coordinated_phrase_is_both_names() {
        let m = matcher("D001943\tBreast Neoplasms\tBreast Cancer\nD010051\tOvarian Neoplasms\tOvarian Cancer\nD001940\tBreast\t\n");
        let text = "Breast and ovarian cancer; breast or lung cancer; the breast.";
        let found: Vec<(&str, &str)> = m.find(text).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect();
        assert_eq!(
            found,
            [
                ("Breast and ovarian cancer", "D001943"),
                ("Breast and ovarian cancer", "D010051"),
                ("breast", "D001940"),
                ("breast", "D001940")
            ]
        );
    }

    /// A one-word acronym matches only as written: "ANDS" is no "and", "WHO" no "who"; its
    /// plural ("CABGs") is it.
    #[test]
    fn acronyms_match_only_as_written() {
        let m = matcher("C1\tnaphthalene disulfonate\tANDS\nD1\tCoronary Artery Bypass\tCABG\nD2\tWorld Health Organization\tWHO\n");
        let text = "ANDS and ands, CABGs, who said the WHO Who?";
        let found: Vec<&str> = m.find(text).iter().map(|x| &text[x.start..x.end]).collect();
        assert_eq!(found, ["ANDS", "CABGs", "WHO"]);
    }

    /// A mention no name matches word for word finds the name nearest it; `keep` narrows
    /// the concepts it may be.
    #[test]
    fn a_mention_no_name_matches_finds_its_nearest_name() {
        let m = matcher("D1\tTuberculosis\t\nD2\tTuberculosis, Meningeal\tMeningeal Tuberculosis\nD3\tObesity\t\nD4\tObese\t\n");
        assert!(m.find("tuberculous").is_empty());
        let (c, s) = m.nearest("tuberculous", |_| true).expect("a name");
        assert_eq!((m.concept(c).0, s > 0.5 && s < 1.0), ("D1", true), "{s}");
        assert_eq!(m.nearest("obese", |_| true).map(|x| m.concept(x.0).0), Some("D4"));
        assert_eq!(m.nearest("obese", |c| m.concept(c).0 != "D4").map(|x| m.concept(x.0).0), Some("D3"));
        assert_eq!(m.nearest("meningeal tuberculosis", |_| true).map(|x| m.concept(x.0).0), Some("D2"));
    }

    /// A name refused gives way to the longest shorter one at its first word.
    #[test]
    fn a_refused_name_gives_way_to_the_names_inside_it() {
        let m = matcher("D1\tCreatine Kinase\t\nD2\tCreatine\t\nD3\tKinase\t\nD4\tBreast Cancer\t\nD5\tOvarian Cancer\t\n");
        let text = "creatine kinase; breast and ovarian cancer";
        let found = |keep: &dyn Fn(&str, u32) -> bool| -> Vec<(&str, &str)> {
            m.find_where(text, keep).iter().map(|x| (&text[x.start..x.end], m.concept(x.concept).0)).collect()
        };
        assert_eq!(found(&|_, _| true)[0], ("creatine kinase", "D1"));
        assert_eq!(
            found(&|t, _| t != "creatine kinase"),
            [("creatine", "D2"), ("kinase", "D3"), ("breast and ovarian cancer", "D4"), ("breast and ovarian cancer", "D5")]
        );
        assert_eq!(found(&|_, c| m.concept(c).0 != "D4")[1..], [("ovarian cancer", "D5")]);
    }

    #[test]
    fn one_edit_on_long_words_only() {
        let m = matcher("D1\tPneumothorax\t\nD2\tGout\t\n");
        let hits = m.find("a pneumothorux, not a gaut");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].score, Options::default().fuzzy_score);
        assert_eq!(m.concept(hits[0].concept).0, "D1");
    }
}
