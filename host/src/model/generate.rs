//! Generation with the KV cache (greedy, temperature, top-p; stop tokens; a token callback),
//! and PubMedQA-style answers: the probabilities of yes, no and maybe as the first word.

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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_p: None, seed: 0 }
    }
}

/// What a generation produced, and how fast.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (stop token excluded).
    pub text: String,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating.
    pub generate_secs: f64,
    /// Whether a stop token ended it (else `max_new_tokens` did).
    pub stopped: bool,
}

/// Generates a continuation of `prompt`; `on_text` gets each new piece of text as it appears.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &GenerateOptions,
    on_text: impl FnMut(&str),
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
    mut on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let ids = tokenizer.encode(prompt)?;
    let sampling = match (opts.temperature, opts.top_p) {
        (t, _) if t <= 0.0 => Sampling::ArgMax,
        (t, Some(p)) => Sampling::TopP { p, temperature: t },
        (t, None) => Sampling::All { temperature: t },
    };
    let mut sampler = LogitsProcessor::from_sampling(opts.seed, sampling);
    let start = Instant::now();
    let mut logits = step(&ids)?;
    let prompt_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut out: Vec<u32> = Vec::new();
    let mut shown = 0;
    let mut stopped = false;
    while out.len() < opts.max_new_tokens {
        let next = sampler.sample(&logits).ctx(|| "sampling".into())?;
        if tokenizer.stop_ids.contains(&next) {
            stopped = true;
            break;
        }
        out.push(next);
        let text = tokenizer.decode(&out)?;
        if text.len() > shown && !text.ends_with('\u{fffd}') {
            on_text(&text[shown..]);
            shown = text.len();
        }
        if ids.len() + out.len() >= limit {
            break;
        }
        logits = step(&[next])?;
    }
    let text = tokenizer.decode(&out)?;
    if text.len() > shown {
        on_text(&text[shown..]);
    }
    Ok(Generation {
        text,
        prompt_tokens: ids.len(),
        generated_tokens: out.len(),
        prompt_secs,
        generate_secs: start.elapsed().as_secs_f64(),
        stopped,
    })
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
