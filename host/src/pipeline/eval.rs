//! The evaluation stage: a split's questions scored by the model (adapter merged, or the
//! base), the predictions through the metric plugins, written to `runs/<name>/eval/` (or
//! `eval-base/`) as `predictions.jsonl` and `scores.json`.

use std::path::PathBuf;

use super::{Context, PipelineError, Progress, Result, StageResult, load_model, merge_adapter};
use crate::artifacts::{self, EvalScores, MetricPluginRef};
use crate::config::Config;
use crate::data::read_jsonl;
use crate::plugin::types::PluginKind;
use crate::plugin::{PluginEngine, PluginSet, Sandbox, SlotSpec};
use crate::train::{eval, examples};

/// Which model to evaluate.
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// The adapter (default: `runs/<name>/adapter`).
    pub adapter: Option<PathBuf>,
    /// The base model without an adapter (zero-shot).
    pub base: bool,
}

/// Scores `config`'s evaluation split with the model `request` names; writes and returns the
/// scores.
pub fn evaluate(config: &Config, request: &EvalRequest, progress: &mut dyn Progress) -> Result<EvalScores> {
    let adapter = if request.base { None } else { Some(request.adapter.clone().unwrap_or_else(|| config.run_dir().join("adapter"))) };
    if let Some(a) = &adapter
        && !a.join("adapter_config.json").is_file()
    {
        return Err(PipelineError::Stopped(format!(
            "{}: no adapter there; train first (`medtune train --config {}`) or pass --base",
            a.display(),
            config.path.display()
        )));
    }
    let e = config.eval.clone().unwrap_or_default();
    let t = config.train.clone();
    let prompts = crate::prompt::PromptOptions::of(t.as_ref());
    let batch = t.as_ref().map_or(8, |t| t.batch_size.max(8));
    let (model_path, mut m) = load_model(config)?;
    if let Some(dir) = &adapter {
        merge_adapter(&mut m, dir)?;
    }
    let split_path = config.work_dir().join(format!("data/processed/{}.jsonl", e.split));
    crate::artifacts::DataManifest::of(config).map_err(PipelineError::Stopped)?;
    let (records, mut problems) = read_jsonl(&split_path)
        .context(|| format!("{}: run the data stage first (`medtune data --config {}`)", split_path.display(), config.path.display()))?;
    let train_path = config.work_dir().join("data/processed/train.jsonl");
    let (train_records, _) = read_jsonl(&train_path).context(|| format!("reading {}", train_path.display()))?;
    let counts = eval::concept_counts(&train_records);
    let labels = crate::artifacts::TaskLabels::of(config).labels;
    let choices = crate::prompt::Choices::new(&labels, &m.tokenizer).context(|| "the answer tokens".into())?;
    let mut exs = Vec::new();
    let mut rare = Vec::new();
    for r in records.iter().take(if e.limit > 0 { e.limit } else { usize::MAX }) {
        match examples::example(r, &m.tokenizer, prompts, &choices) {
            Ok(x) => {
                rare.push(eval::is_rare(r, &counts, e.rare_max_count));
                exs.push(x);
            }
            Err(err) => problems.push(err.to_string()),
        }
    }
    if exs.is_empty() {
        return Err(PipelineError::Stopped(format!("{}: no question to evaluate", split_path.display())));
    }
    let pad = m.tokenizer.token_id("<|endoftext|>").unwrap_or(0);
    let started = std::time::Instant::now();
    let mut probs = Vec::with_capacity(exs.len());
    for chunk in exs.chunks(batch) {
        probs.extend(eval::score(&m.llama, None, chunk, &choices.tokens, batch, pad).context(|| "scoring".into())?);
        progress.eval_progress(probs.len(), exs.len());
    }
    let seconds = started.elapsed().as_secs_f64();
    let scored = eval::predictions(&exs, &probs, &rare, &labels);
    let mut set = metric_plugins(config, &labels)?;
    let scores = eval::metrics(&mut set, &scored).map_err(PipelineError::Stopped)?;
    let dir = config.run_dir().join(if adapter.is_some() { "eval" } else { "eval-base" });
    let mut rows = String::new();
    for s in &scored {
        rows.push_str(&serde_json::to_string(s).unwrap_or_default());
        rows.push('\n');
    }
    let predictions = dir.join("predictions.jsonl");
    crate::atomic::write(&predictions, rows.as_bytes()).context(|| format!("writing {}", predictions.display()))?;
    let result = EvalScores {
        split: e.split,
        questions: scored.len(),
        adapter,
        model: model_path,
        scores,
        baseline: e.baseline,
        metric_plugins: set.plugins().iter().map(|p| MetricPluginRef { id: p.id(), sha256: p.hash().to_owned() }).collect(),
        skipped: problems,
        seconds,
        labels,
    };
    let path = dir.join("scores.json");
    artifacts::write(&path, &result).context(|| format!("writing {}", path.display()))?;
    progress.finished(StageResult::Eval(&result));
    Ok(result)
}

/// The metric plugins of the chain (or the built-in classification metrics over `labels`).
fn metric_plugins(config: &Config, labels: &[String]) -> Result<PluginSet> {
    let mut specs: Vec<SlotSpec> = config.slots().into_iter().filter(|s| s.kind == PluginKind::Metric).collect();
    if specs.is_empty() {
        specs.push(SlotSpec {
            name: "classification-metrics".into(),
            kind: PluginKind::Metric,
            path: None,
            version: None,
            sandbox: Sandbox { settings: vec![("labels".into(), labels.join(","))], ..Default::default() },
        });
    }
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins"))).context(|| "starting the plugin engine".into())?;
    PluginSet::load(engine, specs, config.plugin_dirs()).context(|| "loading the metric plugins".into())
}
