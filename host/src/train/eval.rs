//! Evaluation: each question's answer is the most likely of the answers it offers after the
//! prompt (` yes`, ` no`, ` maybe` for PubMedQA); the predictions go to the chain's metric plugins (accuracy, macro-F1, per-class
//! figures, confusion matrix, rare-concept accuracy), with the questions about rare concepts
//! tagged `rare-concept`.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::Result;

use crate::artifacts::ScoredQuestion;
use crate::data::Record;
use crate::model::{Adapters, Llama};
use crate::plugin::PluginSet;
use crate::plugin::types::{Prediction, Reference};

use super::examples::Example;

/// The answer probabilities of `examples` (one per answer token, 0 for answers a question
/// does not offer), `batch` at a time.
pub fn score(
    model: &Llama,
    adapters: Option<&dyn Adapters>,
    examples: &[Example],
    label_tokens: &[u32],
    batch: usize,
    pad: u32,
) -> Result<Vec<Vec<f64>>> {
    let device = model.device().clone();
    let ones = vec![1.0; label_tokens.len()];
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = super::batch::Batch::new(&refs, label_tokens, &ones, pad, Default::default(), &device)?;
        let logits = b.answer_logits(&model.logits_at(&b.ids, &b.last, adapters)?)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        out.extend(probs.iter().map(|p| p.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()));
    }
    Ok(out)
}

/// The index of the most likely answer (ties go to the earlier label).
pub fn best(probs: &[f64]) -> usize {
    (0..probs.len()).fold(0, |b, i| if probs[i] > probs[b] { i } else { b })
}

/// Concepts of the training records and how many records mention each.
pub fn concept_counts(train: &[Record]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in train {
        let ids: HashSet<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
        for id in ids {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Whether the question of `record` (not its abstract) names a concept that at most `max`
/// training records mention.
pub fn is_rare(record: &Record, counts: &HashMap<String, usize>, max: usize) -> bool {
    let Some(q) = record.question_span() else { return false };
    record
        .mentions
        .iter()
        .filter(|m| q.start <= m.span.start && m.span.end <= q.end)
        .any(|m| counts.get(&m.concept.id).copied().unwrap_or(0) <= max)
}

/// Predictions from probabilities (argmax; ties go to the earlier label) under `labels`.
pub fn predictions(examples: &[Example], probs: &[Vec<f64>], rare: &[bool], labels: &[String]) -> Vec<ScoredQuestion> {
    examples
        .iter()
        .zip(probs)
        .zip(rare)
        .map(|((e, p), &rare_concept)| ScoredQuestion {
            id: e.id.clone(),
            label: labels[e.label].clone(),
            predicted: labels[best(p)].clone(),
            probabilities: p.clone(),
            rare_concept,
        })
        .collect()
}

/// Runs every metric plugin of `set` over `scored`; scores keyed `plugin-name/score`, plus the
/// plain score name for the first metric plugin.
pub fn metrics(set: &mut PluginSet, scored: &[ScoredQuestion]) -> std::result::Result<BTreeMap<String, f64>, String> {
    let predictions: Vec<Prediction> = scored.iter().map(|s| Prediction { id: s.id.clone(), label: s.predicted.clone() }).collect();
    let references: Vec<Reference> = scored
        .iter()
        .map(|s| Reference {
            id: s.id.clone(),
            label: s.label.clone(),
            tags: if s.rare_concept { vec!["rare-concept".into()] } else { vec![] },
        })
        .collect();
    metrics_of(set, &predictions, &references)
}

/// Runs every metric plugin of `set` over `predictions` and their `references`, keyed as
/// [`metrics`] keys them.
pub fn metrics_of(
    set: &mut PluginSet,
    predictions: &[Prediction],
    references: &[Reference],
) -> std::result::Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    let mut first = true;
    for plugin in set.plugins_mut().iter_mut() {
        if plugin.kind() != crate::plugin::types::PluginKind::Metric {
            continue;
        }
        let id = plugin.id();
        let scores = plugin
            .compute(predictions, references)
            .map_err(|e| format!("metric plugin {id}: {e}"))?
            .map_err(|e| format!("metric plugin {id}: {e}"))?;
        for s in scores {
            if first {
                out.insert(s.name.clone(), s.value);
            }
            out.insert(format!("{}/{}", plugin.info().name, s.name), s.value);
        }
        first = false;
    }
    if out.is_empty() {
        return Err("the plugin chain has no metric plugin".into());
    }
    Ok(out)
}
