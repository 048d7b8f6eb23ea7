//! Words of a text and their normalized form (lowercase, singular, American spelling).

use crate::word::{HIGH, LANES, load, load_short};

/// A word of a text: a run of letters and digits, in byte and character offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Token {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
    /// Character offset of the first character.
    pub char_start: u32,
    /// Character offset one past the last character.
    pub char_end: u32,
}

/// The words of `text`; hyphens, spaces and punctuation separate words.
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens { text, i: 0, extra: 0 }
}

/// The iterator of [`tokens`]: eight bytes per step (SWAR) over ASCII, a character at a time
/// elsewhere, so a text with a few non-ASCII characters (a thin space, a ±) is read almost
/// as fast as an ASCII one. Its `next` is always inlined into the caller's loop: inside
/// WebAssembly a call per word would cost the matcher's loop its registers (Wasm calls save
/// none) and an epoch check, and every loop back-edge pays one too.
pub struct Tokens<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    i: usize,
    /// UTF-8 continuation bytes before `i`: the character offset is `i - extra`.
    extra: usize,
}

impl Tokens<'_> {
    /// Moves past the characters that are (`alnum`) or are not (`!alnum`) letters or digits.
    #[inline(always)]
    fn skip(&mut self, alnum: bool) {
        let bytes = self.text.as_bytes();
        let mut i = self.i;
        loop {
            if i + 8 <= bytes.len() {
                let x = load::<8>(bytes, i);
                if x & HIGH == 0 {
                    let letters = in_range(x | (0x20 * LANES), b'a', b'z') | in_range(x, b'0', b'9');
                    let stops = if alnum { !letters & HIGH } else { letters };
                    if stops != 0 {
                        i += (stops.trailing_zeros() / 8) as usize;
                        break;
                    }
                    i += 8;
                    continue;
                }
            }
            let Some(&b) = bytes.get(i) else { break };
            if b < 0x80 {
                if b.is_ascii_alphanumeric() != alnum {
                    break;
                }
                i += 1;
            } else {
                let Some(c) = self.text.get(i..).and_then(|rest| rest.chars().next()) else { break };
                if c.is_alphanumeric() != alnum {
                    break;
                }
                i += c.len_utf8();
                self.extra += c.len_utf8() - 1;
            }
        }
        self.i = i;
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    #[inline(always)]
    fn next(&mut self) -> Option<Token> {
        self.skip(false);
        if self.i >= self.text.len() {
            return None;
        }
        let (start, char_start) = (self.i, self.i - self.extra);
        self.skip(true);
        Some(Token { start, end: self.i, char_start: char_start as u32, char_end: (self.i - self.extra) as u32 })
    }
}

/// 0x80 in each byte of `x` that lies in `lo..=hi`; every byte of `x` must be below 0x80
/// (then no sum carries into the next byte).
#[inline]
fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    (x + (0x80 - u64::from(lo)) * LANES) & !(x + (0x7f - u64::from(hi)) * LANES) & HIGH
}

/// The form a word is compared in: lowercase, British spellings folded to American
/// (`ae`/`oe` -> `e`, `-our` -> `-or`), a plural `-ies` -> `-y` and a final `-s` dropped.
pub fn normalize_token(word: &str) -> String {
    let mut w = String::with_capacity(word.len());
    normalize_token_into(word, &mut w);
    w
}

/// Whether a word is an acronym ending in `S` (`ANDS`, `DIDS`): all capitals and digits, at
/// least three. Its `S` is no plural (`ANDS` is not the word "and"), so it is only lowercased.
#[inline(always)]
pub fn is_caps_acronym_s(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 3 && b[b.len() - 1] == b'S' && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A word as the matcher compares it: [`normalize_token`], but an acronym ending in `S`
/// ([`is_caps_acronym_s`]) only lowercased.
pub fn normalize_word(word: &str) -> String {
    if is_caps_acronym_s(word) { word.to_ascii_lowercase() } else { normalize_token(word) }
}

/// A name or a stretch of text as the matcher compares it: its words, each normalized
/// ([`normalize_word`]), joined by one space ("Heart-Attacks" -> "heart attack").
pub fn normalize_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for t in tokens(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&normalize_word(&text[t.start..t.end]));
    }
    out
}

/// [`normalize_token`] into a reused buffer (the matcher's hot path allocates nothing).
#[inline(always)]
pub fn normalize_token_into(word: &str, w: &mut String) {
    w.clear();
    if word.is_ascii() {
        w.push_str(word);
        w.make_ascii_lowercase();
    } else {
        w.extend(word.chars().flat_map(char::to_lowercase));
    }
    if has_british_pair(w.as_bytes()) {
        *w = w.replace("ae", "e").replace("oe", "e");
    }
    match ending(w.as_bytes()) {
        Ending::Keep => {}
        Ending::DropS => {
            w.pop();
        }
        Ending::Replace(cut, with) => {
            w.truncate(w.len() - cut);
            w.push_str(with);
        }
    }
}

/// [`normalize_token`] of a word that is already lowercase: a slice of `lower` itself when
/// normalization only keeps it or drops a final `-s` (most words), else written into `buf`.
/// The matcher lowercases a whole text once and calls this per word, so the common case
/// copies nothing (inside WebAssembly every small `memcpy` is a call out of the guest).
#[inline(always)]
pub fn normalize_lowercase<'a>(lower: &'a str, buf: &'a mut String) -> &'a str {
    if has_british_pair(lower.as_bytes()) {
        normalize_token_into(lower, buf);
        return buf;
    }
    match ending(lower.as_bytes()) {
        Ending::Keep => lower,
        Ending::DropS => &lower[..lower.len() - 1],
        Ending::Replace(cut, with) => {
            buf.clear();
            buf.push_str(&lower[..lower.len() - cut]);
            buf.push_str(with);
            buf
        }
    }
}

/// `text.to_ascii_lowercase()`, eight bytes per step (SWAR) over ASCII: inside
/// WebAssembly every loop back-edge pays an epoch check, and the byte loop of the standard
/// library is not vectorized there.
#[cfg(test)]
fn ascii_lowercase(text: &str) -> String {
    let mut out = String::new();
    ascii_lowercase_into(text, &mut out);
    out
}

/// [`ascii_lowercase`] into a reused buffer.
pub fn ascii_lowercase_into(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    buf.reserve(bytes.len());
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // non-ASCII bytes would carry in `in_range`: leave such a chunk to the byte loop
        if x & HIGH != 0 {
            buf.extend(chunk.iter().map(u8::to_ascii_lowercase));
        } else {
            buf.extend_from_slice(&(x | (in_range(x, b'A', b'Z') >> 2)).to_le_bytes());
        }
    }
    buf.extend(chunks.remainder().iter().map(u8::to_ascii_lowercase));
    // SAFETY: `buf` is `text` with bytes `A`-`Z` replaced by `a`-`z` and every other byte
    // kept: ASCII for ASCII, so it is as valid UTF-8 as `text` (checking it again was a
    // second pass over every text, slow inside WebAssembly).
    *out = unsafe { String::from_utf8_unchecked(buf) };
}

/// A British `ae`/`oe` in a word longer than four bytes. Eight bytes at a time: each window
/// tests the seven pairs that start in it, so words of up to fifteen bytes (nearly all) take
/// no loop, where a two-byte window scan would pay an epoch check per byte inside
/// WebAssembly.
#[inline(always)]
fn has_british_pair(w: &[u8]) -> bool {
    let n = w.len();
    if n <= 4 {
        return false;
    }
    if n <= 8 {
        return british_pairs(load_short(w)) != 0;
    }
    if n <= 15 {
        return british_pairs(load::<8>(w, 0)) | british_pairs(load::<8>(w, n - 8)) != 0;
    }
    let mut i = 0;
    while i + 8 < n {
        if british_pairs(load::<8>(w, i)) != 0 {
            return true;
        }
        i += 7;
    }
    british_pairs(load::<8>(w, n - 8)) != 0
}

/// 0x80 in byte `j` of `x` (bytes little-endian) where bytes `j`, `j + 1` are `ae` or `oe`.
#[inline]
fn british_pairs(x: u64) -> u64 {
    (eq_bytes(x, b'a') | eq_bytes(x, b'o')) & eq_bytes(x >> 8, b'e')
}

/// 0x80 in each byte of `x` equal to `c`, exactly for any byte values (no carries between
/// bytes: bit 7 of `(b & 0x7f) + 0x7f` is set unless the low seven bits are zero).
#[inline]
fn eq_bytes(x: u64, c: u8) -> u64 {
    let v = x ^ (u64::from(c) * LANES);
    let low = 0x7f * LANES;
    !(((v & low) + low) | v | low)
}

/// What normalization does to the end of a lowercase word (spelling already folded).
enum Ending {
    Keep,
    DropS,
    /// Cut this many bytes and append the text.
    Replace(usize, &'static str),
}

/// The rules in order: irregular plurals common in clinical text, `-our(s)` -> `-or`, a
/// plural `-ies` -> `-y`, a final `-s` dropped (not after `s`, `u` or `i`). Suffixes are
/// compared as byte patterns: no `memcmp` calls.
#[inline(always)]
fn ending(w: &[u8]) -> Ending {
    if let Some(singular) = irregular_singular(w) {
        return Ending::Replace(w.len(), singular);
    }
    let n = w.len();
    match w {
        [.., b'o', b'u', b'r'] if n > 5 => Ending::Replace(3, "or"),
        [.., b'o', b'u', b'r', b's'] if n > 5 => Ending::Replace(4, "or"),
        [.., b'i', b'e', b's'] if n > 4 => Ending::Replace(3, "y"),
        [.., b's' | b'u' | b'i', b's'] => Ending::Keep,
        [.., b's'] if n > 3 => Ending::DropS,
        _ => Ending::Keep,
    }
}

/// The singular of an irregular plural common in clinical text.
#[inline(always)]
fn irregular_singular(w: &[u8]) -> Option<&'static str> {
    // All are at most eight bytes: one load and integer compares, where slice patterns were
    // length tests and byte compares (inside WebAssembly, a `memcmp` call each). A word
    // (letters and digits) holds no zero byte, so the zero-extended loads are unique.
    const fn word(b: &[u8]) -> u64 {
        let mut x = 0;
        let mut i = b.len();
        while i > 0 {
            i -= 1;
            x = x << 8 | b[i] as u64;
        }
        x
    }
    const CHILDREN: u64 = word(b"children");
    const WOMEN: u64 = word(b"women");
    const MEN: u64 = word(b"men");
    const FEET: u64 = word(b"feet");
    const TEETH: u64 = word(b"teeth");
    const MICE: u64 = word(b"mice");
    if w.len() > 8 {
        return None;
    }
    match load_short(w) {
        CHILDREN => Some("child"),
        WOMEN => Some("woman"),
        MEN => Some("man"),
        FEET => Some("foot"),
        TEETH => Some("tooth"),
        MICE => Some("mouse"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of `text` by `char::is_alphanumeric`, a character at a time: the reference
    /// for [`tokens`].
    fn reference(text: &str) -> Vec<Token> {
        let mut chars = text.char_indices().enumerate().peekable();
        std::iter::from_fn(move || {
            while let Some(&(_, (_, c))) = chars.peek() {
                if c.is_alphanumeric() {
                    break;
                }
                chars.next();
            }
            let (n, (start, first)) = chars.next()?;
            let mut end = start + first.len_utf8();
            let mut char_end = n + 1;
            while let Some(&(m, (i, c))) = chars.peek() {
                if !c.is_alphanumeric() {
                    break;
                }
                end = i + c.len_utf8();
                char_end = m + 1;
                chars.next();
            }
            Some(Token { start, end, char_start: n as u32, char_end: char_end as u32 })
        })
        .collect()
    }

    #[test]
    fn splits_on_punctuation_and_keeps_unicode_words() {
        let text = "non-small-cell, Sjögren's (MI)";
        let words: Vec<&str> = tokens(text).map(|t| &text[t.start..t.end]).collect();
        assert_eq!(words, vec!["non", "small", "cell", "Sjögren", "s", "MI"]);
        let chars: Vec<(u32, u32)> = tokens(text).map(|t| (t.char_start, t.char_end)).collect();
        assert_eq!(chars[3..], [(16, 23), (24, 25), (27, 29)]);
    }

    #[test]
    fn tokens_agree_with_the_character_reference() {
        // ASCII runs longer and shorter than eight bytes around one- to four-byte characters,
        // letters (ö, β, 中) and not (thin space, ±, ≥, 🙂), at every start and end
        let text = "Non-small-cell lung cancer (NSCLC) in 2019: 45% of 1,234 pts; IL-6/TNF-alpha   x  ab12CD-34ef_gh~Zz@@[]`{}09aZ \
                    Sjögren\u{2009}syndrome ±2.5 mg; β-blockers≥3 doses, 中文 text 🙂emoji🙂 x\u{2009}y ärztekammer";
        let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &a in &bounds {
            for &b in bounds.iter().filter(|&&b| b >= a).step_by(7) {
                let part = &text[a..b];
                assert_eq!(tokens(part).collect::<Vec<_>>(), reference(part), "{part:?}");
            }
        }
    }

    #[test]
    fn lowercase_paths_agree() {
        let text = "Tumours of CHILDREN, Anaemia; therapies & ZZ-top: foetal @[`{ MiCe glass virus abcdefghIJKLMNOPqrstuvwxyz0123456789ä";
        assert_eq!(ascii_lowercase(text), text.to_ascii_lowercase());
        let lower = text.to_ascii_lowercase();
        let mut buf = String::new();
        for t in tokens(text) {
            let want = normalize_token(&text[t.start..t.end]);
            assert_eq!(normalize_lowercase(&lower[t.start..t.end], &mut buf), want);
        }
    }

    #[test]
    fn british_pairs_are_found_at_every_position() {
        let scan = |w: &[u8]| w.len() > 4 && w.windows(2).any(|p| matches!(p, [b'a' | b'o', b'e']));
        let words: [&[u8]; 6] = [
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            b"a\xe5e\xc3aoeaooaaxeaeeoa\xffe\x80eoaxe",
            b"\xe1\xe5\xef\x65\x61\x45\x41",
            b"oooooooooooooooooooooooooooooooooooo",
        ];
        for w in words {
            for a in 0..w.len() {
                for b in a..=w.len() {
                    assert_eq!(has_british_pair(&w[a..b]), scan(&w[a..b]), "{:?}", &w[a..b]);
                }
            }
        }
        // each pair position in words of every length up to 40
        for n in 5..40 {
            for at in 0..n - 1 {
                for pair in [b"ae", b"oe", b"ea", b"ao"] {
                    let mut w = vec![b'x'; n];
                    w[at..at + 2].copy_from_slice(pair);
                    assert_eq!(has_british_pair(&w), scan(&w), "{n} {at} {pair:?}");
                }
            }
        }
    }

    #[test]
    fn normalizes_case_plural_and_spelling() {
        assert_eq!(normalize_token("Therapies"), "therapy");
        assert_eq!(normalize_token("Tumours"), "tumor");
        assert_eq!(normalize_token("Anaemia"), "anemia");
        assert_eq!(normalize_token("diagnosis"), "diagnosis");
        assert_eq!(normalize_token("virus"), "virus");
        assert_eq!(normalize_token("Children"), "child");
        assert_eq!(normalize_token("mice"), "mouse");
        assert_eq!(normalize_token("Teeth"), "tooth");
        assert_eq!(normalize_token("childrens"), "children");
        assert_eq!(normalize_token("mens"), "men");
    }
}
