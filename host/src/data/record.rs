//! A dataset record as it moves through the data stage, with what the plugins found
//! and the provenance of every annotation.

use serde::{Deserialize, Serialize};

use crate::plugin::RecordFailure;
use crate::plugin::types::{Derived, Document, Expansion, Field, Mention, Span};

use super::annotated::{GoldMention, Relation};
use super::fields::{self, Part};

/// One question with its context, annotations and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record id (the PubMed id for PubMedQA).
    pub id: String,
    /// An annotated document's title (empty for other records).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// The question.
    pub question: String,
    /// The abstract (contexts joined by blank lines).
    pub context: String,
    /// The gold answer, if labelled: one of the task's labels (`yes`, `no`, `maybe` for
    /// PubMedQA), or an option's letter for a multiple-choice question.
    pub answer: Option<String>,
    /// A multiple-choice question's options, in letter order (empty for other records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// A chat's turns (chat and instruction records, for `generate` tasks; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// MeSH headings of the abstract.
    #[serde(default)]
    pub meshes: Vec<String>,
    /// The abstract's conclusion (PubMedQA's long answer), where the input has one. Only
    /// training reads it (`train.with_conclusions`); dev and test prompts never hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_answer: Option<String>,
    /// `train`, `dev` or `test`.
    pub split: Split,
    /// The text the plugins saw: every text field (`fields`), each after a blank line but the
    /// first. Spans point into it.
    pub text: String,
    /// The text fields in `text`: `question`, `context`, `option/A`..., `long-answer`, or a
    /// chat's `message/N/ROLE` (see [`Part`]).
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Concept mentions from the normalizers, each with the plugin that found it.
    #[serde(default)]
    pub mentions: Vec<Sourced<Mention>>,
    /// Abbreviation expansions from the disambiguators, each with the plugin that chose it.
    #[serde(default)]
    pub expansions: Vec<Sourced<Expansion>>,
    /// An annotated corpus's gold mentions, their spans in `text` (the `annotate` task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gold: Vec<GoldMention>,
    /// An annotated corpus's relations between concepts (BioCreative CDR's `CID`), kept as read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<Relation>,
    /// Where the record and its annotations come from.
    pub provenance: Provenance,
    /// Plugins that failed on this record; the record is kept.
    #[serde(default)]
    pub failures: Vec<RecordFailure>,
    /// For a record an augmenter made: from what, by whom, how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<Augmentation>,
}

/// One turn of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// Who speaks in a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person asking.
    User,
    /// The model: its turns are what a `generate` task learns to write.
    Assistant,
}

crate::config::display_as_value_name!(Role);

/// The split a record belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Training.
    #[default]
    Train,
    /// Development: model selection.
    Dev,
    /// Held out: reported once.
    Test,
}

impl Split {
    /// Every split, in the order outputs are written.
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];
}

crate::config::display_as_value_name!(Split);

/// How an augmented record was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// The id of the record it was made from.
    pub source: String,
    /// The augmenter, as `name@version#sha256-prefix`.
    pub plugin: String,
    /// The augmenter's settings.
    pub settings: Vec<(String, String)>,
    /// The seed it was given.
    pub seed: u64,
    /// What the augmenter says it changed.
    pub note: String,
}

/// An annotation with the plugin that made it; reads as the annotation itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sourced<T> {
    /// The annotation, its fields inline.
    #[serde(flatten)]
    pub value: T,
    /// The plugin, as `name@version#sha256` (the hash's first 12 digits).
    #[serde(default)]
    pub source: String,
}

impl<T> std::ops::Deref for Sourced<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// The plain annotations, as plugins further down the chain get them.
pub fn plain<T: Clone>(items: &[Sourced<T>]) -> Vec<T> {
    items.iter().map(|s| s.value.clone()).collect()
}

/// Where a record and its annotations come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The input file and the record's place in it.
    pub source: String,
    /// Every plugin that annotated the record, as `name@version` with its content hash.
    pub plugins: Vec<String>,
}

impl Record {
    /// A new record; `text` is built from question and context.
    pub fn new(id: String, question: String, context: String, answer: Option<String>, meshes: Vec<String>, source: String) -> Self {
        let mut record = Self {
            id,
            title: String::new(),
            question,
            context,
            answer,
            options: Vec::new(),
            messages: Vec::new(),
            meshes,
            long_answer: None,
            split: Split::default(),
            text: String::new(),
            fields: Vec::new(),
            mentions: Vec::new(),
            expansions: Vec::new(),
            gold: Vec::new(),
            relations: Vec::new(),
            provenance: Provenance { source, plugins: Vec::new() },
            failures: Vec::new(),
            augmentation: None,
        };
        record.compose(false);
        record
    }

    /// The record's text fields, in the order the plugins see them: a chat's turns, else the
    /// title, the question, the context, the options and (with `long_answer`) the explained
    /// answer.
    pub fn parts(&self, long_answer: bool) -> Vec<(Part, &str)> {
        if !self.messages.is_empty() {
            return self.messages.iter().enumerate().map(|(i, m)| (Part::Message(i, m.role), m.content.as_str())).collect();
        }
        let mut parts =
            vec![(Part::Title, self.title.as_str()), (Part::Question, self.question.as_str()), (Part::Context, self.context.as_str())];
        parts.extend(self.options.iter().enumerate().map(|(i, o)| (Part::Option(i), o.as_str())));
        parts.extend(self.long_answer.as_deref().filter(|_| long_answer).map(|a| (Part::LongAnswer, a)));
        parts
    }

    /// Writes `text` and `fields` from the record's parts, the explained answer among them
    /// with `long_answer` (after they are set or changed; annotations made on an earlier text
    /// no longer fit and must be dropped).
    pub fn compose(&mut self, long_answer: bool) {
        let (text, fields) = fields::compose(self.parts(long_answer));
        self.text = text;
        self.fields = fields;
    }

    /// Where `part` is in `text`, if the record has it.
    pub fn span_of(&self, part: Part) -> Option<Span> {
        let name = part.name();
        self.fields.iter().find(|f| f.name == name).map(|f| f.span)
    }

    /// Where the question is in `text`: the `question` field, or a chat's last user turn.
    pub fn question_span(&self) -> Option<Span> {
        self.span_of(Part::Question).or_else(|| {
            let last = self.messages.iter().rposition(|m| m.role == Role::User)?;
            self.span_of(Part::Message(last, Role::User))
        })
    }

    /// A record an augmenter made from this one: each of its fields (checked by the plugin
    /// host to be this record's, in order) replaces the part it names; a chat's question
    /// follows its last user turn. Annotations are dropped (their spans no longer fit).
    pub fn derive(&self, index: usize, derived: &Derived, augmentation: Augmentation) -> Result<Record, String> {
        // everything but the annotations, which are dropped (cloning them would be wasted work)
        let mut record = Record {
            id: String::new(),
            title: self.title.clone(),
            question: self.question.clone(),
            context: self.context.clone(),
            answer: self.answer.clone(),
            options: self.options.clone(),
            messages: self.messages.clone(),
            meshes: self.meshes.clone(),
            long_answer: self.long_answer.clone(),
            split: self.split,
            text: String::new(),
            fields: Vec::new(),
            mentions: Vec::new(),
            expansions: Vec::new(),
            gold: Vec::new(),
            relations: self.relations.clone(),
            provenance: self.provenance.clone(),
            failures: Vec::new(),
            augmentation: None,
        };
        for f in &derived.fields {
            let content = fields::slice(&derived.text, f.span);
            let slot = match Part::parse(&f.name) {
                Some(Part::Title) => &mut record.title,
                Some(Part::Question) => &mut record.question,
                Some(Part::Context) => &mut record.context,
                Some(Part::LongAnswer) => record.long_answer.get_or_insert_default(),
                Some(Part::Option(i)) if i < record.options.len() => &mut record.options[i],
                Some(Part::Message(i, role)) if record.messages.get(i).is_some_and(|m| m.role == role) => &mut record.messages[i].content,
                _ => return Err(format!("field {} is not a part of record {}", f.name, self.id)),
            };
            *slot = content;
        }
        if let Some(turn) = record.messages.iter().rev().find(|m| m.role == Role::User) {
            record.question = turn.content.clone();
        }
        record.compose(self.span_of(Part::LongAnswer).is_some());
        record.id = format!("{}#{}#{index}", self.id, augmentation.plugin.split('@').next().unwrap_or("augmenter"));
        record.provenance.plugins.push(augmentation.plugin.clone());
        record.augmentation = Some(augmentation);
        Ok(record)
    }

    /// The record as a plugin sees it.
    pub fn document(&self) -> Document {
        let mut metadata = vec![("split".to_owned(), self.split.to_string())];
        if let Some(a) = &self.answer {
            metadata.push(("answer".to_owned(), a.clone()));
        }
        if !self.meshes.is_empty() {
            metadata.push(("meshes".to_owned(), self.meshes.join("|")));
        }
        Document { id: self.id.clone(), text: self.text.clone(), fields: self.fields.clone(), metadata }
    }
}

/// Reads records the data stage wrote (one JSON record per line). A line that is not a
/// record is an error naming the file and line; the other lines still load.
pub fn read_jsonl(path: &std::path::Path) -> Result<(Vec<Record>, Vec<String>), std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push(r),
            Err(e) => errors.push(format!("{} line {}: {e}", path.display(), i + 1)),
        }
    }
    Ok((records, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(record: &Record, parts: &[(&str, &str)]) -> Derived {
        let (mut text, mut fields) = (String::new(), Vec::new());
        for (name, content) in parts {
            if !text.is_empty() {
                text.push_str(" | ");
            }
            let start = text.chars().count() as u32;
            text.push_str(content);
            fields.push(Field { name: (*name).into(), span: Span { start, end: text.chars().count() as u32 } });
        }
        assert_eq!(fields.len(), record.fields.len());
        Derived { text, fields, metadata: vec![], note: String::new() }
    }

    /// An augmenter's fields replace the parts they name, whatever it wrote between them;
    /// the new record's text is composed again from its parts.
    #[test]
    fn a_derived_record_takes_each_field_into_its_part() {
        let aug =
            Augmentation { source: "c".into(), plugin: "synonym-swap@0.2.0#ab".into(), settings: vec![], seed: 1, note: String::new() };
        let turn = |role, content: &str| Message { role, content: content.into() };
        let mut chat = Record::new("c".into(), "How much?".into(), String::new(), None, vec![], "t".into());
        chat.messages =
            vec![turn(Role::User, "Hi"), turn(Role::Assistant, "Hello."), turn(Role::User, "How much?"), turn(Role::Assistant, "2 kg.")];
        chat.compose(false);
        assert_eq!(chat.text, "Hi\n\nHello.\n\nHow much?\n\n2 kg.");
        assert_eq!(chat.question_span(), Some(Span { start: 12, end: 21 }));
        let d = derived(
            &chat,
            &[
                ("message/0/user", "Hi"),
                ("message/1/assistant", "Hello."),
                ("message/2/user", "How many kilograms?"),
                ("message/3/assistant", "2 kilograms."),
            ],
        );
        let d = chat.derive(0, &d, aug.clone()).expect("derived");
        let contents: Vec<&str> = d.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["Hi", "Hello.", "How many kilograms?", "2 kilograms."]);
        assert_eq!((d.id.as_str(), d.question.as_str()), ("c#synonym-swap#0", "How many kilograms?"));
        assert_eq!(d.text, "Hi\n\nHello.\n\nHow many kilograms?\n\n2 kilograms.");

        let mut q = Record::new("q".into(), "Does MI recur?".into(), "In MI patients.".into(), Some("A".into()), vec![], "t".into());
        q.options = vec!["MI".into(), "never".into()];
        q.long_answer = Some("MI recurs.".into());
        q.compose(true);
        let names: Vec<&str> = q.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["question", "context", "option/A", "option/B", "long-answer"]);
        let d = derived(
            &q,
            &[
                ("question", "Does myocardial infarction recur?"),
                ("context", "In MI patients."),
                ("option/A", "myocardial infarction"),
                ("option/B", "never"),
                ("long-answer", "It recurs."),
            ],
        );
        let d = q.derive(1, &d, aug.clone()).expect("derived");
        assert_eq!((d.question.as_str(), d.context.as_str()), ("Does myocardial infarction recur?", "In MI patients."));
        assert_eq!(
            (d.options[0].as_str(), d.long_answer.as_deref(), d.answer.as_deref()),
            ("myocardial infarction", Some("It recurs."), Some("A"))
        );

        let mut stray = derived(&q, &[("question", "a"), ("context", "b"), ("option/A", "c"), ("option/C", "d"), ("long-answer", "e")]);
        let err = q.derive(2, &stray, aug.clone()).expect_err("no option C");
        assert_eq!(err, "field option/C is not a part of record q");
        stray.fields[3].name = "message/0/user".into();
        assert!(q.derive(2, &stray, aug).is_err());
    }
}
