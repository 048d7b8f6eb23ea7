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
    if config.task.kind == crate::config::TaskKind::Annotate {
        if request.adapter.is_some() || request.base {
            return Err(PipelineError::Stopped(
                "an `annotate` task scores the plugins' mentions; it has no model, so --adapter and --base do not apply".into(),
            ));
        }
        return super::annotate::evaluate(config, progress);
    }
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
    if config.task.kind == crate::config::TaskKind::Generate {
        let limit = if e.limit > 0 { e.limit } else { usize::MAX };
        let records: Vec<&crate::data::Record> = records.iter().take(limit).collect();
        let started = std::time::Instant::now();
        let (scored, native, skipped) = generated(&m, &records, &e, prompts, progress)?;
        let seconds = started.elapsed().as_secs_f64();
        problems.extend(skipped);
        if scored.is_empty() {
            return Err(nothing_to_evaluate(&split_path, &problems));
        }
        let mut set = task_metric_plugins(config, &[])?;
        let mut scores = eval::metrics(&mut set, &scored).map_err(PipelineError::Stopped)?;
        scores.extend(native);
        return finish(config, &e, adapter, model_path, set, scored, scores, problems, seconds, Vec::new(), progress);
    }
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
        return Err(nothing_to_evaluate(&split_path, &problems));
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
    let mut set = task_metric_plugins(config, &labels)?;
    let scores = eval::metrics(&mut set, &scored).map_err(PipelineError::Stopped)?;
    finish(config, &e, adapter, model_path, set, scored, scores, problems, seconds, labels, progress)
}

/// Writes `predictions.jsonl` and `scores.json` into the evaluation folder and reports.
#[allow(clippy::too_many_arguments)]
fn finish(
    config: &Config,
    e: &crate::config::EvalConfig,
    adapter: Option<PathBuf>,
    model: PathBuf,
    set: PluginSet,
    scored: Vec<crate::artifacts::ScoredQuestion>,
    scores: std::collections::BTreeMap<String, f64>,
    skipped: Vec<String>,
    seconds: f64,
    labels: Vec<String>,
    progress: &mut dyn Progress,
) -> Result<EvalScores> {
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
        model,
        scores,
        baseline: e.baseline.clone(),
        metric_plugins: set.plugins().iter().map(|p| MetricPluginRef { id: p.id(), sha256: p.hash().to_owned() }).collect(),
        skipped,
        seconds,
        labels,
    };
    let path = dir.join("scores.json");
    artifacts::write(&path, &result).context(|| format!("writing {}", path.display()))?;
    progress.finished(StageResult::Eval(&result));
    Ok(result)
}

/// Accuracy and macro-F1 of (gold, given) decisions; the F1 is averaged over the gold
/// decisions present (a decision never given scores 0).
fn decision_scores(decisions: &[(String, String)]) -> (f64, f64) {
    let right = decisions.iter().filter(|(g, p)| g == p).count();
    let golds: std::collections::BTreeSet<&str> = decisions.iter().map(|(g, _)| g.as_str()).collect();
    let f1 = |class: &str| {
        let tp = decisions.iter().filter(|(g, p)| g == class && p == class).count() as f64;
        let given = decisions.iter().filter(|(_, p)| p == class).count() as f64;
        let gold = decisions.iter().filter(|(g, _)| g == class).count() as f64;
        if tp == 0.0 { 0.0 } else { 2.0 * tp / (given + gold) }
    };
    let macro_f1 = golds.iter().map(|c| f1(c)).sum::<f64>() / golds.len().max(1) as f64;
    (right as f64 / decisions.len().max(1) as f64, macro_f1)
}

/// No record of `path` could be evaluated: the error, with the first record's reason.
fn nothing_to_evaluate(path: &std::path::Path, problems: &[String]) -> PipelineError {
    let why = problems.first().map(|p| format!(" (the first: {p})")).unwrap_or_default();
    PipelineError::Stopped(format!("{}: no question to evaluate{why}", path.display()))
}

/// The answers written and scored, the scores computed by the host, and the records skipped.
type Generated = (Vec<crate::artifacts::ScoredQuestion>, std::collections::BTreeMap<String, f64>, Vec<String>);

/// A `generate` task's evaluation: each record's last answer written greedily after the
/// chat before it, scored against the record's; the perplexity of the references' tokens
/// (every assistant turn, teacher-forced); and for records with a decision (PubMedQA's
/// explained answers), whether the answer's first word is it (`decision_accuracy`).
fn generated(
    m: &crate::model::LoadedModel,
    records: &[&crate::data::Record],
    e: &crate::config::EvalConfig,
    prompts: crate::prompt::PromptOptions,
    progress: &mut dyn Progress,
) -> Result<Generated> {
    use crate::model::{GenerateOptions, generate};
    let (mut scored, mut skipped) = (Vec::new(), Vec::new());
    let (mut nll, mut tokens) = (0.0, 0usize);
    // (gold decision, first word) of each record with a decision
    let mut decisions: Vec<(String, String)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let messages = match crate::prompt::record_chat(r) {
            Ok(m) => m,
            Err(message) => {
                skipped.push(format!("record {}: {message}", r.id));
                continue;
            }
        };
        let last = messages.len() - 1;
        let made = m.tokenizer.render_chat(&messages[..last], true).and_then(|prompt| {
            let opts = GenerateOptions { max_new_tokens: e.max_new_tokens, ..Default::default() };
            generate(&m.llama, &m.tokenizer, &prompt, &opts, |_, _| {})
        });
        let text = match made {
            Ok(g) => g.text.trim().to_owned(),
            Err(err) => {
                skipped.push(format!("record {}: {err}", r.id));
                continue;
            }
        };
        if let Ok(x) = crate::train::examples::chat_example(r, &m.tokenizer, prompts.max_len, prompts.keep_end) {
            let (sum, n) = teacher_forced(m, &x).context(|| format!("the perplexity of record {}", r.id))?;
            (nll, tokens) = (nll + sum, tokens + n);
        }
        if let Some(answer) = r.answer.as_deref().filter(|_| r.messages.is_empty()) {
            let first: String = text.split_whitespace().next().unwrap_or("").chars().filter(|c| c.is_alphanumeric()).collect();
            decisions.push((answer.trim().to_lowercase(), first.to_lowercase()));
        }
        scored.push(crate::artifacts::ScoredQuestion {
            id: r.id.clone(),
            label: messages[last].content.clone(),
            predicted: text,
            probabilities: Vec::new(),
            rare_concept: false,
        });
        progress.eval_progress(i + 1, records.len());
    }
    let mut native = std::collections::BTreeMap::new();
    if tokens > 0 {
        native.insert("perplexity".to_owned(), (nll / tokens as f64).exp());
    }
    if !decisions.is_empty() {
        let (accuracy, macro_f1) = decision_scores(&decisions);
        native.insert("decision_accuracy".to_owned(), accuracy);
        native.insert("decision_macro_f1".to_owned(), macro_f1);
        native.insert("decision_count".to_owned(), decisions.len() as f64);
    }
    Ok((scored, native, skipped))
}

/// The summed cross-entropy of a sequence example's target tokens, and their number.
fn teacher_forced(m: &crate::model::LoadedModel, x: &crate::train::examples::Example) -> candle_core::Result<(f64, usize)> {
    let device = m.llama.device();
    let b = crate::train::Batch::new(&[x], &[], &[], 0, Default::default(), device)?;
    let Some((at, next)) = &b.conclusion else { return Ok((0.0, 0)) };
    let logits = m.llama.logits_at(&b.ids, at, None)?.to_dtype(candle_core::DType::F32)?;
    let logp = candle_nn::ops::log_softmax(&logits, 1)?;
    let picked = logp.gather(&next.unsqueeze(1)?, 1)?.sum_all()?.to_scalar::<f32>()?;
    Ok((-f64::from(picked), next.dims1()?))
}

/// The metric plugins of the chain (or the built-in one: classification metrics over
/// `labels`, or text metrics for a `generate` task, which has none).
fn task_metric_plugins(config: &Config, labels: &[String]) -> Result<PluginSet> {
    match labels.is_empty() {
        true => metric_plugins(config, "text-metrics", vec![]),
        false => metric_plugins(config, "classification-metrics", vec![("labels".into(), labels.join(","))]),
    }
}

/// The metric plugins of the chain, or the built-in metric `name` with `settings` when the
/// chain has none.
pub(super) fn metric_plugins(config: &Config, name: &str, settings: Vec<(String, String)>) -> Result<PluginSet> {
    let mut specs: Vec<SlotSpec> = config.slots().into_iter().filter(|s| s.kind == PluginKind::Metric).collect();
    if specs.is_empty() {
        specs.push(SlotSpec {
            entry: format!("the built-in metric {name}"),
            name: name.into(),
            kind: PluginKind::Metric,
            path: None,
            version: None,
            sandbox: Sandbox { settings, ..Default::default() },
        });
    }
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins"))).context(|| "starting the plugin engine".into())?;
    // loaded when the answers are in: the version in the folders then is the one that scores
    PluginSet::load(engine, specs, config.plugin_dirs()).context(|| "loading the metric plugins".into())
}

#[cfg(test)]
mod tests {
    /// Accuracy and macro-F1 over the gold decisions present, the figures of the GPU run's
    /// predictions (243 of 276 yes, 60 of 169 no, 0 of 55 maybe right; 398 yes and 102 no
    /// given): 0.606 and 0.3879575591 (Python: mean of 2·tp / (given + gold) per class).
    #[test]
    fn decision_scores_are_accuracy_and_macro_f1_over_the_gold_decisions() {
        let mut d: Vec<(String, String)> = Vec::new();
        let mut add = |gold: &str, given: &str, n: usize| d.extend(std::iter::repeat_n((gold.to_owned(), given.to_owned()), n));
        add("yes", "yes", 243);
        add("yes", "no", 33);
        add("no", "no", 60);
        add("no", "yes", 109);
        add("maybe", "yes", 46);
        add("maybe", "no", 9);
        let (accuracy, macro_f1) = super::decision_scores(&d);
        assert!((accuracy - 0.606).abs() < 1e-12, "{accuracy}");
        assert!((macro_f1 - 0.387_957_559_1).abs() < 1e-9, "{macro_f1}");
    }
}
