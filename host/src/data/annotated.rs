//! Annotated documents (the `annotated` layout: PubTator, BioC XML, or JSON in the same
//! shape): passages and gold mentions whose offsets count in the corpus's own text (passages
//! at their offsets, PubTator's title + space + abstract), mapped exactly onto the record's
//! text (title, then the other passages after blank lines), each checked against the text it
//! names.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::formats::kind_of;
use super::record::Record;
use crate::plugin::types::Span;

/// A gold mention of an annotated corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldMention {
    /// Where it is in the record's `text` (characters).
    pub span: Span,
    /// The mention as written.
    pub text: String,
    /// Its entity type as the corpus names it (`Disease`, `Chemical`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The concept ids it is linked to: one, several for a composite mention ("breast and
    /// ovarian cancer"), none where the corpus gives none (`-1`).
    pub ids: Vec<String>,
    /// A composite mention's parts, one per id, where the corpus lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

/// A relation between concepts of a document (CDR's chemical-induced disease, `CID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// The relation's type as the corpus names it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The concepts it relates, in order.
    pub ids: Vec<String>,
}

/// One passage of a document: its kind (`title`, `abstract`...), where it starts in the
/// corpus's offsets, and its text.
struct Passage {
    kind: String,
    offset: u32,
    text: String,
}

/// Whether `raw` looks like an annotated document (it has `passages` or `annotations`).
pub fn looks_annotated(raw: &Map<String, Value>) -> bool {
    raw.contains_key("passages") || raw.contains_key("annotations")
}

/// The record an annotated document is: `passages` (each `{type, offset, text}`), or `text`
/// with an optional `title` (offsets then count in title + space + text, PubTator's way);
/// `annotations` (each `{offset, length, text, type, ids, parts?}`) and `relations`.
pub fn record(id: String, raw: &Map<String, Value>, source: &str) -> Result<Record, String> {
    let passages = passages(raw)?;
    let (title, rest): (Vec<&Passage>, Vec<&Passage>) = passages.iter().partition(|p| p.kind == "title" || p.kind == "front");
    if title.len() > 1 {
        return Err(format!("{} passages are titles; a document has at most one", title.len()));
    }
    let context = rest.iter().map(|p| p.text.as_str()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(super::fields::SEPARATOR);
    let mut record = Record::new(id, String::new(), context, None, Vec::new(), source.to_owned());
    record.title = title.first().map(|p| p.text.clone()).unwrap_or_default();
    record.compose(false);
    // where each passage starts in the record's text, in characters
    let mut starts = Vec::with_capacity(passages.len());
    let mut at = 0u32;
    for p in title.iter().chain(&rest) {
        if p.text.is_empty() {
            continue;
        }
        starts.push((*p, at));
        at += p.text.chars().count() as u32 + super::fields::SEPARATOR.len() as u32;
    }
    let annotations = match raw.get("annotations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(v) => return Err(format!("field annotations must be a list, found {}", kind_of(v))),
    };
    for (i, a) in annotations.iter().enumerate() {
        let gold = gold(a, &starts, &record.text).map_err(|e| format!("annotation {} ({}): {e}", i + 1, brief(a)))?;
        record.gold.push(gold);
    }
    record.gold.sort_by_key(|g| (g.span.start, g.span.end));
    if let Some(v) = raw.get("relations").filter(|v| !v.is_null()) {
        let items = v.as_array().ok_or_else(|| format!("field relations must be a list, found {}", kind_of(v)))?;
        for (i, r) in items.iter().enumerate() {
            let kind = str_field(r, "type").map_err(|e| format!("relation {}: {e}", i + 1))?;
            let ids = string_list(r, "ids").map_err(|e| format!("relation {}: {e}", i + 1))?;
            record.relations.push(Relation { kind, ids });
        }
    }
    Ok(record)
}

fn passages(raw: &Map<String, Value>) -> Result<Vec<Passage>, String> {
    if let Some(v) = raw.get("passages").filter(|v| !v.is_null()) {
        let items = v.as_array().ok_or_else(|| format!("field passages must be a list, found {}", kind_of(v)))?;
        let mut out: Vec<Passage> = Vec::with_capacity(items.len());
        for (i, p) in items.iter().enumerate() {
            let at = |e: String| format!("passage {}: {e}", i + 1);
            let passage = Passage {
                kind: str_field(p, "type").map_err(at)?,
                offset: u32_field(p, "offset").map_err(at)?,
                text: str_field(p, "text").map_err(at)?,
            };
            if let Some(prev) = out.last()
                && passage.offset < prev.offset + prev.text.chars().count() as u32
            {
                return Err(at(format!("starts at {}, inside the passage before it", passage.offset)));
            }
            out.push(passage);
        }
        if out.iter().all(|p| p.text.trim().is_empty()) {
            return Err("every passage is empty".into());
        }
        return Ok(out);
    }
    let text = match raw.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(format!("field text must be a string, found {}", kind_of(v))),
        None => return Err("missing the document's text: no field passages or text".into()),
    };
    let title = match raw.get("title") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(v) => return Err(format!("field title must be a string, found {}", kind_of(v))),
    };
    if title.trim().is_empty() && text.trim().is_empty() {
        return Err("the title and the text are empty".into());
    }
    let offset = if title.is_empty() { 0 } else { title.chars().count() as u32 + 1 };
    let mut out = Vec::new();
    if !title.is_empty() {
        out.push(Passage { kind: "title".into(), offset: 0, text: title });
    }
    out.push(Passage { kind: "abstract".into(), offset, text });
    Ok(out)
}

/// One gold mention: its corpus offsets placed in a passage and mapped onto `text`.
fn gold(a: &Value, starts: &[(&Passage, u32)], text: &str) -> Result<GoldMention, String> {
    let offset = u32_field(a, "offset")?;
    let length = u32_field(a, "length")?;
    let written = str_field(a, "text")?;
    let kind = str_field(a, "type")?;
    let ids: Vec<String> = string_list(a, "ids")?.into_iter().filter(|id| id != "-1" && !id.is_empty()).collect();
    let parts = match a.get("parts") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => string_list(a, "parts")?,
    };
    let (passage, start) = starts
        .iter()
        .find(|(p, _)| offset >= p.offset && offset + length <= p.offset + p.text.chars().count() as u32)
        .ok_or_else(|| format!("offsets {offset}-{} fall in no passage", offset + length))?;
    let begin = start + (offset - passage.offset);
    let span = Span { start: begin, end: begin + length };
    let found = super::fields::slice(text, span);
    if found != written {
        return Err(format!("offsets {offset}-{} hold {found:?} in the text, not the annotation's {written:?}", offset + length));
    }
    Ok(GoldMention { span, text: written, kind, ids, parts })
}

fn brief(a: &Value) -> String {
    a.get("text").and_then(Value::as_str).map_or_else(|| "no text".to_owned(), |t| format!("{t:?}"))
}

fn str_field(v: &Value, name: &str) -> Result<String, String> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field {name} must be a string, found {}", kind_of(other))),
        None => Err(format!("missing field {name}")),
    }
}

fn u32_field(v: &Value, name: &str) -> Result<u32, String> {
    match v.get(name) {
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("field {name} must be a whole number, found {n}"))
        }
        Some(other) => Err(format!("field {name} must be a number, found {}", kind_of(other))),
        None => Err(format!("missing field {name}")),
    }
}

fn string_list(v: &Value, name: &str) -> Result<Vec<String>, String> {
    match v.get(name) {
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(|| format!("field {name} must be a list of strings"))).collect()
        }
        Some(Value::String(s)) => Ok(s.split('|').map(str::to_owned).collect()),
        Some(other) => Err(format!("field {name} must be a list of strings, found {}", kind_of(other))),
        None => Err(format!("missing field {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("json")
    }

    /// PubTator counts the abstract from title + one space; the record puts a blank line
    /// there, so the abstract's mentions move by one and still name the same text.
    #[test]
    fn pubtator_offsets_map_exactly_onto_the_records_text() {
        let raw = obj(r#"{"title": "Lithium toxicity.", "text": "A newborn with tricuspid regurgitation and MI.",
                "annotations": [
                  {"offset": 0, "length": 7, "text": "Lithium", "type": "Chemical", "ids": ["D008094"]},
                  {"offset": 33, "length": 23, "text": "tricuspid regurgitation", "type": "Disease", "ids": ["D014262"]},
                  {"offset": 61, "length": 2, "text": "MI", "type": "Disease", "ids": ["-1"]}],
                "relations": [{"type": "CID", "ids": ["D008094", "D014262"]}]}"#);
        let r = record("1".into(), &raw, "f line 1").expect("record");
        assert_eq!(r.text, "Lithium toxicity.\n\nA newborn with tricuspid regurgitation and MI.");
        let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["title", "context"]);
        for g in &r.gold {
            assert_eq!(super::super::fields::slice(&r.text, g.span), g.text);
        }
        assert_eq!(r.gold[1].span, Span { start: 34, end: 57 });
        assert!(r.gold[2].ids.is_empty(), "-1 is no id");
        assert_eq!(r.relations[0].ids, ["D008094", "D014262"]);
    }

    #[test]
    fn bioc_passages_at_their_offsets_and_bad_annotations_named() {
        let raw = obj(r#"{"passages": [{"type": "title", "offset": 0, "text": "Aspirin."},
                            {"type": "abstract", "offset": 9, "text": "Aspirin and ibuprofen."},
                            {"type": "paragraph", "offset": 40, "text": "Ibuprofen."}],
                "annotations": [{"offset": 40, "length": 9, "text": "Ibuprofen", "type": "Chemical", "ids": ["D007052"]}]}"#);
        let r = record("2".into(), &raw, "f").expect("record");
        assert_eq!(r.text, "Aspirin.\n\nAspirin and ibuprofen.\n\nIbuprofen.");
        assert_eq!(super::super::fields::slice(&r.text, r.gold[0].span), "Ibuprofen");

        let mut bad = raw.clone();
        bad["annotations"][0]["offset"] = 41.into();
        let err = record("2".into(), &bad, "f").expect_err("text differs");
        assert!(err.starts_with("annotation 1 (\"Ibuprofen\"): offsets 41-50 hold \"buprofen.\""), "{err}");
        bad["annotations"][0]["offset"] = 30.into();
        let err = record("2".into(), &bad, "f").expect_err("between passages");
        assert!(err.contains("offsets 30-39 fall in no passage"), "{err}");
        // an empty passage takes no place in the record's text
        let mut empty = raw.clone();
        empty["passages"][1]["text"] = "".into();
        let r = record("2".into(), &empty, "f").expect("record");
        assert_eq!(r.text, "Aspirin.\n\nIbuprofen.");
        assert_eq!(super::super::fields::slice(&r.text, r.gold[0].span), "Ibuprofen");
        let mut overlap = raw.clone();
        overlap["passages"][1]["offset"] = 3.into();
        assert!(record("2".into(), &overlap, "f").expect_err("overlap").contains("passage 2: starts at 3"));
    }
}
