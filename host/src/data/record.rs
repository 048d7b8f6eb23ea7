//! A dataset record as it moves through the data stage, with what the plugins found
//! and the provenance of every annotation.

use serde::{Deserialize, Serialize};

use crate::plugin::RecordFailure;
use crate::plugin::types::{Document, Expansion, Mention};

/// One question with its context, annotations and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record id (the PubMed id for PubMedQA).
    pub id: String,
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
    /// The text the plugins saw: `question`, a blank line, `context`. Spans point into it.
    pub text: String,
    /// Concept mentions from the normalizers.
    #[serde(default)]
    pub mentions: Vec<Mention>,
    /// Abbreviation expansions from the disambiguators.
    #[serde(default)]
    pub expansions: Vec<Expansion>,
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
        let text = format!("{question}\n\n{context}");
        Self {
            id,
            question,
            context,
            answer,
            options: Vec::new(),
            messages: Vec::new(),
            meshes,
            long_answer: None,
            split: Split::default(),
            text,
            mentions: Vec::new(),
            expansions: Vec::new(),
            provenance: Provenance { source, plugins: Vec::new() },
            failures: Vec::new(),
            augmentation: None,
        }
    }

    /// A record an augmenter made from this one: `text` is split back into question and
    /// context at the first blank line, and for a chat it becomes the last user turn (the turn
    /// its text is); annotations are dropped (their spans no longer fit).
    pub fn derive(&self, index: usize, text: String, augmentation: Augmentation) -> Record {
        let (question, context) = match text.split_once("\n\n") {
            Some((q, c)) => (q.to_owned(), c.to_owned()),
            None => (text.clone(), String::new()),
        };
        let mut messages = self.messages.clone();
        if let Some(turn) = messages.iter_mut().rev().find(|m| m.role == Role::User) {
            turn.content = text.trim_end_matches('\n').to_owned();
        }
        let mut provenance = self.provenance.clone();
        provenance.plugins.push(augmentation.plugin.clone());
        Record {
            id: format!("{}#{}#{index}", self.id, augmentation.plugin.split('@').next().unwrap_or("augmenter")),
            question,
            context,
            answer: self.answer.clone(),
            options: self.options.clone(),
            messages,
            meshes: self.meshes.clone(),
            long_answer: self.long_answer.clone(),
            split: self.split,
            text,
            mentions: Vec::new(),
            expansions: Vec::new(),
            provenance,
            failures: Vec::new(),
            augmentation: Some(augmentation),
        }
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
        Document { id: self.id.clone(), text: self.text.clone(), metadata }
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

    /// An augmenter's text replaces a chat's last user turn (the turn the plugins saw) and
    /// leaves the other turns; a question's text is split back into question and context.
    #[test]
    fn a_derived_chat_carries_the_new_text_in_its_last_user_turn() {
        let turn = |role, content: &str| Message { role, content: content.into() };
        let mut chat = Record::new("c".into(), "How much?".into(), String::new(), None, vec![], "t".into());
        chat.messages =
            vec![turn(Role::User, "Hi"), turn(Role::Assistant, "Hello."), turn(Role::User, "How much?"), turn(Role::Assistant, "2 kg.")];
        let aug =
            Augmentation { source: "c".into(), plugin: "synonym-swap@0.1.0#ab".into(), settings: vec![], seed: 1, note: String::new() };
        let d = chat.derive(0, "How many kilograms?\n\n".into(), aug.clone());
        let contents: Vec<&str> = d.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["Hi", "Hello.", "How many kilograms?", "2 kg."]);
        assert_eq!((d.id.as_str(), d.question.as_str()), ("c#synonym-swap#0", "How many kilograms?"));
        let q = Record::new("q".into(), "Does MI recur?".into(), "In MI patients.".into(), Some("yes".into()), vec![], "t".into());
        let d = q.derive(1, "Does myocardial infarction recur?\n\nIn MI patients.".into(), aug);
        assert_eq!(
            (d.question.as_str(), d.context.as_str(), d.messages.len()),
            ("Does myocardial infarction recur?", "In MI patients.", 0)
        );
    }
}
