//! Open-addressing hash tables for the matcher's per-word lookups (words to ids, trie edges):
//! one linear probe loop over 8-byte slots, always inlined into the matcher's loop. Inside
//! WebAssembly a call costs the caller its registers (Wasm calls save none) and an epoch
//! check, the standard map reaches its hasher through calls the compiler keeps, and its
//! probe groups are four bytes wide there.

use crate::word::{load, load_short, same};

/// FxHash's multiplier; the slot is taken from the product's high bits, which depend on
/// every bit of the input.
const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The smallest table: 16 slots.
const MIN_BITS: u32 = 4;

#[inline(always)]
fn mix(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(K)
}

/// The hash of a word: eight-byte chunks, the tail zero-extended, then the length. Words of
/// up to sixteen bytes (nearly all) take no loop.
#[inline(always)]
fn hash_bytes(b: &[u8]) -> u64 {
    let n = b.len();
    let h = if n <= 8 {
        mix(0, load_short(b))
    } else if n <= 16 {
        mix(mix(0, load::<8>(b, 0)), load_short(&b[8..]))
    } else {
        let mut h = 0;
        let mut chunks = b.chunks_exact(8);
        for chunk in &mut chunks {
            h = mix(h, load::<8>(chunk, 0));
        }
        mix(h, load_short(chunks.remainder()))
    };
    mix(h, n as u64)
}

/// The number of slots (as a power of two) for `len` words, at most half full.
fn bits_for(len: usize) -> u32 {
    (usize::BITS - (len.max(1) * 2 - 1).leading_zeros()).max(MIN_BITS)
}

/// One stored word: its bytes in the arena and its value.
#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    value: u32,
}

/// Words to `u32` values. The words are kept once, back to back, in one arena.
pub struct WordTable {
    /// `tag << 32 | (entry index + 1)`, where the tag is the high 32 bits of the word's hash;
    /// 0 is an empty slot. A probe compares bytes only when the tags agree.
    slots: Vec<u64>,
    bits: u32,
    entries: Vec<Entry>,
    arena: String,
}

impl Default for WordTable {
    fn default() -> Self {
        Self { slots: vec![0; 1 << MIN_BITS], bits: MIN_BITS, entries: Vec::new(), arena: String::new() }
    }
}

impl WordTable {
    /// The number of words.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline(always)]
    fn word(&self, e: Entry) -> &str {
        &self.arena[e.start as usize..(e.start + e.len) as usize]
    }

    /// The slot where `word` is, or the empty slot where it would go.
    #[inline(always)]
    fn probe(&self, word: &str, h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let tag = h >> 32 << 32;
        let mut i = (h >> (64 - self.bits)) as usize;
        loop {
            let s = self.slots[i];
            if s == 0 || (s & !0xffff_ffff == tag && same(self.word(self.entries[(s as u32 - 1) as usize]).as_bytes(), word.as_bytes())) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The value of `word`.
    #[inline(always)]
    pub fn get(&self, word: &str) -> Option<u32> {
        let s = self.slots[self.probe(word, hash_bytes(word.as_bytes()))];
        (s != 0).then(|| self.entries[(s as u32 - 1) as usize].value)
    }

    /// The value of `word`, inserting `value` first if the word is new.
    pub fn get_or_insert(&mut self, word: &str, value: u32) -> u32 {
        let h = hash_bytes(word.as_bytes());
        let i = self.probe(word, h);
        if self.slots[i] != 0 {
            return self.entries[(self.slots[i] as u32 - 1) as usize].value;
        }
        let start = u32::try_from(self.arena.len()).expect("word arena under 4 GiB");
        self.arena.push_str(word);
        self.entries.push(Entry { start, len: word.len() as u32, value });
        self.slots[i] = h >> 32 << 32 | self.entries.len() as u64;
        if bits_for(self.entries.len()) > self.bits {
            self.rehash();
        }
        value
    }

    fn rehash(&mut self) {
        self.bits = bits_for(self.entries.len());
        self.slots = vec![0; 1 << self.bits];
        let mask = self.slots.len() - 1;
        for (n, &e) in self.entries.iter().enumerate() {
            let h = hash_bytes(self.word(e).as_bytes());
            let mut i = (h >> (64 - self.bits)) as usize;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = h >> 32 << 32 | (n as u64 + 1);
        }
    }

    /// Every word and its value, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.entries.iter().map(|&e| (self.word(e), e.value))
    }
}

/// No edge in a slot of [`EdgeTable`] (no node is `u32::MAX`).
const NO_EDGE: u64 = u64::MAX;

/// The trie's edges: `(node, word)` to the next node, keyed by `node << 32 | word`.
pub struct EdgeTable {
    keys: Vec<u64>,
    values: Vec<u32>,
    bits: u32,
    len: usize,
}

impl Default for EdgeTable {
    fn default() -> Self {
        Self { keys: vec![NO_EDGE; 1 << MIN_BITS], values: vec![0; 1 << MIN_BITS], bits: MIN_BITS, len: 0 }
    }
}

impl EdgeTable {
    /// The slot where `key` is, or the empty slot where it would go.
    #[inline(always)]
    fn probe(&self, key: u64) -> usize {
        let mask = self.keys.len() - 1;
        let mut i = (key.wrapping_mul(K) >> (64 - self.bits)) as usize;
        loop {
            let k = self.keys[i];
            if k == key || k == NO_EDGE {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The node the edge `word` leads to from `node`.
    #[inline(always)]
    pub fn get(&self, node: u32, word: u32) -> Option<u32> {
        let i = self.probe(u64::from(node) << 32 | u64::from(word));
        (self.keys[i] != NO_EDGE).then(|| self.values[i])
    }

    /// The node of the edge, inserting `value` first if the edge is new.
    pub fn get_or_insert(&mut self, node: u32, word: u32, value: u32) -> u32 {
        let key = u64::from(node) << 32 | u64::from(word);
        let i = self.probe(key);
        if self.keys[i] == key {
            return self.values[i];
        }
        (self.keys[i], self.values[i]) = (key, value);
        self.len += 1;
        if bits_for(self.len) > self.bits {
            let old = std::mem::replace(self, Self::with_bits(bits_for(self.len)));
            for (k, v) in old.keys.into_iter().zip(old.values).filter(|&(k, _)| k != NO_EDGE) {
                let j = self.probe(k);
                (self.keys[j], self.values[j]) = (k, v);
            }
            self.len = old.len;
        }
        value
    }

    fn with_bits(bits: u32) -> Self {
        Self { keys: vec![NO_EDGE; 1 << bits], values: vec![0; 1 << bits], bits, len: 0 }
    }

    /// Every edge: `(node, word, next node)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.keys.iter().zip(&self.values).filter(|&(&k, _)| k != NO_EDGE).map(|(&k, &v)| ((k >> 32) as u32, k as u32, v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Words of every length up to 40, others that differ from them in one byte at every
    /// position, and non-ASCII ones.
    fn words() -> Vec<String> {
        let mut out = Vec::new();
        for n in 0..40 {
            let base: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            out.push(base.clone());
            for at in 0..n {
                let mut w = base.clone().into_bytes();
                w[at] = b'z';
                out.push(String::from_utf8(w).expect("ASCII"));
            }
        }
        out.extend(["ärztekammer", "sjögren", "µg", "β-blocker"].map(String::from));
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn words_are_found_by_content_through_growth() {
        let words = words();
        let (stored, absent) = words.split_at(words.len() / 2);
        let mut table = WordTable::default();
        let mut want = HashMap::new();
        for (i, w) in stored.iter().enumerate() {
            assert_eq!(table.get_or_insert(w, i as u32), i as u32);
            want.insert(w.as_str(), i as u32);
            // every word so far is still found after each growth
            if i.is_power_of_two() {
                assert!(want.iter().all(|(w, &v)| table.get(w) == Some(v)));
            }
        }
        for (i, w) in stored.iter().enumerate() {
            assert_eq!(table.get(w), Some(i as u32), "{w}");
            assert_eq!(table.get_or_insert(w, 9999), i as u32, "a second insert keeps the first value");
        }
        for w in absent {
            assert_eq!(table.get(w), None, "{w}");
        }
        assert_eq!(table.len(), stored.len());
        let listed: Vec<(&str, u32)> = table.iter().collect();
        assert_eq!(listed, stored.iter().enumerate().map(|(i, w)| (w.as_str(), i as u32)).collect::<Vec<_>>());
    }

    #[test]
    fn edges_are_found_through_growth() {
        let mut table = EdgeTable::default();
        let edges: Vec<(u32, u32)> = (0..3000u32).map(|i| (i / 7, i.wrapping_mul(2_654_435_761) % 5000)).collect();
        for (n, &(node, word)) in edges.iter().enumerate() {
            assert_eq!(table.get_or_insert(node, word, n as u32), n as u32);
        }
        for (n, &(node, word)) in edges.iter().enumerate() {
            assert_eq!(table.get(node, word), Some(n as u32));
            assert_eq!(table.get_or_insert(node, word, 0), n as u32, "a second insert keeps the first value");
        }
        assert_eq!(table.get(1, 1), None);
        assert_eq!(table.get(u32::MAX - 1, 3), None);
        let mut listed: Vec<(u32, u32, u32)> = table.iter().collect();
        listed.sort_by_key(|e| e.2);
        assert_eq!(listed, edges.iter().enumerate().map(|(n, &(a, b))| (a, b, n as u32)).collect::<Vec<_>>());
    }

    #[test]
    fn tables_stay_at_most_half_full() {
        for len in 1..200 {
            let slots = 1usize << bits_for(len);
            assert!(slots >= 2 * len && slots >= 16, "{len} entries in {slots} slots");
        }
    }
}
