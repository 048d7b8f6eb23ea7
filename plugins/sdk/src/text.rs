//! Character offsets: Rust indexes strings by bytes, the contract counts characters.

use crate::Span;

/// Maps byte offsets of one text to the character offsets that spans use.
pub struct CharOffsets {
    /// `starts[i]` is the byte offset of character `i`; the last entry is the text's length.
    starts: Vec<u32>,
    ascii: bool,
}

impl CharOffsets {
    /// Indexes `text` (free for ASCII text).
    pub fn new(text: &str) -> Self {
        if text.is_ascii() {
            return Self { starts: vec![text.len() as u32], ascii: true };
        }
        let mut starts: Vec<u32> = text.char_indices().map(|(b, _)| b as u32).collect();
        starts.push(text.len() as u32);
        Self { starts, ascii: false }
    }

    /// The character offset of a byte offset that is on a character boundary.
    pub fn char_at(&self, byte: usize) -> u32 {
        if self.ascii {
            return byte as u32;
        }
        match self.starts.binary_search(&(byte as u32)) {
            Ok(i) | Err(i) => i as u32,
        }
    }

    /// The span of the byte range `[start, end)`.
    pub fn span(&self, start: usize, end: usize) -> Span {
        Span { start: self.char_at(start), end: self.char_at(end) }
    }

    /// The byte offset of character `i`.
    pub fn byte_at(&self, ch: u32) -> usize {
        if self.ascii {
            return ch as usize;
        }
        self.starts.get(ch as usize).copied().unwrap_or(*self.starts.last().unwrap_or(&0)) as usize
    }
}
