//! The prompt every engine and stage shares: PubMedQA's `Context: …\nQuestion: …\nAnswer
//! yes, no or maybe.\nAnswer:` (the Hugging Face baseline's, so the figures compare),
//! generalised to any label set ([`Choices`]) and to multiple-choice options (listed with their
//! letters after the question); the answers as label tokens; and the disambiguator's expansions
//! written after each abbreviation ("MI (myocardial infarction)"), the pipeline's contribution
//! to what the model reads. Training, evaluation, serving and the export's check all build
//! prompts here.

use crate::data::{PUBMEDQA_LABELS, Part, Record, letter};
use crate::model::{ChatMessage, ModelError, Tokenizer};

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

/// A choice task's answers as a model reads and writes them: the labels, and the token each
/// answer starts with after `Answer:`. Labels whose first tokens differ are answered as
/// themselves (` yes`, ` no`, ` maybe`); labels that share one (`ESI-1`, `ESI-2`) are listed
/// in the prompt with letters and answered by letter (`lettered`).
#[derive(Debug, Clone, PartialEq)]
pub struct Choices {
    /// The labels, in order.
    pub labels: Vec<String>,
    /// The first token of each answer.
    pub tokens: Vec<u32>,
    /// Whether the labels are listed with letters and answered by letter.
    pub lettered: bool,
}

impl Choices {
    /// The answers of `labels` under `tokenizer`.
    pub fn new(labels: &[String], tokenizer: &Tokenizer) -> Result<Self, ModelError> {
        let first = |text: &str| -> Result<u32, ModelError> {
            tokenizer
                .encode(&format!(" {text}"))?
                .first()
                .copied()
                .ok_or_else(|| ModelError::Tokenizer(format!("\" {text}\" has no token")))
        };
        let tokens = labels.iter().map(|l| first(l)).collect::<Result<Vec<_>, _>>()?;
        let distinct = tokens.iter().collect::<std::collections::HashSet<_>>().len() == tokens.len();
        if distinct {
            return Ok(Self { labels: labels.to_vec(), tokens, lettered: false });
        }
        if labels.len() > crate::data::MAX_OPTIONS {
            return Err(ModelError::Tokenizer(format!(
                "{} labels share first tokens and are too many to answer by letter (at most {})",
                labels.len(),
                crate::data::MAX_OPTIONS
            )));
        }
        let letters = (0..labels.len()).map(|i| first(&letter(i))).collect::<Result<Vec<_>, _>>()?;
        if letters.iter().collect::<std::collections::HashSet<_>>().len() != letters.len() {
            return Err(ModelError::Tokenizer(format!(
                "the answers {labels:?} share first tokens, and so do the letters A, B, ...: this tokenizer cannot tell them apart"
            )));
        }
        Ok(Self { labels: labels.to_vec(), tokens: letters, lettered: true })
    }

    /// PubMedQA's answers: yes, no, maybe.
    pub fn pubmedqa(tokenizer: &Tokenizer) -> Result<Self, ModelError> {
        Self::new(&PUBMEDQA_LABELS.map(str::to_owned), tokenizer)
    }

    /// `yes, no or maybe`: the answers a question with `n` of them offers (`A, B, C or D`).
    fn offered(&self, options: usize) -> String {
        let names: Vec<String> = match (options, self.lettered) {
            (0, false) => self.labels.clone(),
            (0, true) => (0..self.labels.len()).map(letter).collect(),
            (n, _) => (0..n).map(letter).collect(),
        };
        match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// What a prompt asks: a question, its context (may be empty) and, for a multiple-choice
/// question, its options.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The question.
    pub question: &'a str,
    /// The context (its paragraphs are joined into one).
    pub context: &'a str,
    /// The options, in letter order (empty unless multiple-choice).
    pub options: &'a [String],
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
            let start = (e.span.start as usize).min(chars.len());
            let before: String = chars[start.saturating_sub(e.long_form.chars().count() + 2)..start].iter().collect();
            !before.to_lowercase().contains(&e.long_form.to_lowercase())
        })
        .map(|e| (e.span.end as usize, format!(" ({})", e.long_form.to_lowercase())))
        .collect();
    inserts.sort_by_key(|(at, _)| *at);
    // each part is its own field of `text`: write the inserts that fall inside it
    let part = |part: Part, plain: &str| {
        let Some(span) = record.span_of(part) else { return plain.to_owned() };
        let (a, b) = ((span.start as usize).min(chars.len()), (span.end as usize).min(chars.len()));
        let mut out = String::with_capacity(plain.len() + 64);
        let mut next = inserts.iter().filter(|(at, _)| (a..=b).contains(at)).peekable();
        for (i, c) in chars[a..b].iter().enumerate() {
            while let Some((_, s)) = next.next_if(|(at, _)| *at == a + i) {
                out.push_str(s);
            }
            out.push(*c);
        }
        next.for_each(|(_, s)| out.push_str(s));
        out
    };
    (part(Part::Question, &record.question), part(Part::Context, &record.context))
}

/// The prompt's ids for `q`, the context cut to fit `max_len` (keeping its end with
/// `keep_end`): `Context: …\nQuestion: …\n[A. option …\n]Answer yes, no or maybe.\nAnswer:`
/// (no `Context:` line for a question without one).
pub fn prompt_ids(tokenizer: &Tokenizer, q: &Question, choices: &Choices, max_len: usize, keep_end: bool) -> Result<Vec<u32>, ModelError> {
    prompt_parts(tokenizer, q, None, choices, max_len, keep_end)
}

/// [`prompt_ids`] with an optional conclusion between the context and the question.
pub(crate) fn prompt_parts(
    tokenizer: &Tokenizer,
    q: &Question,
    conclusion: Option<&str>,
    choices: &Choices,
    max_len: usize,
    keep_end: bool,
) -> Result<Vec<u32>, ModelError> {
    let has_head = !q.context.trim().is_empty() || conclusion.is_some();
    let head = if has_head { tokenizer.encode("Context: ")? } else { Vec::new() };
    let mut middle = match conclusion {
        Some(c) => tokenizer.encode(&conclusion_text(c))?,
        None => Vec::new(),
    };
    middle.truncate(max_len / 2);
    let listed: String = match (q.options.is_empty(), choices.lettered) {
        (false, _) => q.options.iter().enumerate().map(|(i, o)| format!("\n{}. {}", letter(i), o.trim())).collect(),
        (true, true) => choices.labels.iter().enumerate().map(|(i, l)| format!("\n{}. {l}", letter(i))).collect(),
        (true, false) => String::new(),
    };
    let tail = tokenizer.encode(&format!(
        "{}Question: {}{listed}\nAnswer {}.\nAnswer:",
        if has_head { "\n" } else { "" },
        q.question,
        choices.offered(q.options.len())
    ))?;
    let room = max_len.saturating_sub(head.len() + middle.len() + tail.len() + 2);
    if room == 0 && has_head {
        return Err(ModelError::Tokenizer(match middle.len() {
            0 => format!("the question alone is {} tokens, over max_len {max_len}", tail.len()),
            n => format!("the question and conclusion are {} tokens, over max_len {max_len}", tail.len() + n),
        }));
    }
    if tail.len() > max_len {
        return Err(ModelError::Tokenizer(format!("the question and its options are {} tokens, over max_len {max_len}", tail.len())));
    }
    let mut body = if has_head { tokenizer.encode(&q.context.replace("\n\n", " "))? } else { Vec::new() };
    if body.len() > room {
        if keep_end {
            body.drain(..body.len() - room);
        } else {
            body.truncate(room);
        }
    }
    Ok([head, body, middle, tail].concat())
}

/// The user's turn for a question and its context (`medtune ask` writes it the same way).
pub fn user_question(question: &str, context: &str) -> String {
    match context.trim() {
        "" => question.to_owned(),
        c => format!("Context: {c}\n\nQuestion: {question}"),
    }
}

/// The chat a record teaches in a `generate` task: its own turns, or for a question with an
/// answer, the question (and context) from the user and the answer from the assistant, with its
/// explanation after it when the record has one (`Yes. <the abstract's conclusion>`).
pub fn record_chat(record: &Record) -> Result<Vec<ChatMessage>, String> {
    if !record.messages.is_empty() {
        return Ok(record.messages.iter().map(|m| ChatMessage { role: m.role.to_string(), content: m.content.clone() }).collect());
    }
    let answer = record.answer.as_deref().map(str::trim).filter(|a| !a.is_empty()).ok_or("has no answer to learn")?;
    let mut decision: Vec<char> = answer.chars().collect();
    if let Some(c) = decision.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    let decision: String = decision.into_iter().collect();
    let content = match record.long_answer.as_deref().map(str::trim) {
        Some(why) if !why.is_empty() => format!("{decision}. {why}"),
        _ => format!("{decision}."),
    };
    Ok(vec![
        ChatMessage { role: "user".into(), content: user_question(&record.question, &record.context) },
        ChatMessage { role: "assistant".into(), content },
    ])
}

/// A chat's token ids as the model's template writes it, and which of them are targets: the
/// assistant turns' tokens, end of turn included (everything else is context the loss never
/// counts). Cut to `max_len`; a chat whose first answer starts beyond it is an error.
pub fn chat_sequence(tokenizer: &Tokenizer, messages: &[ChatMessage], max_len: usize) -> Result<(Vec<u32>, Vec<bool>), ModelError> {
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    let mut push = |text: &str, target: bool| -> Result<(), ModelError> {
        let piece = tokenizer.encode(text)?;
        targets.extend(std::iter::repeat_n(target, piece.len()));
        ids.extend(piece);
        Ok(())
    };
    let mut done = String::new();
    for k in (0..messages.len()).filter(|&k| messages[k].role == "assistant") {
        let before = tokenizer.render_chat(&messages[..k], true)?;
        let through = tokenizer.render_chat(&messages[..=k], false)?;
        let (Some(context), Some(answer)) = (before.strip_prefix(done.as_str()), through.strip_prefix(before.as_str())) else {
            return Err(ModelError::Tokenizer(
                "the chat template does not write the start of a chat the same way as the chat grows, so the answers cannot be told apart"
                    .into(),
            ));
        };
        push(context, false)?;
        push(answer, true)?;
        done = through;
    }
    if ids.len() > max_len {
        ids.truncate(max_len);
        targets.truncate(max_len);
    }
    if !targets.iter().any(|&t| t) {
        return Err(ModelError::Tokenizer(format!("the chat's first answer starts after max_len {max_len} tokens")));
    }
    Ok((ids, targets))
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
        let mi = |start, end| crate::data::Sourced {
            value: Expansion {
                span: Span { start, end },
                abbreviation: "MI".into(),
                long_form: "Myocardial infarction".into(),
                confidence: 0.9,
            },
            source: "abbreviation-disambiguator@0.1.0#0123456789ab".into(),
        };
        r.expansions = vec![mi(5, 7), mi(24, 26)];
        let (q, c) = expanded(&r);
        assert_eq!(q, "Does MI (myocardial infarction) raise risk?");
        assert_eq!(c, "In MI patients, MI recurs.");
        // a question of several paragraphs stays whole
        let r = Record::new("2".into(), "Context: A.\n\nQuestion: B?".into(), String::new(), None, vec![], "t".into());
        assert_eq!(expanded(&r), ("Context: A.\n\nQuestion: B?".to_owned(), String::new()));
    }
}
