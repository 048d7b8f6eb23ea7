//! Classification metrics as scikit-learn defines them (the official PubMedQA evaluation uses
//! `accuracy_score` and `f1_score(average='macro')`): accuracy; per-class precision, recall,
//! F1 and support; their macro averages; the confusion matrix; and rare-concept accuracy
//! (accuracy on the references tagged `rare-concept`).
//!
//! Labels are the sorted union of true and predicted labels, as sklearn's default, unless the
//! `labels` setting fixes them (`yes,no,maybe`). A class never predicted has precision 0, a
//! class never true recall 0 (sklearn's `zero_division` result).
//!
//! Scores: `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`, `precision/<label>`,
//! `recall/<label>`, `f1/<label>`, `support/<label>`, `confusion/<true>/<predicted>`,
//! `rare_concept_count` and, when it is positive, `rare_concept_accuracy`.

use medtune_plugin_sdk::{register_metric, Metric, PluginError, Prediction, Reference, Score, Settings};

struct ClassificationMetrics {
    labels: Option<Vec<String>>,
}

fn score(name: impl Into<String>, value: f64) -> Score {
    Score { name: name.into(), value }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Metric for ClassificationMetrics {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let labels = settings
            .get("labels")
            .map(|l| l.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>());
        if labels.as_ref().is_some_and(Vec::is_empty) {
            return Err(PluginError::Config("labels is empty".into()));
        }
        Ok(Self { labels })
    }

    fn compute(&self, predictions: &[Prediction], references: &[Reference]) -> Result<Vec<Score>, PluginError> {
        if predictions.is_empty() {
            return Err(PluginError::InvalidInput("no predictions".into()));
        }
        for (i, (p, r)) in predictions.iter().zip(references).enumerate() {
            if p.id != r.id {
                return Err(PluginError::InvalidInput(format!("prediction {i} is for {} but reference {i} for {}", p.id, r.id)));
            }
        }
        let labels: Vec<String> = match &self.labels {
            Some(l) => l.clone(),
            None => {
                let mut l: Vec<String> =
                    predictions.iter().map(|p| p.label.clone()).chain(references.iter().map(|r| r.label.clone())).collect();
                l.sort();
                l.dedup();
                l
            }
        };
        let n = labels.len();
        let index = |s: &str| labels.iter().position(|l| l == s);
        let mut confusion = vec![vec![0usize; n]; n];
        for (p, r) in predictions.iter().zip(references) {
            if let (Some(t), Some(q)) = (index(&r.label), index(&p.label)) {
                confusion[t][q] += 1;
            }
        }
        let correct = predictions.iter().zip(references).filter(|(p, r)| p.label == r.label).count();
        let mut out = vec![score("accuracy", ratio(correct, predictions.len()))];
        let (mut sum_p, mut sum_r, mut sum_f) = (0.0, 0.0, 0.0);
        for (c, label) in labels.iter().enumerate() {
            let tp = confusion[c][c];
            let predicted: usize = (0..n).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let (p, r) = (ratio(tp, predicted), ratio(tp, support));
            let f = ratio(2 * tp, predicted + support);
            sum_p += p;
            sum_r += r;
            sum_f += f;
            out.extend([
                score(format!("precision/{label}"), p),
                score(format!("recall/{label}"), r),
                score(format!("f1/{label}"), f),
                score(format!("support/{label}"), support as f64),
            ]);
        }
        out.extend([
            score("macro_precision", sum_p / n as f64),
            score("macro_recall", sum_r / n as f64),
            score("macro_f1", sum_f / n as f64),
        ]);
        for (t, row) in confusion.iter().enumerate() {
            for (q, &count) in row.iter().enumerate() {
                out.push(score(format!("confusion/{}/{}", labels[t], labels[q]), count as f64));
            }
        }
        let rare: Vec<bool> = predictions
            .iter()
            .zip(references)
            .filter(|(_, r)| r.tags.iter().any(|t| t == "rare-concept"))
            .map(|(p, r)| p.label == r.label)
            .collect();
        out.push(score("rare_concept_count", rare.len() as f64));
        if !rare.is_empty() {
            out.push(score("rare_concept_accuracy", ratio(rare.iter().filter(|&&ok| ok).count(), rare.len())));
        }
        Ok(out)
    }
}

register_metric!(ClassificationMetrics,
    settings: { labels: string = "", "the label set, comma-separated (default: the labels seen)" });
