//! Metrics of generated answers against their references, as the usual scripts define them:
//! exact match and token F1 from SQuAD's official evaluation (lower case, ASCII punctuation
//! removed, the articles `a`, `an`, `the` removed, whitespace collapsed; F1 over the bag of
//! tokens, SQuAD 2.0's rule when either side is empty) and ROUGE-L's F-measure from Google's
//! `rouge-score` (lower case, runs of anything but `a-z0-9` as separators, no stemming; the
//! longest common subsequence of tokens). No settings.
//!
//! Scores (means over the questions): `exact_match`, `token_f1`, `rouge_l`, and `count`.

use std::collections::HashMap;

use medtune_plugin_sdk::{Metric, PluginError, Prediction, Reference, Score, Settings, register_metric};

struct TextMetrics;

/// Python's `\w`: a Unicode letter or digit, or `_`.
fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The articles SQuAD removes, in its regular expression's order.
const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The article of `n` letters.
fn article(n: usize) -> &'static str {
    ARTICLES.iter().find(|a| a.len() == n).copied().unwrap_or_default()
}

/// SQuAD's `normalize_answer`, token by token.
fn squad_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    // re.sub(r'\b(a|an|the)\b', ' ', text)
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = i == 0 || !word(chars[i - 1]);
        let hit = ARTICLES.iter().map(|a| a.len()).find(|&n| {
            starts && i + n <= chars.len() && chars[i..i + n].iter().copied().eq(article(n).chars()) && (i + n == chars.len() || !word(chars[i + n]))
        });
        match hit {
            Some(n) => {
                out.push(' ');
                i += n;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out.split_whitespace().map(str::to_owned).collect()
}

fn exact_match(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(squad_tokens(prediction).join(" ") == squad_tokens(reference).join(" ")))
}

fn token_f1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (squad_tokens(prediction), squad_tokens(reference));
    if p.is_empty() || r.is_empty() {
        return f64::from(u8::from(p == r));
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &r {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()).filter(|c| **c > 0) {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (precision, recall) = (same as f64 / p.len() as f64, same as f64 / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// rouge-score's tokenizer without a stemmer.
fn rouge_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let spaced: String = lower.chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { ' ' }).collect();
    spaced.split_whitespace().map(str::to_owned).collect()
}

fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (rouge_tokens(prediction), rouge_tokens(reference));
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let mut row = vec![0usize; p.len() + 1];
    for rt in &r {
        let mut diagonal = 0;
        for (j, pt) in p.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if rt == pt { diagonal + 1 } else { row[j + 1].max(row[j]) };
            diagonal = up;
        }
    }
    let lcs = row[p.len()] as f64;
    let (precision, recall) = (lcs / p.len() as f64, lcs / r.len() as f64);
    if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) }
}

impl Metric for TextMetrics {
    fn new(_settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn compute(&self, predictions: &[Prediction], references: &[Reference]) -> Result<Vec<Score>, PluginError> {
        if predictions.is_empty() {
            return Err(PluginError::InvalidInput("no predictions".into()));
        }
        if predictions.len() != references.len() {
            return Err(PluginError::InvalidInput(format!("{} predictions for {} references", predictions.len(), references.len())));
        }
        let (mut em, mut f1, mut rl) = (0.0, 0.0, 0.0);
        for (i, (p, r)) in predictions.iter().zip(references).enumerate() {
            if p.id != r.id {
                return Err(PluginError::InvalidInput(format!("prediction {i} is for {} but reference {i} for {}", p.id, r.id)));
            }
            em += exact_match(&p.label, &r.label);
            f1 += token_f1(&p.label, &r.label);
            rl += rouge_l(&p.label, &r.label);
        }
        let n = predictions.len() as f64;
        let score = |name: &str, value: f64| Score { name: name.into(), value };
        Ok(vec![score("exact_match", em / n), score("token_f1", f1 / n), score("rouge_l", rl / n), score("count", n)])
    }
}

register_metric!(TextMetrics);
