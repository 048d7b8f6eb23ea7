//! Generation with the KV cache (greedy, temperature, top-p; stop tokens and stop strings;
//! log-probabilities; cancellation and a deadline checked at every token; a callback per piece
//! of text), and PubMedQA-style answers: the probabilities of yes, no and maybe as the first
//! word.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::llama::{Cache, Llama};
use super::tokenizer::Tokenizer;
use super::{CandleContext, ModelError};

/// How to sample.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 for greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling (with a temperature > 0).
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    pub seed: u64,
    /// Texts that end the generation where they appear (not part of the text).
    pub stop: Vec<String>,
    /// Log-probabilities of the chosen tokens, with this many most likely alternatives each;
    /// `None`: none.
    pub top_logprobs: Option<usize>,
    /// Stops the generation from outside (checked before every token).
    pub cancel: Cancel,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: None,
            seed: 0,
            stop: Vec::new(),
            top_logprobs: None,
            cancel: Cancel::default(),
        }
    }
}

/// A flag that stops a generation (the client went away) and a deadline; clones share the
/// flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// A token that also stops at `deadline`.
    pub fn with_deadline(deadline: Instant) -> Self {
        Self { flag: Arc::default(), deadline: Some(deadline) }
    }

    /// Stops the generations that hold a clone of this token, at their next token.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Why a generation must stop now, if it must.
    pub fn reason(&self) -> Option<Finish> {
        if self.flag.load(Ordering::Relaxed) {
            Some(Finish::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Finish::TimedOut)
        } else {
            None
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or a stop string.
    Stop,
    /// `max_new_tokens`, or the model's context.
    Length,
    /// [`Cancel::cancel`].
    Cancelled,
    /// The [`Cancel`] deadline passed.
    TimedOut,
}

/// One generated token's log-probability, and the most likely tokens at its place.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log-probability under the model (before temperature and top-p).
    pub logprob: f32,
    /// The most likely tokens there, most likely first: text and log-probability.
    pub top: Vec<(String, f32)>,
}

/// What a generation produced, and how fast.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (stop token and stop string excluded).
    pub text: String,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating.
    pub generate_secs: f64,
    /// Why it ended.
    pub finish: Finish,
    /// Per generated token, when asked for ([`GenerateOptions::top_logprobs`]).
    pub logprobs: Vec<TokenLogprob>,
}

/// Generates a continuation of `prompt`; `on_text` gets each new piece of text as it appears,
/// with the log-probabilities of the tokens generated since the previous piece (when asked
/// for). Text that may be the start of a stop string is held back until it is not.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &GenerateOptions,
    on_text: impl FnMut(&str, &[TokenLogprob]),
) -> Result<Generation, ModelError> {
    let mut cache = Cache::new(model);
    let limit = model.config().max_sequence();
    generate_with(tokenizer, prompt, opts, limit, |ids| last_logits(model, ids, &mut cache), on_text)
}

/// The decoding loop over any engine: `step` feeds token ids (the prompt, then one token at a
/// time) and returns the last position's logits; `limit` is the longest sequence.
pub fn generate_with(
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &GenerateOptions,
    limit: usize,
    mut step: impl FnMut(&[u32]) -> Result<Tensor, ModelError>,
    mut on_text: impl FnMut(&str, &[TokenLogprob]),
) -> Result<Generation, ModelError> {
    let ids = tokenizer.encode(prompt)?;
    let mut decoder = Decoder::new(tokenizer, opts, ids.len(), limit);
    if decoder.cancelled() {
        return Ok(decoder.into_generation(&mut on_text));
    }
    let mut logits = step(&ids)?;
    decoder.prompt_done();
    while let Some(next) = decoder.accept(&logits, &mut on_text)? {
        logits = step(&[next])?;
    }
    Ok(decoder.into_generation(&mut on_text))
}

/// One sequence's decoding, whatever runs the model: sampling, stop tokens and stop strings,
/// log-probabilities, the text shown so far, cancellation. [`generate_with`] drives one;
/// a batched server drives many, one model step for all.
pub struct Decoder<'t> {
    tokenizer: &'t Tokenizer,
    opts: GenerateOptions,
    sampler: LogitsProcessor,
    prompt_tokens: usize,
    limit: usize,
    out: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    text: String,
    shown: usize,
    shown_logprobs: usize,
    finish: Option<Finish>,
    started: Instant,
    prompt_secs: f64,
}

impl<'t> Decoder<'t> {
    /// A decoder for a prompt of `prompt_tokens` tokens; `limit` is the longest sequence.
    pub fn new(tokenizer: &'t Tokenizer, opts: &GenerateOptions, prompt_tokens: usize, limit: usize) -> Self {
        let sampling = match (opts.temperature, opts.top_p) {
            (t, _) if t <= 0.0 => Sampling::ArgMax,
            (t, Some(p)) => Sampling::TopP { p, temperature: t },
            (t, None) => Sampling::All { temperature: t },
        };
        Self {
            tokenizer,
            opts: opts.clone(),
            sampler: LogitsProcessor::from_sampling(opts.seed, sampling),
            prompt_tokens,
            limit,
            out: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            shown: 0,
            shown_logprobs: 0,
            finish: None,
            started: Instant::now(),
            prompt_secs: 0.0,
        }
    }

    /// Whether the generation must stop before the model runs again (cancelled, or past its
    /// deadline); it is then finished.
    pub fn cancelled(&mut self) -> bool {
        if let Some(reason) = self.opts.cancel.reason() {
            self.finish.get_or_insert(reason);
        }
        self.finish.is_some()
    }

    /// The prompt has been read: the time so far is the prompt's.
    pub fn prompt_done(&mut self) {
        self.prompt_secs = self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
    }

    /// Takes the logits after the last token fed: samples the next token and shows the text
    /// it completes. Returns the token to feed next, or `None` when the generation is over.
    pub fn accept(&mut self, logits: &Tensor, on_text: &mut impl FnMut(&str, &[TokenLogprob])) -> Result<Option<u32>, ModelError> {
        if self.out.len() >= self.opts.max_new_tokens {
            self.finish.get_or_insert(Finish::Length);
        }
        if self.finish.is_some() || self.cancelled() {
            return Ok(None);
        }
        let next = self.sampler.sample(logits).ctx(|| "sampling".into())?;
        if self.tokenizer.stop_ids.contains(&next) {
            self.finish = Some(Finish::Stop);
            return Ok(None);
        }
        if let Some(k) = self.opts.top_logprobs {
            self.logprobs.push(token_logprob(self.tokenizer, logits, next, k)?);
        }
        self.out.push(next);
        self.text = self.tokenizer.decode(&self.out)?;
        if let Some(at) = first_stop(&self.text, &self.opts.stop, self.shown) {
            self.text.truncate(at);
            self.finish = Some(Finish::Stop);
            return Ok(None);
        }
        let safe = self.text.len() - held_back(&self.text, &self.opts.stop);
        if safe > self.shown && self.text.is_char_boundary(safe) && !self.text[..safe].ends_with('\u{fffd}') {
            on_text(&self.text[self.shown..safe], &self.logprobs[self.shown_logprobs..]);
            (self.shown, self.shown_logprobs) = (safe, self.logprobs.len());
        }
        if self.prompt_tokens + self.out.len() >= self.limit || self.out.len() >= self.opts.max_new_tokens {
            self.finish = Some(Finish::Length);
            return Ok(None);
        }
        Ok(Some(next))
    }

    /// The generation, after the text still held back is shown.
    pub fn into_generation(self, on_text: &mut impl FnMut(&str, &[TokenLogprob])) -> Generation {
        if self.text.len() > self.shown || self.logprobs.len() > self.shown_logprobs {
            on_text(&self.text[self.shown.min(self.text.len())..], &self.logprobs[self.shown_logprobs..]);
        }
        Generation {
            generated_tokens: self.out.len(),
            text: self.text,
            prompt_tokens: self.prompt_tokens,
            prompt_secs: self.prompt_secs,
            generate_secs: if self.out.is_empty() && self.prompt_secs == 0.0 { 0.0 } else { self.started.elapsed().as_secs_f64() },
            finish: self.finish.unwrap_or(Finish::Length),
            logprobs: self.logprobs,
        }
    }
}

/// Where the first stop string starts in `text`, looking only where a new one can be: from
/// a stop string's length before `shown` (what was shown had none).
fn first_stop(text: &str, stops: &[String], shown: usize) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            let mut from = shown.saturating_sub(s.len());
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            text[from..].find(s.as_str()).map(|i| from + i)
        })
        .min()
}

/// How many bytes at the end of `text` could be the start of a stop string (held back from
/// the callback until the next tokens say).
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .map(|s| (1..s.len().min(text.len() + 1)).rev().find(|&n| text.as_bytes().ends_with(&s.as_bytes()[..n])).unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// The log-probability of `chosen` after `logits`, and the `k` most likely tokens there.
fn token_logprob(tokenizer: &Tokenizer, logits: &Tensor, chosen: u32, k: usize) -> Result<TokenLogprob, ModelError> {
    let logits: Vec<f32> =
        logits.to_dtype(candle_core::DType::F32).and_then(|l| l.to_vec1()).ctx(|| "logits for log-probabilities".into())?;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(order.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    }
    order.truncate(k);
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let top = order.iter().map(|&t| Ok((tokenizer.decode(&[t])?, logits[t as usize] - log_sum))).collect::<Result<_, ModelError>>()?;
    Ok(TokenLogprob { token: tokenizer.decode(&[chosen])?, logprob: logits[chosen as usize] - log_sum, top })
}

/// Logits of the last position after feeding `ids`.
fn last_logits(model: &Llama, ids: &[u32], cache: &mut Cache) -> Result<Tensor, ModelError> {
    let input = Tensor::new(ids, model.device()).and_then(|t| t.unsqueeze(0)).ctx(|| "input ids".into())?;
    let logits = model.forward(&input, cache).ctx(|| format!("forward pass over {} tokens", ids.len()))?;
    logits.squeeze(0).and_then(|l| l.get(ids.len() - 1)).ctx(|| "last logits".into())
}

/// Probabilities of `yes`, `no` and `maybe` (any capitalization the vocabulary has as one
/// token) as the first token after `prompt`, renormalized over the three answers.
pub fn answer_probabilities(model: &Llama, tokenizer: &Tokenizer, prompt: &str) -> Result<[(String, f64); 3], ModelError> {
    let ids = tokenizer.encode(prompt)?;
    let mut cache = Cache::new(model);
    let logits = last_logits(model, &ids, &mut cache)?;
    answer_probabilities_from(&logits, tokenizer)
}

/// [`answer_probabilities`] from the logits of the position after the prompt.
pub fn answer_probabilities_from(logits: &Tensor, tokenizer: &Tokenizer) -> Result<[(String, f64); 3], ModelError> {
    let probs = candle_nn::ops::softmax(logits, D::Minus1).and_then(|p| p.to_vec1::<f32>()).ctx(|| "softmax".into())?;
    let mut out = [("yes".to_owned(), 0.0), ("no".to_owned(), 0.0), ("maybe".to_owned(), 0.0)];
    for (label, p) in out.iter_mut() {
        let forms = [label.clone(), capitalize(label), format!(" {label}"), format!(" {}", capitalize(label))];
        *p = forms.iter().filter_map(|f| tokenizer.token_id(&f.replace(' ', "Ġ"))).map(|id| f64::from(probs[id as usize])).sum();
    }
    let total: f64 = out.iter().map(|(_, p)| p).sum();
    if total > 0.0 {
        out.iter_mut().for_each(|(_, p)| *p /= total);
    }
    Ok(out)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_found_once_and_their_starts_held_back() {
        let stops = vec!["\n\n".to_owned(), "END".to_owned()];
        assert_eq!(first_stop("abc\n\ndef", &stops, 0), Some(3));
        // only where a new stop can start: the shown text had none
        assert_eq!(first_stop("abEND", &stops, 3), Some(2));
        assert_eq!(first_stop("ab EN", &stops, 0), None);
        assert_eq!(held_back("ab EN", &stops), 2);
        assert_eq!(held_back("ab\n", &stops), 1);
        assert_eq!(held_back("abc", &stops), 0);
        assert_eq!(held_back("é", &["éa".to_owned()]), 2);
        assert_eq!(held_back("x", &[]), 0);
    }

    #[test]
    fn a_cancel_token_says_why() {
        let c = Cancel::default();
        assert_eq!(c.reason(), None);
        let clone = c.clone();
        c.cancel();
        assert_eq!(clone.reason(), Some(Finish::Cancelled));
        assert_eq!(Cancel::with_deadline(Instant::now()).reason(), Some(Finish::TimedOut));
    }
}
