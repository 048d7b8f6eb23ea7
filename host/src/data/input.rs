//! Reading PubMedQA (`ori_pqal.json`) and JSONL input: good records go through, each bad
//! one is reported with its file, record and field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::record::Record;

/// A record (or a whole file) that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {place}: {message}")]
pub struct InputError {
    /// The input file.
    pub file: PathBuf,
    /// The record or line, e.g. `record 12345` or `line 7`.
    pub place: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Reads a PubMedQA JSON object or a JSONL file (by extension `.jsonl`).
pub fn read(path: &Path) -> (Vec<Record>, Vec<InputError>) {
    let err = |place: &str, message: String| InputError { file: path.to_owned(), place: place.to_owned(), message };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return (Vec::new(), vec![err("file", format!("cannot read: {e}"))]),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return (Vec::new(), vec![err("file", "the file is empty".into())]);
    }
    if path.extension().is_some_and(|e| e == "jsonl") { read_jsonl(path, &bytes) } else { read_pubmedqa(path, &bytes) }
}

fn read_pubmedqa(path: &Path, bytes: &[u8]) -> (Vec<Record>, Vec<InputError>) {
    let err = |place: String, message: String| InputError { file: path.to_owned(), place, message };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            return (Vec::new(), vec![err(format!("line {line}"), format!("not UTF-8 ({e})"))]);
        }
    };
    let map: Map<String, Value> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return (Vec::new(), vec![err(format!("line {}", e.line()), format!("not a PubMedQA JSON object: {e}"))]),
    };
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (id, value) in map {
        match pubmedqa_record(&id, &value, path) {
            Ok(r) => records.push(r),
            Err(message) => errors.push(err(format!("record {id}"), message)),
        }
    }
    (records, errors)
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    obj.get(name).ok_or_else(|| format!("missing field {name}"))
}

fn string(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    field(obj, name)?.as_str().map(str::to_owned).ok_or_else(|| format!("field {name} must be a string"))
}

fn strings(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    let arr = field(obj, name)?.as_array().ok_or_else(|| format!("field {name} must be a list of strings"))?;
    arr.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("field {name} must be a list of strings"))).collect()
}

/// A string field that may be absent or null; an empty one counts as absent.
fn optional_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => Ok(Some(string(obj, name)?).filter(|s| !s.trim().is_empty())),
    }
}

fn answer(raw: String, name: &str) -> Result<String, String> {
    match raw.as_str() {
        "yes" | "no" | "maybe" => Ok(raw),
        _ => Err(format!("field {name} must be yes, no or maybe (found {raw:?})")),
    }
}

fn pubmedqa_record(id: &str, value: &Value, path: &Path) -> Result<Record, String> {
    let obj = value.as_object().ok_or("must be a JSON object")?;
    let question = string(obj, "QUESTION")?;
    let contexts = strings(obj, "CONTEXTS")?;
    let answer = match obj.get("final_decision") {
        None | Some(Value::Null) => None,
        Some(_) => Some(answer(string(obj, "final_decision")?, "final_decision")?),
    };
    let meshes = if obj.contains_key("MESHES") { strings(obj, "MESHES")? } else { Vec::new() };
    if question.trim().is_empty() {
        return Err("field QUESTION is empty".into());
    }
    let mut record = Record::new(id.to_owned(), question, contexts.join("\n\n"), answer, meshes, format!("{}#{id}", path.display()));
    record.long_answer = optional_string(obj, "LONG_ANSWER")?;
    Ok(record)
}

/// For a JSONL line written with PubMedQA's own upper-case keys: what a line must hold
/// instead, and the fields it has.
fn pubmedqa_keys_hint(obj: &Map<String, Value>) -> Option<String> {
    let upper = ["QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER"];
    if obj.contains_key("question") || !upper.iter().any(|k| obj.contains_key(*k)) {
        return None;
    }
    let found: Vec<&str> = obj.keys().map(String::as_str).collect();
    Some(format!(
        "missing field question: this line has PubMedQA's own keys (fields: {}); a .jsonl input takes one \
         {{\"id\", \"question\", \"context\", \"answer\"}} object per line (\"long_answer\" and \"meshes\" optional), \
         and PubMedQA's own file (ori_pqal.json, one object keyed by id) is read as it is from a .json file",
        found.join(", ")
    ))
}

fn read_jsonl(path: &Path, bytes: &[u8]) -> (Vec<Record>, Vec<InputError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let place = format!("line {}", n + 1);
        let err = |message: String| InputError { file: path.to_owned(), place: place.clone(), message };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                errors.push(err(format!("not UTF-8 ({e})")));
                continue;
            }
        };
        let parsed = serde_json::from_str::<Value>(text).map_err(|e| format!("bad JSON: {e}")).and_then(|v| {
            let obj = v.as_object().ok_or("must be a JSON object")?;
            if let Some(hint) = pubmedqa_keys_hint(obj) {
                return Err(hint);
            }
            let id = match field(obj, "id")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err("field id must be a string or a number".into()),
            };
            let answer = match obj.get("answer") {
                None | Some(Value::Null) => None,
                Some(_) => Some(answer(string(obj, "answer")?, "answer")?),
            };
            let meshes = if obj.contains_key("meshes") { strings(obj, "meshes")? } else { Vec::new() };
            let context = match obj.get("context") {
                None | Some(Value::Null) => String::new(),
                Some(_) => string(obj, "context")?,
            };
            let mut record = Record::new(id, string(obj, "question")?, context, answer, meshes, format!("{}:{}", path.display(), n + 1));
            record.long_answer = optional_string(obj, "long_answer")?;
            Ok(record)
        });
        match parsed {
            Ok(r) => records.push(r),
            Err(m) => errors.push(err(m)),
        }
    }
    (records, errors)
}
