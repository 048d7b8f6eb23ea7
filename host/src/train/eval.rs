//! Evaluation: each question's answer is the most likely of ` yes`, ` no`, ` maybe` after the
//! prompt; the predictions go to the chain's metric plugins (accuracy, macro-F1, per-class
//! figures, confusion matrix, rare-concept accuracy), with the questions about rare concepts
//! tagged `rare-concept`.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{Result, Tensor};

use crate::artifacts::ScoredQuestion;
use crate::data::Record;
use crate::model::{Adapters, Llama};
use crate::plugin::PluginSet;
use crate::plugin::types::{Prediction, Reference};

use super::examples::Example;
use crate::prompt::LABELS;

/// The answer probabilities of `examples`, `batch` at a time.
pub fn score(
    model: &Llama,
    adapters: Option<&dyn Adapters>,
    examples: &[Example],
    label_tokens: &[u32; 3],
    batch: usize,
    pad: u32,
) -> Result<Vec<[f64; 3]>> {
    let device = model.device().clone();
    let labels = Tensor::new(label_tokens.as_slice(), &device)?;
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = super::batch::Batch::new(&refs, label_tokens, &[1.0; 3], pad, Default::default(), &device)?;
        let logits = model.logits_at(&b.ids, &b.last, adapters)?.index_select(&labels, 1)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        out.extend(probs.iter().map(|p| [f64::from(p[0]), f64::from(p[1]), f64::from(p[2])]));
    }
    Ok(out)
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
    let question_end = record.question.chars().count() as u32;
    record.mentions.iter().filter(|m| m.span.end <= question_end).any(|m| counts.get(&m.concept.id).copied().unwrap_or(0) <= max)
}

/// Predictions from probabilities (argmax; ties go to the earlier label).
pub fn predictions(examples: &[Example], probs: &[[f64; 3]], rare: &[bool]) -> Vec<ScoredQuestion> {
    examples
        .iter()
        .zip(probs)
        .zip(rare)
        .map(|((e, p), &rare_concept)| {
            let best = (0..3).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            ScoredQuestion {
                id: e.id.clone(),
                label: LABELS[e.label].into(),
                predicted: LABELS[best].into(),
                probabilities: *p,
                rare_concept,
            }
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
    let mut out = BTreeMap::new();
    let mut first = true;
    for plugin in set.plugins_mut().iter_mut() {
        if plugin.kind() != crate::plugin::types::PluginKind::Metric {
            continue;
        }
        let id = plugin.id();
        let scores = plugin
            .compute(&predictions, &references)
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
