//! Words of a text and their normalized form (lowercase, singular, American spelling).

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
pub fn tokens(text: &str) -> impl Iterator<Item = Token> + '_ {
    let ascii = text.is_ascii();
    let (mut a, mut u) = (ascii_tokens(if ascii { text.as_bytes() } else { &[] }), unicode_tokens(if ascii { "" } else { text }));
    // No `Box<dyn Iterator>`: an indirect call per word is dear inside WebAssembly.
    std::iter::from_fn(move || if ascii { a.next() } else { u.next() })
}

/// [`tokens`] of an ASCII text: bytes are characters.
fn ascii_tokens(bytes: &[u8]) -> impl Iterator<Item = Token> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        Some(Token { start, end: i, char_start: start as u32, char_end: i as u32 })
    })
}

fn unicode_tokens(text: &str) -> impl Iterator<Item = Token> + '_ {
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
}

/// The form a word is compared in: lowercase, British spellings folded to American
/// (`ae`/`oe` -> `e`, `-our` -> `-or`), a plural `-ies` -> `-y` and a final `-s` dropped.
pub fn normalize_token(word: &str) -> String {
    let mut w = String::with_capacity(word.len());
    normalize_token_into(word, &mut w);
    w
}

/// [`normalize_token`] into a reused buffer (the matcher's hot path allocates nothing).
pub fn normalize_token_into(word: &str, w: &mut String) {
    w.clear();
    if word.is_ascii() {
        w.push_str(word);
        w.make_ascii_lowercase();
    } else {
        w.extend(word.chars().flat_map(char::to_lowercase));
    }
    // A byte scan, not `str::contains`: this runs for every word (and the generic string
    // search is far slower inside WebAssembly than a two-byte window).
    if w.len() > 4 && w.as_bytes().windows(2).any(|p| p == b"ae" || p == b"oe") {
        *w = w.replace("ae", "e").replace("oe", "e");
    }
    // irregular plurals common in clinical text
    if let Some(singular) = match w.as_str() {
        "children" => Some("child"),
        "women" => Some("woman"),
        "men" => Some("man"),
        "feet" => Some("foot"),
        "teeth" => Some("tooth"),
        "mice" => Some("mouse"),
        _ => None,
    } {
        w.clear();
        w.push_str(singular);
        return;
    }
    if w.len() > 5 && w.ends_with("our") {
        w.truncate(w.len() - 3);
        w.push_str("or");
    } else if w.len() > 5 && w.ends_with("ours") {
        w.truncate(w.len() - 4);
        w.push_str("or");
    }
    if w.len() > 4 && w.ends_with("ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.len() > 3
        && w.ends_with('s')
        && !(w.ends_with("ss") || w.ends_with("us") || w.ends_with("is"))
    {
        w.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_keeps_unicode_words() {
        let text = "non-small-cell, Sjögren's (MI)";
        let words: Vec<&str> = tokens(text).map(|t| &text[t.start..t.end]).collect();
        assert_eq!(words, vec!["non", "small", "cell", "Sjögren", "s", "MI"]);
        let chars: Vec<(u32, u32)> = tokens(text).map(|t| (t.char_start, t.char_end)).collect();
        assert_eq!(chars[3..], [(16, 23), (24, 25), (27, 29)]);
    }

    #[test]
    fn normalizes_case_plural_and_spelling() {
        assert_eq!(normalize_token("Therapies"), "therapy");
        assert_eq!(normalize_token("Tumours"), "tumor");
        assert_eq!(normalize_token("Anaemia"), "anemia");
        assert_eq!(normalize_token("diagnosis"), "diagnosis");
        assert_eq!(normalize_token("virus"), "virus");
        assert_eq!(normalize_token("Children"), "child");
    }
}
