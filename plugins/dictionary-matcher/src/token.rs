//! Words of a text and their normalized form (lowercase, singular, American spelling).

/// A word of a text: a run of letters and digits, in byte offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Token {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
}

/// The words of `text`; hyphens, spaces and punctuation separate words.
pub fn tokens(text: &str) -> impl Iterator<Item = Token> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = chars.peek() {
            if c.is_alphanumeric() {
                break;
            }
            chars.next();
        }
        let (start, first) = chars.next()?;
        let mut end = start + first.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        Some(Token { start, end })
    })
}

/// The form a word is compared in: lowercase, British spellings folded to American
/// (`ae`/`oe` -> `e`, `-our` -> `-or`), a plural `-ies` -> `-y` and a final `-s` dropped.
pub fn normalize_token(word: &str) -> String {
    let mut w: String = if word.is_ascii() {
        word.to_ascii_lowercase()
    } else {
        word.chars().flat_map(char::to_lowercase).collect()
    };
    if w.len() > 4 && (w.contains("ae") || w.contains("oe")) {
        w = w.replace("ae", "e").replace("oe", "e");
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
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_keeps_unicode_words() {
        let text = "non-small-cell, Sjögren's (MI)";
        let words: Vec<&str> = tokens(text).map(|t| &text[t.start..t.end]).collect();
        assert_eq!(words, vec!["non", "small", "cell", "Sjögren", "s", "MI"]);
    }

    #[test]
    fn normalizes_case_plural_and_spelling() {
        assert_eq!(normalize_token("Therapies"), "therapy");
        assert_eq!(normalize_token("Tumours"), "tumor");
        assert_eq!(normalize_token("Anaemia"), "anemia");
        assert_eq!(normalize_token("diagnosis"), "diagnosis");
        assert_eq!(normalize_token("virus"), "virus");
    }
}
