//! Checks of everything a plugin returns: spans inside the text and on character
//! (grapheme) boundaries, ids non-empty, numbers finite, sizes bounded.

use unicode_segmentation::GraphemeCursor;

use super::contract::{Contract, kind_name};
use super::types::{Derived, Document, Expansion, Field, Mention, PluginInfo, PluginKind, Score, Span};

/// The most annotations one document may get from one plugin.
pub const MAX_ITEMS: usize = 10_000;
/// The longest id, name or label a plugin may return, in bytes.
pub const MAX_FIELD: usize = 4096;
/// The most new records an augmenter may make from one record.
pub const MAX_DERIVED: usize = 256;

/// Char offset -> byte offset, with grapheme-boundary checks.
struct Text<'a> {
    text: &'a str,
    /// The number of chars; equal to the length for ASCII text.
    chars: usize,
    /// Each char of two or more bytes, in order: its char offset and the continuation bytes
    /// up to its end. Texts are mostly ASCII, so this is short (empty for an ASCII text),
    /// and a char's byte offset is the char offset plus the continuation bytes before it.
    wide: Vec<(usize, usize)>,
}

impl<'a> Text<'a> {
    fn new(text: &'a str) -> Self {
        let mut wide = Vec::new();
        if !text.is_ascii() {
            let bytes = text.as_bytes();
            let (mut i, mut extra) = (0, 0);
            while i < bytes.len() {
                // ASCII 32 bytes per step, then eight
                if bytes.get(i..i + 32).is_some_and(<[u8]>::is_ascii) {
                    i += 32;
                    continue;
                }
                if let Some(chunk) = bytes.get(i..i + 8) {
                    let high = u64::from_le_bytes(chunk.try_into().unwrap_or_default()) & 0x8080_8080_8080_8080;
                    i += high.trailing_zeros() as usize / 8;
                    if high == 0 {
                        continue;
                    }
                }
                let lead = bytes[i];
                if lead < 0x80 {
                    i += 1;
                    continue;
                }
                // a valid `str`: a lead byte 110xxxxx, 1110xxxx or 11110xxx
                let len = lead.leading_ones() as usize;
                let ch = i - extra;
                extra += len - 1;
                wide.push((ch, extra));
                i += len;
            }
        }
        let chars = text.len() - wide.last().map_or(0, |&(_, extra)| extra);
        Self { text, chars, wide }
    }

    /// The byte offset of char `ch` (at most `self.chars`).
    fn byte(&self, ch: usize) -> usize {
        let before = self.wide.partition_point(|&(c, _)| c < ch);
        ch + before.checked_sub(1).map_or(0, |k| self.wide[k].1)
    }

    fn check(&self, span: &Span) -> Result<(usize, usize), String> {
        if span.start > span.end || span.end as usize > self.chars {
            return Err(format!("span {}..{} is outside the text ({} characters)", span.start, span.end, self.chars));
        }
        if span.start == span.end {
            return Err(format!("span {}..{} is empty", span.start, span.end));
        }
        let (a, b) = (self.byte(span.start as usize), self.byte(span.end as usize));
        for (ch, byte) in [(span.start, a), (span.end, b)] {
            if !grapheme_boundary(self.text, byte) {
                return Err(format!("span {}..{} cuts a character at offset {ch} (inside a grapheme cluster)", span.start, span.end));
            }
        }
        Ok((a, b))
    }
}

/// Whether the char boundary `at` of `text` is also a grapheme cluster boundary (UAX #29).
/// Between two ASCII characters only CR LF is one cluster (rule GB3: no ASCII character is
/// Extend, ZWJ, SpacingMark, Prepend, Hangul or a regional indicator), so the Unicode tables
/// are consulted only next to a non-ASCII character.
fn grapheme_boundary(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    if at == 0 || at >= bytes.len() {
        return true;
    }
    let (before, after) = (bytes[at - 1], bytes[at]);
    if before.is_ascii() && after.is_ascii() {
        return !(before == b'\r' && after == b'\n');
    }
    matches!(GraphemeCursor::new(at, text.len(), true).is_boundary(text, 0), Ok(true))
}

fn field(what: &str, value: &str) -> Result<(), String> {
    // most values start with a printable ASCII character: no need to trim them
    let printable = value.as_bytes().first().is_some_and(u8::is_ascii_graphic);
    if !printable && value.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > MAX_FIELD {
        return Err(format!("{what} is {} bytes (at most {MAX_FIELD})", value.len()));
    }
    Ok(())
}

fn unit(what: &str, x: f32) -> Result<(), String> {
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("{what} {x} is not in [0, 1]"));
    }
    Ok(())
}

fn count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what} for one record (at most {max})"));
    }
    Ok(())
}

/// A plugin's `describe()` answer, from a component exporting `world` of `contract`.
pub fn info(info: &PluginInfo, world: PluginKind, contract: Contract) -> Result<(), String> {
    field("name", &info.name)?;
    field("version", &info.version)?;
    if info.kind != world {
        return Err(format!("says it is a {} but its component is a {}", kind_name(info.kind), kind_name(world)));
    }
    if info.contract_version != contract.version() {
        return Err(format!("says it was built for contract {} but exports {}", info.contract_version, contract.version()));
    }
    Ok(())
}

/// A span of a document with fields must lie inside one of them.
fn in_one_field(fields: &[Field], span: &Span) -> Result<(), String> {
    if fields.is_empty() || fields.iter().any(|f| f.span.start <= span.start && span.end <= f.span.end) {
        return Ok(());
    }
    let names: Vec<&str> = fields.iter().filter(|f| f.span.start < span.end && span.start < f.span.end).map(|f| f.name.as_str()).collect();
    Err(match names[..] {
        [] => format!("span {}..{} lies between fields", span.start, span.end),
        _ => format!("span {}..{} runs across fields {}", span.start, span.end, names.join(" and ")),
    })
}

/// A normalizer's mentions for `doc`.
pub fn mentions(doc: &Document, mentions: &[Mention]) -> Result<(), String> {
    count("mentions", mentions.len(), MAX_ITEMS)?;
    let t = Text::new(&doc.text);
    for (i, m) in mentions.iter().enumerate() {
        let at = |e: String| format!("mention {i}: {e}");
        t.check(&m.span).map_err(at)?;
        in_one_field(&doc.fields, &m.span).map_err(at)?;
        field("concept id", &m.concept.id).map_err(at)?;
        field("preferred name", &m.concept.preferred_name).map_err(at)?;
        unit("score", m.score).map_err(at)?;
    }
    Ok(())
}

/// A disambiguator's expansions for `doc`; the abbreviation must be the span's text.
pub fn expansions(doc: &Document, expansions: &[Expansion]) -> Result<(), String> {
    count("expansions", expansions.len(), MAX_ITEMS)?;
    let (text, t) = (&doc.text, Text::new(&doc.text));
    for (i, x) in expansions.iter().enumerate() {
        let at = |e: String| format!("expansion {i}: {e}");
        let (a, b) = t.check(&x.span).map_err(at)?;
        in_one_field(&doc.fields, &x.span).map_err(at)?;
        if text[a..b] != x.abbreviation {
            return Err(at(format!("abbreviation {:?} is not the text of its span ({:?})", x.abbreviation, &text[a..b])));
        }
        field("long form", &x.long_form).map_err(at)?;
        unit("confidence", x.confidence).map_err(at)?;
    }
    Ok(())
}

/// An augmenter's new records made from `source`: each names the source's fields, in
/// order, at spans of its own text that do not overlap.
pub fn derived(source: &Document, derived: &[Derived]) -> Result<(), String> {
    count("derived records", derived.len(), MAX_DERIVED)?;
    let max_len = source.text.len() * 8 + 64 * 1024;
    for (i, d) in derived.iter().enumerate() {
        let at = |e: String| format!("derived record {i}: {e}");
        if d.text.len() > max_len {
            return Err(at(format!("text is {} bytes (at most {max_len})", d.text.len())));
        }
        let names = |fields: &[super::types::Field]| fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>().join(", ");
        if d.fields.len() != source.fields.len() || d.fields.iter().zip(&source.fields).any(|(a, b)| a.name != b.name) {
            return Err(at(format!("its fields are [{}], not the source's [{}]", names(&d.fields), names(&source.fields))));
        }
        let t = Text::new(&d.text);
        let mut end = 0;
        for f in &d.fields {
            if f.span.start < end || f.span.start > f.span.end || f.span.end as usize > t.chars {
                return Err(at(format!(
                    "field {} at {}..{} is outside the text ({} characters) or overlaps the field before it",
                    f.name, f.span.start, f.span.end, t.chars
                )));
            }
            end = f.span.end;
        }
        count("metadata entries", d.metadata.len(), 256).map_err(at)?;
        for (k, v) in &d.metadata {
            field("metadata key", k).map_err(at)?;
            if v.len() > MAX_FIELD * 16 {
                return Err(at(format!("metadata {k} is {} bytes", v.len())));
            }
        }
    }
    Ok(())
}

/// A metric's scores.
pub fn scores(scores: &[Score]) -> Result<(), String> {
    count("scores", scores.len(), MAX_ITEMS)?;
    for s in scores {
        field("score name", &s.name)?;
        if !s.value.is_finite() {
            return Err(format!("score {} is {}", s.name, s.value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::Concept;

    fn doc(text: &str) -> Document {
        Document { id: "r".into(), text: text.into(), fields: Vec::new(), metadata: Vec::new() }
    }

    fn with_fields(text: &str, fields: &[(&str, u32, u32)]) -> Document {
        let fields = fields.iter().map(|&(n, start, end)| Field { name: n.into(), span: Span { start, end } }).collect();
        Document { fields, ..doc(text) }
    }

    fn mention(start: u32, end: u32) -> Mention {
        Mention { span: Span { start, end }, concept: Concept { id: "D1".into(), preferred_name: "x".into() }, score: 1.0 }
    }

    #[test]
    fn spans_must_be_inside_the_text() {
        assert!(mentions(&doc("abc"), &[mention(0, 3)]).is_ok());
        let e = mentions(&doc("abc"), &[mention(1, 4)]).unwrap_err();
        assert!(e.contains("outside the text (3 characters)"), "{e}");
    }

    #[test]
    fn spans_count_characters_not_bytes() {
        // "Œdème" is 5 characters, 8 bytes.
        assert!(mentions(&doc("Œdème"), &[mention(0, 5)]).is_ok());
        assert!(mentions(&doc("Œdème"), &[mention(0, 8)]).is_err());
    }

    #[test]
    fn spans_must_not_split_a_grapheme() {
        // "e" + COMBINING ACUTE ACCENT is one user-perceived character made of two chars.
        let text = "cafe\u{301} au lait";
        assert!(mentions(&doc(text), &[mention(0, 5)]).is_ok());
        let e = mentions(&doc(text), &[mention(0, 4)]).unwrap_err();
        assert!(e.contains("cuts a character at offset 4"), "{e}");
    }

    #[test]
    fn the_ascii_shortcut_agrees_with_the_unicode_rules() {
        let texts = [
            "a\r\nb\r\r\n\n",
            "cafe\u{301}\r\n\u{301}x",
            "\u{1F469}\u{200D}\u{1F52C} \u{1F1EB}\u{1F1F7}!",
            "\u{915}\u{94D}\u{937} a\u{903}b",
            "\u{600}1 \u{1100}\u{1161}\u{11A8}.",
        ];
        for text in texts {
            for (at, _) in text.char_indices().chain([(text.len(), ' ')]) {
                let unicode = GraphemeCursor::new(at, text.len(), true).is_boundary(text, 0);
                assert_eq!(Ok(grapheme_boundary(text, at)), unicode, "{text:?} at byte {at}");
            }
        }
    }

    #[test]
    fn spans_out_of_order_find_their_bytes() {
        // "Œdème" is 5 characters, 7 bytes; later spans may come before earlier ones.
        let text = "Œdème, œdème";
        assert!(mentions(&doc(text), &[mention(7, 12), mention(0, 5), mention(7, 12)]).is_ok());
        let t = Text::new(text);
        assert_eq!([t.byte(12), t.byte(5), t.byte(0), t.byte(7)], [text.len(), 7, 0, 9]);
    }

    #[test]
    fn char_offsets_map_to_the_bytes_of_char_indices() {
        // ASCII runs longer and shorter than the 32- and 8-byte steps, chars of 2, 3 and 4 bytes
        let text = "Œdème ±0.5 mg, 3–4 µm ≥ 10 𝛼-helix (ἀρχή), then a plain ASCII run of forty-odd bytes é\u{301} 🧬.";
        let want: Vec<usize> = text.char_indices().map(|(b, _)| b).chain([text.len()]).collect();
        let t = Text::new(text);
        assert_eq!(t.chars, text.chars().count());
        assert_eq!((0..want.len()).map(|ch| t.byte(ch)).collect::<Vec<_>>(), want);
        let ascii = Text::new("plain");
        assert!(ascii.wide.is_empty());
        assert_eq!((ascii.chars, ascii.byte(3)), (5, 3));
    }

    #[test]
    fn blank_fields_are_refused() {
        for blank in ["", " ", "\t\n", "\u{3000}"] {
            assert!(field("concept id", blank).is_err(), "{blank:?}");
        }
        for ok in ["D1", " D1", "\u{3000}x", "é"] {
            assert!(field("concept id", ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn expansion_must_name_its_span() {
        let ok = Expansion {
            span: Span { start: 4, end: 6 },
            abbreviation: "MI".into(),
            long_form: "myocardial infarction".into(),
            confidence: 0.9,
        };
        assert!(expansions(&doc("Old MI."), std::slice::from_ref(&ok)).is_ok());
        let bad = Expansion { span: Span { start: 3, end: 5 }, ..ok };
        assert!(expansions(&doc("Old MI."), &[bad]).unwrap_err().contains("is not the text of its span"));
    }

    /// A document's fields are separate texts: a span inside one passes, one across two is
    /// refused naming both; a derived record names the source's fields, in order, inside its text.
    #[test]
    fn spans_stay_inside_one_field_and_derived_records_name_the_fields() {
        let d = with_fields("Is it MI?\n\nMI patients.", &[("question", 0, 9), ("context", 11, 23)]);
        assert!(mentions(&d, &[mention(6, 8), mention(11, 13)]).is_ok());
        let e = mentions(&d, &[mention(6, 13)]).unwrap_err();
        assert_eq!(e, "mention 0: span 6..13 runs across fields question and context");
        assert_eq!(mentions(&d, &[mention(9, 11)]).unwrap_err(), "mention 0: span 9..11 lies between fields");
        let derived = |fields: &[(&str, u32, u32)]| Derived {
            text: "Is it a heart attack?\n\nMI patients.".into(),
            fields: with_fields("", fields).fields,
            metadata: Vec::new(),
            note: String::new(),
        };
        assert!(super::derived(&d, &[derived(&[("question", 0, 21), ("context", 23, 35)])]).is_ok());
        let e = super::derived(&d, &[derived(&[("context", 23, 35)])]).unwrap_err();
        assert_eq!(e, "derived record 0: its fields are [context], not the source's [question, context]");
        let e = super::derived(&d, &[derived(&[("question", 0, 21), ("context", 20, 40)])]).unwrap_err();
        assert!(e.contains("field context at 20..40 is outside the text (35 characters) or overlaps the field before it"), "{e}");
    }
}
