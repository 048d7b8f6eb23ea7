//! The prompt every engine and stage shares: PubMedQA's `Context: …\nQuestion: …\nAnswer
//! yes, no or maybe.\nAnswer:` (the Hugging Face baseline's, so the figures compare), the
//! answers as label tokens, and the disambiguator's expansions written after each
//! abbreviation ("MI (myocardial infarction)"), the pipeline's contribution to what the model
//! reads. Training, evaluation, serving and the export's check all build prompts here.

use crate::data::Record;
use crate::model::{ModelError, Tokenizer};

/// The answers, in label order.
pub const LABELS: [&str; 3] = ["yes", "no", "maybe"];

/// How prompts are made.
#[derive(Debug, Clone, Copy)]
pub struct PromptOptions {
    /// Longest prompt in tokens.
    pub max_len: usize,
    /// Write expansions after abbreviations.
    pub expand: bool,
    /// Keep the end of a context that is too long (its results) rather than its start.
    pub keep_end: bool,
}

impl PromptOptions {
    /// The options a training config sets (or the defaults without one).
    pub fn of(t: Option<&crate::config::TrainConfig>) -> Self {
        t.map_or(Self { max_len: 512, expand: true, keep_end: false }, |t| Self {
            max_len: t.max_len,
            expand: t.expand_abbreviations,
            keep_end: t.context_keep == crate::config::ContextKeep::End,
        })
    }
}

/// The token of each answer as it follows `Answer:` (` yes`, ` no`, ` maybe`).
pub fn label_tokens(tokenizer: &Tokenizer) -> Result<[u32; 3], ModelError> {
    let mut out = [0; 3];
    for (slot, label) in out.iter_mut().zip(LABELS) {
        let ids = tokenizer.encode(&format!(" {label}"))?;
        match ids.as_slice() {
            [id] => *slot = *id,
            _ => return Err(ModelError::Tokenizer(format!("\" {label}\" is not one token ({ids:?})"))),
        }
    }
    Ok(out)
}

/// The record's question and context with each confident expansion written after its
/// abbreviation (once per abbreviation, where the long form is not already next to it).
pub fn expanded(record: &Record) -> (String, String) {
    let chars: Vec<char> = record.text.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let mut inserts: Vec<(usize, String)> = record
        .expansions
        .iter()
        .filter(|e| e.confidence >= 0.5 && seen.insert(e.abbreviation.clone()))
        .filter(|e| {
            let start = e.span.start as usize;
            let before: String = chars[start.saturating_sub(e.long_form.chars().count() + 2)..start.min(chars.len())].iter().collect();
            !before.to_lowercase().contains(&e.long_form.to_lowercase())
        })
        .map(|e| (e.span.end as usize, format!(" ({})", e.long_form.to_lowercase())))
        .collect();
    inserts.sort_by_key(|(at, _)| *at);
    // `text` is the question, a blank line, the context: split where the question ends
    let boundary = record.question.chars().count();
    let mut out = String::with_capacity(record.text.len() + 64);
    let mut split = None;
    let mut next = inserts.iter().peekable();
    for (i, c) in chars.iter().enumerate() {
        while let Some((_, s)) = next.next_if(|(at, _)| *at == i) {
            out.push_str(s);
        }
        if i == boundary {
            split = Some(out.len());
        }
        out.push(*c);
    }
    next.for_each(|(_, s)| out.push_str(s));
    let at = split.unwrap_or(out.len());
    (out[..at].to_owned(), out[at..].trim_start_matches('\n').to_owned())
}

/// The prompt's ids for a question and context (its paragraphs joined into one), the context
/// cut to fit `max_len` (keeping its end with `keep_end`).
pub fn prompt_ids(tokenizer: &Tokenizer, question: &str, context: &str, max_len: usize, keep_end: bool) -> Result<Vec<u32>, ModelError> {
    prompt_parts(tokenizer, question, context, None, max_len, keep_end)
}

/// [`prompt_ids`] with an optional conclusion between the context and the question.
pub(crate) fn prompt_parts(
    tokenizer: &Tokenizer,
    question: &str,
    context: &str,
    conclusion: Option<&str>,
    max_len: usize,
    keep_end: bool,
) -> Result<Vec<u32>, ModelError> {
    let head = tokenizer.encode("Context: ")?;
    let mut middle = match conclusion {
        Some(c) => tokenizer.encode(&conclusion_text(c))?,
        None => Vec::new(),
    };
    middle.truncate(max_len / 2);
    let tail = tokenizer.encode(&format!("\nQuestion: {question}\nAnswer yes, no or maybe.\nAnswer:"))?;
    let room = max_len.saturating_sub(head.len() + middle.len() + tail.len() + 2);
    if room == 0 {
        return Err(ModelError::Tokenizer(match middle.len() {
            0 => format!("the question alone is {} tokens, over max_len {max_len}", tail.len()),
            n => format!("the question and conclusion are {} tokens, over max_len {max_len}", tail.len() + n),
        }));
    }
    let mut body = tokenizer.encode(&context.replace("\n\n", " "))?;
    if body.len() > room {
        if keep_end {
            body.drain(..body.len() - room);
        } else {
            body.truncate(room);
        }
    }
    Ok([head, body, middle, tail].concat())
}

/// A conclusion as it is written, in a twin's prompt or after an answer.
pub(crate) fn conclusion_text(conclusion: &str) -> String {
    format!("\nConclusion: {}", conclusion.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Expansion, Span};

    #[test]
    fn expansions_are_written_after_their_first_abbreviation() {
        let mut r = Record::new(
            "1".into(),
            "Does MI raise risk?".into(),
            "In MI patients, MI recurs.".into(),
            Some("yes".into()),
            vec![],
            "t".into(),
        );
        r.expansions = vec![
            Expansion {
                span: Span { start: 5, end: 7 },
                abbreviation: "MI".into(),
                long_form: "Myocardial infarction".into(),
                confidence: 0.9,
            },
            Expansion {
                span: Span { start: 24, end: 26 },
                abbreviation: "MI".into(),
                long_form: "Myocardial infarction".into(),
                confidence: 0.9,
            },
        ];
        let (q, c) = expanded(&r);
        assert_eq!(q, "Does MI (myocardial infarction) raise risk?");
        assert_eq!(c, "In MI patients, MI recurs.");
        // a question of several paragraphs stays whole
        let r = Record::new("2".into(), "Context: A.\n\nQuestion: B?".into(), String::new(), None, vec![], "t".into());
        assert_eq!(expanded(&r), ("Context: A.\n\nQuestion: B?".to_owned(), String::new()));
    }
}
