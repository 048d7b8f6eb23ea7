//! What an input record means: its layout (a question with an answer, a multiple-choice
//! question, a labelled text, an instruction, a chat), detected from the first record or named
//! in the config, its fields found under their usual names or the config's `[data.fields]`,
//! and the [`Record`] it becomes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::formats::{RawRecord, kind_of};
use super::record::{Message, Record, Role, Split};

/// The shape of an input's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A question, an optional context and an answer (PubMedQA's `QUESTION`, `CONTEXTS`,
    /// `final_decision` too).
    Qa,
    /// A question with options (a list, an `A`..`E` map, or one column per option) and the
    /// answer as a letter, an index or the option's text.
    MultipleChoice,
    /// A text and its label.
    Labelled,
    /// `instruction`, optional `input`, `output`.
    Instruction,
    /// `messages` with system, user and assistant turns (OpenAI's fine-tuning format).
    Chat,
    /// A document with gold mentions (PubTator, BioC XML, or JSON with `passages` or `text`
    /// and `annotations`): the `annotate` task.
    Annotated,
}

crate::config::display_as_value_name!(Layout);

/// Where the options of a multiple-choice record are: one field (a list or a map from
/// letters), or one column per option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionsField {
    /// One field holding a list of options or a map from letters to options.
    Field(String),
    /// One field per option, in order.
    Columns(Vec<String>),
}

/// The input's own names for the fields a record is made of (`[data.fields]`); a field left
/// out is looked up under its usual names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// The record id (usual: `id`, `pubid`, `qid`; else the key or the record number).
    pub id: Option<String>,
    /// The question (usual: `question`, `QUESTION`, `stem`).
    pub question: Option<String>,
    /// The context, a string or a list of paragraphs (usual: `context`, `CONTEXTS`, `abstract`).
    pub context: Option<String>,
    /// The answer (usual: `answer`, `final_decision`, `answer_idx`, `cop`).
    pub answer: Option<String>,
    /// The options of a multiple-choice record (usual: `options`, `choices`, columns `A`, `B`,
    /// ... or `opa`, `opb`, ...).
    pub options: Option<OptionsField>,
    /// The explanation that comes with the answer (usual: `long_answer`, `LONG_ANSWER`,
    /// `explanation`, `exp`).
    pub long_answer: Option<String>,
    /// MeSH headings (usual: `meshes`, `MESHES`).
    pub meshes: Option<String>,
    /// A labelled record's text (usual: `text`, `note`).
    pub text: Option<String>,
    /// A labelled record's label (usual: `label`, `class`).
    pub label: Option<String>,
    /// The split a record belongs to, for `data.split = "field"` (usual: `split`).
    pub split: Option<String>,
    /// A chat's turns, a list of `{role, content}` (usual: `messages`, `conversations`).
    pub messages: Option<String>,
    /// An instruction record's instruction (usual: `instruction`).
    pub instruction: Option<String>,
    /// An instruction record's input (usual: `input`).
    pub input: Option<String>,
    /// An instruction record's answer (usual: `output`, `response`).
    pub output: Option<String>,
}

/// How an integer answer counts the options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IndexBase {
    /// 0 is the first option.
    #[default]
    ZeroBased,
    /// 1 is the first option (MedMCQA's original `cop`).
    OneBased,
}

crate::config::display_as_value_name!(IndexBase);

const ID: &[&str] = &["id", "ID", "pubid", "qid", "_id"];
const QUESTION: &[&str] = &["question", "QUESTION", "stem"];
const CONTEXT: &[&str] = &["context", "CONTEXTS", "contexts", "abstract"];
const ANSWER: &[&str] = &["answer", "final_decision", "answer_idx", "cop"];
const OPTIONS: &[&str] = &["options", "choices"];
const LONG_ANSWER: &[&str] = &["long_answer", "LONG_ANSWER", "explanation", "exp"];
const MESHES: &[&str] = &["meshes", "MESHES"];
const TEXT: &[&str] = &["text", "note", "TEXT"];
const LABEL: &[&str] = &["label", "LABEL", "class"];
const SPLIT: &[&str] = &["split"];
const MESSAGES: &[&str] = &["messages", "conversations"];
const INSTRUCTION: &[&str] = &["instruction"];
const INPUT: &[&str] = &["input"];
const OUTPUT: &[&str] = &["output", "response"];

/// The most options a multiple-choice record may have (one letter each).
pub const MAX_OPTIONS: usize = 26;

/// The letter of option `i` (`A` for 0).
pub fn letter(i: usize) -> String {
    char::from(b'A' + (i % MAX_OPTIONS) as u8).to_string()
}

/// How records are read: the field names, how integer answers count, the question labelled
/// records are asked under, and whether records carry their split.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    /// The config's field names.
    pub fields: &'a FieldMap,
    /// How an integer answer counts the options.
    pub answer_index: IndexBase,
    /// The question a labelled record's text is asked under.
    pub question: &'a str,
    /// Whether each record names its split.
    pub split_field: bool,
    /// Whether the explained answer is a text field the plugins see (`Record::compose`).
    pub long_answer_field: bool,
}

/// A field found in a record: its name and value.
type Found<'r> = Option<(&'r str, &'r Value)>;

impl<'a> Reader<'a> {
    /// The field the config maps (only that name), or the first usual name present.
    fn find<'r>(&self, raw: &'r Map<String, Value>, mapped: Option<&'r String>, usual: &[&str]) -> Found<'r> {
        match mapped {
            Some(name) => raw.get_key_value(name).map(|(k, v)| (k.as_str(), v)),
            None => usual.iter().find_map(|n| raw.get_key_value(*n)).map(|(k, v)| (k.as_str(), v)),
        }
        .filter(|(_, v)| !v.is_null())
    }

    /// The options of a record: a list, a map from letters, or option columns.
    fn options(&self, raw: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
        let columns = |names: Vec<String>| -> Result<Option<Vec<String>>, String> {
            names
                .iter()
                .map(|n| raw.get(n).filter(|v| !v.is_null()).map_or_else(|| Err(missing(n, None)), |v| scalar(n, v)))
                .collect::<Result<_, _>>()
                .map(Some)
        };
        match &self.fields.options {
            Some(OptionsField::Columns(names)) => return columns(names.clone()),
            Some(OptionsField::Field(name)) => {
                return match raw.get(name).filter(|v| !v.is_null()) {
                    Some(v) => option_list(name, v).map(Some),
                    None => Err(missing(name, Some("data.fields.options"))),
                };
            }
            None => {}
        }
        if let Some((name, v)) = self.find(raw, None, OPTIONS) {
            return option_list(name, v).map(Some);
        }
        // one column per option: A, B, ... or MedMCQA's opa, opb, ...
        for prefix in ["", "op"] {
            let names: Vec<String> = (0..MAX_OPTIONS)
                .map(|i| format!("{prefix}{}", if prefix.is_empty() { letter(i) } else { letter(i).to_lowercase() }))
                .take_while(|n| raw.get(n).is_some_and(|v| !v.is_null()))
                .collect();
            if names.len() >= 2 {
                return columns(names);
            }
        }
        Ok(None)
    }

    /// The layout of `first`, the first record of an input.
    pub fn detect(&self, first: &RawRecord) -> Result<Layout, String> {
        let raw = &first.fields;
        let f = self.fields;
        let has = |mapped: &Option<String>, usual: &[&str]| mapped.is_some() || self.find(raw, None, usual).is_some();
        if super::annotated::looks_annotated(raw) {
            return Ok(Layout::Annotated);
        }
        let chat = has(&f.messages, MESSAGES);
        let instruction = has(&f.instruction, INSTRUCTION);
        let question = has(&f.question, QUESTION);
        let options = f.options.is_some() || self.options(raw).ok().flatten().is_some();
        let labelled = has(&f.text, TEXT) && has(&f.label, LABEL);
        let shapes: Vec<&str> =
            [(chat, "chat (messages)"), (instruction, "instruction (instruction)"), (question, "a question (question)")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        if shapes.len() > 1 {
            return Err(format!(
                "the first record ({}) fits more than one layout: {}; set data.layout (qa, multiple-choice, labelled, instruction or chat). {}",
                first.place,
                shapes.join(", "),
                shown(raw)
            ));
        }
        Ok(match () {
            () if chat => Layout::Chat,
            () if instruction => Layout::Instruction,
            () if question && options => Layout::MultipleChoice,
            () if question => Layout::Qa,
            () if labelled => Layout::Labelled,
            () => {
                return Err(format!(
                    "the first record ({}) fits no layout: a record needs a question (`question`, with `answer`, and `options` for \
                     multiple choice), a text and its label (`text`, `label`), `messages` (chat) or `instruction` and `output`; name \
                     the input's own fields in [data.fields] (question = \"stem\", ...) or set data.layout. {}",
                    first.place,
                    shown(raw)
                ));
            }
        })
    }

    /// The record `raw` is under `layout` (a choice layout); `source` names the file.
    pub fn record(&self, layout: Layout, raw: &RawRecord, source: &str) -> Result<Record, String> {
        let f = self.fields;
        let fields = &raw.fields;
        let id = match self.find(fields, f.id.as_ref(), ID) {
            Some((_, Value::String(s))) if !s.trim().is_empty() => s.clone(),
            Some((_, Value::Number(n))) => n.to_string(),
            Some((name, v)) => return Err(format!("field {name} (the id) must be a string or a number, found {}", kind_of(v))),
            None if f.id.is_some() => return Err(missing(f.id.as_deref().unwrap_or_default(), Some("data.fields.id"))),
            None => raw.key.clone().unwrap_or_else(|| raw.number.to_string()),
        };
        type Conv = fn(&str, &Value) -> Result<String, String>;
        let required = |mapped: &Option<String>, usual: &[&str], what: &str, key: &str, conv: Conv| -> Result<String, String> {
            match self.find(fields, mapped.as_ref(), usual) {
                Some((name, v)) => conv(name, v).and_then(|s| match s.trim().is_empty() {
                    true => Err(format!("field {name} ({what}) is empty")),
                    false => Ok(s),
                }),
                None => Err(match mapped {
                    Some(name) => missing(name, Some(key)),
                    None => format!("missing {what}: no field {} (fields: {}); name it in {key}", usual.join(", "), names(fields)),
                }),
            }
        };
        let optional = |mapped: &Option<String>, usual: &[&str], key: &str, conv: Conv| -> Result<Option<String>, String> {
            match self.find(fields, mapped.as_ref(), usual) {
                Some((name, v)) => Ok(Some(conv(name, v)?).filter(|s| !s.trim().is_empty())),
                None if mapped.is_some() && !fields.contains_key(mapped.as_deref().unwrap_or_default()) => {
                    Err(missing(mapped.as_deref().unwrap_or_default(), Some(key)))
                }
                None => Ok(None),
            }
        };
        let mut messages = Vec::new();
        let (question, context, options, answer) = match layout {
            Layout::Qa | Layout::MultipleChoice => {
                let question = required(&f.question, QUESTION, "the question", "data.fields.question", string)?;
                let context = optional(&f.context, CONTEXT, "data.fields.context", paragraphs)?.unwrap_or_default();
                let answer = optional(&f.answer, ANSWER, "data.fields.answer", scalar)?;
                if layout == Layout::Qa {
                    (question, context, Vec::new(), answer)
                } else {
                    let options = self
                        .options(fields)?
                        .ok_or_else(|| format!("no options (`options`, or columns A, B, ...); fields: {}", names(fields)))?;
                    let answer = match self.find(fields, f.answer.as_ref(), ANSWER) {
                        Some((name, v)) => Some(choice_answer(name, v, &options, self.answer_index)?),
                        None => None,
                    };
                    (question, context, options, answer)
                }
            }
            Layout::Labelled => {
                let body = required(&f.text, TEXT, "the text", "data.fields.text", string)?;
                let label = optional(&f.label, LABEL, "data.fields.label", scalar)?;
                (self.question.to_owned(), body, Vec::new(), label)
            }
            Layout::Chat => {
                let (name, v) = self.find(fields, f.messages.as_ref(), MESSAGES).ok_or_else(|| match &f.messages {
                    Some(name) => missing(name, Some("data.fields.messages")),
                    None => format!("missing the chat: no field messages (fields: {})", names(fields)),
                })?;
                messages = chat(name, v)?;
                let last_user = messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default();
                (last_user, String::new(), Vec::new(), None)
            }
            Layout::Annotated => {
                let mut record = super::annotated::record(id, fields, source)?;
                record.split = self.split(fields)?.unwrap_or_default();
                return Ok(record);
            }
            Layout::Instruction => {
                let instruction = required(&f.instruction, INSTRUCTION, "the instruction", "data.fields.instruction", string)?;
                let input = optional(&f.input, INPUT, "data.fields.input", string)?;
                let output = required(&f.output, OUTPUT, "the answer", "data.fields.output", string)?;
                let user = match &input {
                    Some(input) => format!("{instruction}\n\n{input}"),
                    None => instruction.clone(),
                };
                messages = vec![Message { role: Role::User, content: user }, Message { role: Role::Assistant, content: output }];
                (instruction, input.unwrap_or_default(), Vec::new(), None)
            }
        };
        let meshes = match self.find(fields, f.meshes.as_ref(), MESHES) {
            Some((name, Value::Array(items))) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("field {name} must be a list of strings")))
                .collect::<Result<_, _>>()?,
            Some((_, Value::String(s))) => s.split(['|', ';']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            Some((name, v)) => return Err(format!("field {name} must be a list of strings, found {}", kind_of(v))),
            None => Vec::new(),
        };
        let mut record = Record::new(id, question, context, answer.map(|a| a.trim().to_owned()), meshes, source.to_owned());
        record.options = options;
        record.messages = messages;
        record.long_answer = optional(&f.long_answer, LONG_ANSWER, "data.fields.long_answer", string)?;
        record.compose(self.long_answer_field);
        if let Some(split) = self.split(fields)? {
            record.split = split;
        }
        Ok(record)
    }

    /// The split a record names, where records carry theirs (`data.split = "field"`).
    fn split(&self, fields: &Map<String, Value>) -> Result<Option<Split>, String> {
        if !self.split_field {
            return Ok(None);
        }
        let f = self.fields;
        let (name, v) = self
            .find(fields, f.split.as_ref(), SPLIT)
            .ok_or_else(|| missing(f.split.as_deref().unwrap_or("split"), Some("data.split = \"field\"")))?;
        split_of(name, v).map(Some)
    }
}

fn missing(name: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("missing field {name} (named by {key})"),
        None => format!("missing field {name}"),
    }
}

/// A text field: a string.
fn string(name: &str, v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("field {name} must be a string, found {}", kind_of(v)))
}

/// A context: a string, or a list of paragraphs joined by blank lines.
fn paragraphs(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n\n"))
        }
        other => Err(format!("field {name} must be a string or a list of strings, found {}", kind_of(other))),
    }
}

/// An answer, label or option: a string, or a number or boolean written out.
fn scalar(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("field {name} must be a string, a number or a boolean, found {}", kind_of(other))),
    }
}

/// A list of options, or a map from letters (`A`..) to options.
fn option_list(name: &str, v: &Value) -> Result<Vec<String>, String> {
    let options: Vec<String> = match v {
        Value::Array(items) => items.iter().map(|o| scalar(name, o)).collect::<Result<_, _>>()?,
        Value::Object(map) => {
            let mut keyed: Vec<(&String, &Value)> = map.iter().collect();
            keyed.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, _)) in keyed.iter().enumerate() {
                if !k.eq_ignore_ascii_case(&letter(i)) {
                    return Err(format!(
                        "field {name}: the options' keys must be the letters A, B, ... in turn (found {k:?} where {} belongs)",
                        letter(i)
                    ));
                }
            }
            keyed.iter().map(|(_, o)| scalar(name, o)).collect::<Result<_, _>>()?
        }
        other => return Err(format!("field {name} (the options) must be a list or a map from letters, found {}", kind_of(other))),
    };
    if options.len() < 2 || options.len() > MAX_OPTIONS {
        return Err(format!("field {name} has {} option(s); a multiple-choice question needs 2 to {MAX_OPTIONS}", options.len()));
    }
    if let Some(i) = options.iter().position(|o| o.trim().is_empty()) {
        return Err(format!("field {name}: option {} is empty", letter(i)));
    }
    Ok(options)
}

/// A multiple-choice answer as its option's letter: the option's text, a letter, or an index.
fn choice_answer(name: &str, v: &Value, options: &[String], base: IndexBase) -> Result<String, String> {
    let n = options.len();
    let index = |i: i64| -> Option<usize> {
        let i = match base {
            IndexBase::ZeroBased => i,
            IndexBase::OneBased => i - 1,
        };
        usize::try_from(i).ok().filter(|&i| i < n)
    };
    let found = match v {
        Value::Number(num) => num.as_i64().and_then(index),
        Value::String(s) => {
            let s = s.trim();
            options
                .iter()
                .position(|o| o.trim() == s)
                .or_else(|| {
                    (s.len() == 1)
                        .then(|| s.to_ascii_uppercase().as_bytes()[0])
                        .filter(u8::is_ascii_uppercase)
                        .map(|b| usize::from(b - b'A'))
                        .filter(|&i| i < n)
                })
                .or_else(|| s.parse::<i64>().ok().and_then(index))
        }
        _ => None,
    };
    found.map(letter).ok_or_else(|| {
        let first = match base {
            IndexBase::ZeroBased => 0,
            IndexBase::OneBased => 1,
        };
        format!(
            "field {name}: the answer {v} is not among the {n} options (a letter A-{}, an index {first}-{} (data.answer_index = \"{base}\"), or an option's text)",
            letter(n - 1),
            n - 1 + first
        )
    })
}

/// A chat: a list of `{role, content}` turns (`from`/`value` as ShareGPT writes them), roles
/// system (first only), user and assistant, user and assistant alternating, ending on an
/// assistant turn that is not empty.
fn chat(name: &str, v: &Value) -> Result<Vec<Message>, String> {
    let items = v.as_array().ok_or_else(|| format!("field {name} must be a list of turns, found {}", kind_of(v)))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{name}[{i}]");
        let turn = item.as_object().ok_or_else(|| format!("{at} must be an object with role and content, found {}", kind_of(item)))?;
        let get = |keys: [&str; 2]| keys.iter().find_map(|k| turn.get(*k));
        let role = match get(["role", "from"]).and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user" | "human") => Role::User,
            Some("assistant" | "gpt") => Role::Assistant,
            Some(other) => return Err(format!("{at}.role {other:?} is not system, user or assistant")),
            None => return Err(format!("{at} has no role")),
        };
        let content = match get(["content", "value"]) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("{at}.content must be a string, found {}", kind_of(other))),
            None => return Err(format!("{at} has no content")),
        };
        if role == Role::Assistant && content.trim().is_empty() {
            return Err(format!("{at} is an empty assistant turn"));
        }
        if role == Role::System && i > 0 {
            return Err(format!("{at}: a system turn comes first or not at all"));
        }
        if let Some(prev) = out.last().map(|m: &Message| m.role)
            && prev == role
        {
            return Err(format!("{at}: two {role} turns in a row"));
        }
        out.push(Message { role, content });
    }
    match out.last().map(|m| m.role) {
        None => Err(format!("field {name} is an empty chat")),
        Some(Role::Assistant) if out.iter().any(|m| m.role == Role::User) => Ok(out),
        Some(Role::Assistant) => Err(format!("field {name} has no user turn")),
        Some(role) => Err(format!("field {name} ends on a {role} turn: a chat ends with the assistant's answer it teaches")),
    }
}

fn split_of(name: &str, v: &Value) -> Result<Split, String> {
    match v.as_str().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("train") => Ok(Split::Train),
        Some("dev" | "validation" | "valid" | "val") => Ok(Split::Dev),
        Some("test") => Ok(Split::Test),
        _ => Err(format!("field {name} must be train, dev (or validation) or test, found {v}")),
    }
}

fn names(fields: &Map<String, Value>) -> String {
    fields.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// A record for a message: its fields and its first 300 characters.
pub(crate) fn shown(fields: &Map<String, Value>) -> String {
    let json = serde_json::to_string(fields).unwrap_or_default();
    let cut: String = json.chars().take(300).collect();
    let more = if cut.len() < json.len() { "…" } else { "" };
    format!("Its fields: {}. The record: {cut}{more}", names(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawRecord {
        let Value::Object(fields) = serde_json::from_str(json).expect("json") else { panic!("object") };
        RawRecord { place: "line 1".into(), key: None, number: 1, fields }
    }

    fn reader(fields: &FieldMap) -> Reader<'_> {
        Reader { fields, answer_index: IndexBase::ZeroBased, question: "Which label fits?", split_field: false, long_answer_field: false }
    }

    /// The layout follows the fields: messages, instruction, question with options, question,
    /// text with label; two shapes at once, or none, is an error showing the record.
    #[test]
    fn the_layout_is_detected_from_the_first_record() {
        let usual = FieldMap::default();
        let r = reader(&usual);
        let detect = |j: &str| r.detect(&raw(j));
        assert_eq!(detect(r#"{"messages": []}"#), Ok(Layout::Chat));
        assert_eq!(detect(r#"{"instruction": "x", "output": "y"}"#), Ok(Layout::Instruction));
        assert_eq!(detect(r#"{"question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}"#), Ok(Layout::MultipleChoice));
        assert_eq!(detect(r#"{"question": "q", "opa": "a", "opb": "b", "cop": 1}"#), Ok(Layout::MultipleChoice));
        assert_eq!(detect(r#"{"QUESTION": "q", "CONTEXTS": [], "final_decision": "yes"}"#), Ok(Layout::Qa));
        assert_eq!(detect(r#"{"text": "note", "label": "urgent"}"#), Ok(Layout::Labelled));
        let both = detect(r#"{"question": "q", "messages": []}"#).expect_err("two shapes");
        assert!(both.contains("fits more than one layout: chat (messages), a question (question)"), "{both}");
        let none = detect(r#"{"prompt": 1, "key": "B"}"#).expect_err("no shape");
        assert!(
            none.contains("fits no layout")
                && none.contains("Its fields: prompt, key")
                && none.contains(r#"The record: {"prompt":1,"key":"B"}"#),
            "{none}"
        );
        let mapped = FieldMap { question: Some("prompt".into()), ..FieldMap::default() };
        assert_eq!(reader(&mapped).detect(&raw(r#"{"prompt": "q", "key": "B"}"#)), Ok(Layout::Qa));
    }

    /// A multiple-choice answer may be the option's text, a letter or an index (0- or
    /// 1-based); the record keeps the letter. One that names no option is an error saying
    /// what is accepted.
    #[test]
    fn a_multiple_choice_answer_becomes_its_letter() {
        let usual = FieldMap::default();
        let mut r = reader(&usual);
        let answer = |r: &Reader, j: &str| r.record(Layout::MultipleChoice, &raw(j), "t").map(|rec| (rec.answer, rec.options));
        let medqa =
            r#"{"question": "q", "options": {"A": "Aspirin", "B": "Heparin", "C": "Warfarin"}, "answer": "Heparin", "answer_idx": "B"}"#;
        assert_eq!(answer(&r, medqa), Ok((Some("B".into()), vec!["Aspirin".into(), "Heparin".into(), "Warfarin".into()])));
        assert_eq!(answer(&r, r#"{"question": "q", "options": ["x", "y"], "answer": "b"}"#).map(|a| a.0), Ok(Some("B".into())));
        assert_eq!(answer(&r, r#"{"question": "q", "options": ["x", "y"], "answer": 0}"#).map(|a| a.0), Ok(Some("A".into())));
        r.answer_index = IndexBase::OneBased;
        assert_eq!(answer(&r, r#"{"question": "q", "opa": "x", "opb": "y", "cop": 2}"#).map(|a| a.0), Ok(Some("B".into())));
        let err = answer(&r, r#"{"question": "q", "options": ["x", "y"], "answer": "z"}"#).expect_err("no option z");
        assert!(err.contains("the answer \"z\" is not among the 2 options (a letter A-B, an index 1-2"), "{err}");
        let err = answer(&r, r#"{"question": "q", "options": ["x"], "answer": "x"}"#).expect_err("one option");
        assert!(err.contains("has 1 option(s)"), "{err}");
        let err = answer(&r, r#"{"question": "q", "options": {"A": "x", "C": "y"}}"#).expect_err("a gap");
        assert!(err.contains("found \"C\" where B belongs"), "{err}");
    }

    /// Mapped fields are read under their own names, and a missing one names its config key;
    /// a labelled text is asked under the task's question; a split field is read.
    #[test]
    fn mapped_fields_are_read_and_missing_ones_name_their_key() {
        let mapped =
            FieldMap { id: Some("note_id".into()), text: Some("note".into()), label: Some("triage".into()), ..FieldMap::default() };
        let mut r = reader(&mapped);
        r.split_field = true;
        let rec = r
            .record(Layout::Labelled, &raw(r#"{"note_id": 9, "note": "Chest pain.", "triage": "emergent", "split": "validation"}"#), "t")
            .expect("record");
        assert_eq!((rec.id.as_str(), rec.question.as_str(), rec.context.as_str()), ("9", "Which label fits?", "Chest pain."));
        assert_eq!((rec.answer.as_deref(), rec.split), (Some("emergent"), Split::Dev));
        let err =
            r.record(Layout::Labelled, &raw(r#"{"note_id": 9, "text": "x", "triage": "a", "split": "dev"}"#), "t").expect_err("no note");
        assert_eq!(err, "missing field note (named by data.fields.text)");
        let err = r
            .record(Layout::Labelled, &raw(r#"{"note_id": 9, "note": "x", "triage": "a", "split": "later"}"#), "t")
            .expect_err("bad split");
        assert!(err.contains("field split must be train, dev (or validation) or test"), "{err}");
    }
}
