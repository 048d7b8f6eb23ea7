//! Scores of an `annotate` task, as BioCreative measures concept annotation. The host gives
//! one prediction/reference pair per unit of comparison; the reference's first tag says which
//! measure the unit belongs to, a `type:T` tag its entity type:
//!
//! - `link`: one gold mention; the labels are the gold and the predicted concept ids
//!   (`|`-joined, sorted; empty when none was found). Scores `link/accuracy` and
//!   `link/accuracy/T`, `link/count/T`.
//! - `document`, `mention-exact`, `mention-overlap`: one concept of a document, or one mention;
//!   the labels are `present` or `absent` in the gold and in the prediction. Scores
//!   `M/precision`, `M/recall`, `M/f1`, `M/support` over every unit, and per type `M/recall/T`,
//!   `M/support/T`; `M/precision/T` and `M/f1/T` only when every predicted unit carries a type
//!   (a prediction of unknown type cannot be charged to one).
//!
//! A unit with an unknown measure, or a label other than `present`/`absent` under a
//! present/absent measure, is refused by name.

use std::collections::BTreeMap;

use medtune_plugin_sdk::{register_metric, Metric, PluginError, Prediction, Reference, Score, Settings};

struct AnnotationMetrics;

const PRESENCE: [&str; 3] = ["document", "mention-exact", "mention-overlap"];

fn score(name: impl Into<String>, value: f64) -> Score {
    Score { name: name.into(), value }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// True positives, false positives and false negatives.
#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn add(&mut self, gold: bool, predicted: bool) {
        match (gold, predicted) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => {}
        }
    }
}

fn present(label: &str, id: &str, side: &str) -> Result<bool, PluginError> {
    match label {
        "present" => Ok(true),
        "absent" => Ok(false),
        other => Err(PluginError::InvalidInput(format!("unit {id}: the {side} label {other:?} is neither present nor absent"))),
    }
}

impl Metric for AnnotationMetrics {
    fn new(_settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn compute(&self, predictions: &[Prediction], references: &[Reference]) -> Result<Vec<Score>, PluginError> {
        if predictions.is_empty() {
            return Err(PluginError::InvalidInput("no units to score".into()));
        }
        // link: (right, total) per type ("" for all)
        let mut link: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        // presence measures: counts over every unit, per type, and whether a prediction had no type
        let mut all: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut typed: BTreeMap<(&str, String), Counts> = BTreeMap::new();
        let mut untyped_prediction: BTreeMap<&str, bool> = BTreeMap::new();
        for (p, r) in predictions.iter().zip(references) {
            if p.id != r.id {
                return Err(PluginError::InvalidInput(format!("prediction {} is paired with reference {}", p.id, r.id)));
            }
            let measure = r.tags.first().map(String::as_str).unwrap_or("");
            let kind = r.tags.iter().find_map(|t| t.strip_prefix("type:"));
            if measure == "link" {
                let right = usize::from(p.label == r.label);
                for key in std::iter::once("").chain(kind) {
                    let e = link.entry(key.to_owned()).or_default();
                    *e = (e.0 + right, e.1 + 1);
                }
                continue;
            }
            let Some(&m) = PRESENCE.iter().find(|&&m| m == measure) else {
                return Err(PluginError::InvalidInput(format!(
                    "unit {}: unknown measure {measure:?} (link, document, mention-exact, mention-overlap)",
                    r.id
                )));
            };
            let (gold, predicted) = (present(&r.label, &r.id, "reference")?, present(&p.label, &p.id, "predicted")?);
            all.entry(m).or_default().add(gold, predicted);
            match kind {
                Some(k) => typed.entry((m, k.to_owned())).or_default().add(gold, predicted),
                None if predicted => drop(untyped_prediction.insert(m, true)),
                None => {}
            }
        }
        let mut out = Vec::new();
        for (kind, (right, total)) in &link {
            let suffix = if kind.is_empty() { String::new() } else { format!("/{kind}") };
            out.push(score(format!("link/accuracy{suffix}"), ratio(*right, *total)));
            out.push(score(format!("link/count{suffix}"), *total as f64));
        }
        for (m, c) in &all {
            out.extend([
                score(format!("{m}/precision"), ratio(c.tp, c.tp + c.fp)),
                score(format!("{m}/recall"), ratio(c.tp, c.tp + c.fn_)),
                score(format!("{m}/f1"), ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_)),
                score(format!("{m}/support"), (c.tp + c.fn_) as f64),
            ]);
        }
        for ((m, kind), c) in &typed {
            out.push(score(format!("{m}/recall/{kind}"), ratio(c.tp, c.tp + c.fn_)));
            out.push(score(format!("{m}/support/{kind}"), (c.tp + c.fn_) as f64));
            if !untyped_prediction.get(m).copied().unwrap_or(false) {
                out.push(score(format!("{m}/precision/{kind}"), ratio(c.tp, c.tp + c.fp)));
                out.push(score(format!("{m}/f1/{kind}"), ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_)));
            }
        }
        Ok(out)
    }
}

register_metric!(AnnotationMetrics);
