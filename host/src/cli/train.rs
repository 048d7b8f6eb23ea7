//! `medtune train`, `medtune eval` and `medtune merge`: the QLoRA fine-tune of a config, its
//! evaluation through the metric plugins, and the merged checkpoint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::config::{BaseFormat, Config};
use crate::data::read_jsonl;
use crate::model::{self, LoadedModel};
use crate::plugin::{PluginEngine, PluginSet, SlotSpec};
use crate::train::{self, eval, examples, manifest, TrainOptions};

/// `medtune train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run's TOML config.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Continue from the last checkpoint in runs/<name>/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps, as an interruption would (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Train on this many GPUs, one process each, the gradients summed over NCCL (the
    /// config's train.gpus); the result is a single GPU's within rounding.
    #[arg(long)]
    pub gpus: Option<usize>,
    /// This process's rank in a run of several GPUs (set by `--gpus N` for the processes it
    /// starts).
    #[arg(long, hide = true)]
    pub rank: Option<usize>,
}

/// `medtune eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run's TOML config.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The adapter to evaluate (default: runs/<name>/adapter).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Evaluate the base model without an adapter (zero-shot).
    #[arg(long, conflicts_with = "adapter")]
    pub base: bool,
}

/// `medtune merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The run's TOML config (its model; its adapter unless --adapter).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The adapter (default: runs/<name>/adapter).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Output folder (default: runs/<name>/merged).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The config's device (GPU `gpu` when it is CUDA).
fn device(config: &Config, gpu: usize) -> anyhow::Result<candle_core::Device> {
    match config.model.device.as_str() {
        "cuda" => {
            candle_core::cuda::set_gemm_reduced_precision_f32(config.model.tf32);
            candle_core::Device::new_cuda(gpu).with_context(|| {
                format!("{}: model.device = \"cuda\" needs GPU {gpu} and a medtune built with --features cuda", config.path.display())
            })
        }
        _ => Ok(candle_core::Device::Cpu),
    }
}

/// Loads the config's model on its device, the base stored as the config says.
pub fn load_model(config: &Config) -> anyhow::Result<(PathBuf, LoadedModel)> {
    load_model_on(config, 0)
}

/// [`load_model`] on GPU `gpu` (when the config's device is CUDA).
fn load_model_on(config: &Config, gpu: usize) -> anyhow::Result<(PathBuf, LoadedModel)> {
    let path = config.model_path().with_context(|| format!("{}: model.path", config.path.display()))?;
    let device = device(config, gpu)?;
    let mut m = model::load(&path, &device).with_context(|| format!("loading {}", path.display()))?;
    let compute = config.model.compute_dtype.dtype();
    if config.model.base == BaseFormat::Nf4 {
        let bytes = m.llama.quantize_nf4(compute).context("quantizing the base to NF4")?;
        eprintln!("base quantized to NF4 with double quantization: {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    }
    m.llama.set_compute_dtype(compute);
    Ok((path, m))
}

pub fn train_cmd(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config)?;
    if let Some(n) = args.gpus {
        config = config.with_gpus(n)?;
    }
    let t = config.train.as_ref().ok_or_else(|| anyhow::anyhow!("{}: no [train] section", args.config.display()))?;
    let dp_rank = match (t.gpus, args.rank) {
        (Some(world), None) => return super::ranks::launch(&args, world),
        (Some(world), Some(rank)) if rank < world => Some((rank, world)),
        (world, Some(rank)) => anyhow::bail!("--rank {rank}: not a rank of a run on {} GPUs; ranks are started by `medtune train --gpus N`", world.unwrap_or(1)),
        (None, None) => None,
    };
    let (model_path, m) = load_model_on(&config, dp_rank.map_or(0, |(rank, _)| rank))?;
    let dp = match dp_rank {
        Some((rank, world)) => {
            let id = std::env::var(train::NCCL_ID_ENV).unwrap_or_default();
            Some(train::DataParallel::join(m.llama.device(), rank, world, &id).with_context(|| format!("training {} on {world} GPUs", config.name))?)
        }
        None => None,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("train {bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let opts = TrainOptions { resume: args.resume, stop_after: args.stop_after };
    let outcome = train::train(&config, &m, opts, dp.as_ref(), |row, total| {
        bar.set_length(total as u64);
        bar.set_position(row.step as u64);
        bar.set_message(format!("loss {:.4}  {:.0} tokens/s", row.loss, row.tokens_per_s));
        if !bar.is_hidden() {
            return;
        }
        eprintln!("step {}/{total}: loss {:.4}, lr {:.2e}, {:.0} tokens/s, {:.0} MiB", row.step, row.loss, row.lr, row.tokens_per_s, row.memory_mib);
    })
    .with_context(|| format!("training {}", config.name))?;
    bar.finish_and_clear();
    if dp.as_ref().is_some_and(|d| !d.leads()) {
        return Ok(ExitCode::SUCCESS);
    }
    let run = config.run_dir();
    let data = config.work_dir().join(format!("data/{}/train.jsonl", t.data));
    let extra = json!({
        "device": config.model.device,
        "gpus": t.gpus.unwrap_or(1),
        "steps": outcome.steps,
        "total_steps": outcome.total_steps,
        "resumed_from": outcome.resumed_from,
        "examples": outcome.examples,
        "skipped_records": outcome.skipped,
        "tokens_per_s": outcome.tokens_per_s,
        "peak_memory_mib": outcome.memory_mib,
        "seconds": started.elapsed().as_secs_f64(),
        "adapter": outcome.adapter,
        "selected_step": outcome.selected_step,
    });
    let mpath = manifest::write(&run, &manifest::manifest(&config, &data, &model_path, extra)).with_context(|| format!("writing {}", run.display()))?;
    for s in &outcome.skipped {
        eprintln!("skipped: {s}");
    }
    println!(
        "train: {}/{} steps{} on {} examples, last loss {:.4}, {:.0} tokens/s, peak {:.0} MiB",
        outcome.steps,
        outcome.total_steps,
        outcome.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
        outcome.examples,
        outcome.last_loss,
        outcome.tokens_per_s,
        outcome.memory_mib
    );
    match &outcome.adapter {
        Some(a) => println!("  adapter {}", a.display()),
        None => println!("  stopped at step {}: continue with `medtune train --config {} --resume`", outcome.steps, args.config.display()),
    }
    println!("  wrote {}, {}, {}", run.join("metrics.jsonl").display(), run.join("loss.svg").display(), mpath.display());
    Ok(if outcome.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_PARTIAL) })
}

/// The metric plugins of the chain (or the built-in classification metrics).
fn metric_plugins(config: &Config) -> anyhow::Result<PluginSet> {
    let mut specs: Vec<SlotSpec> = config.slots().into_iter().filter(|s| s.kind == crate::plugin::types::PluginKind::Metric).collect();
    if specs.is_empty() {
        specs.push(SlotSpec {
            name: "classification-metrics".into(),
            kind: crate::plugin::types::PluginKind::Metric,
            path: None,
            version: None,
            sandbox: crate::plugin::Sandbox { settings: vec![("labels".into(), "yes,no,maybe".into())], ..Default::default() },
        });
    }
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
    Ok(PluginSet::load(engine, specs, config.plugin_dirs())?)
}

/// Merges the PEFT adapter in `dir` into `m`; returns how many modules changed.
pub fn merge_adapter(m: &mut model::LoadedModel, dir: &Path) -> anyhow::Result<usize> {
    let a = model::Adapter::load(dir, m.llama.device()).with_context(|| format!("adapter {}", dir.display()))?;
    m.llama.merge_adapter(&a).with_context(|| format!("adapter {}", dir.display()))
}

/// The adapter a command uses: the one named, none with `base`, else the run's own
/// (`runs/<name>/adapter`) when it exists.
pub fn default_adapter(config: &Config, named: Option<&Path>, base: bool) -> Option<PathBuf> {
    match (named, base) {
        (Some(a), _) => Some(a.to_owned()),
        (None, false) => Some(config.run_dir().join("adapter")).filter(|a| a.join("adapter_config.json").is_file()),
        (None, true) => None,
    }
}

/// Scores of one evaluation, written under `runs/<name>/eval/`.
pub fn evaluate(config: &Config, adapter: Option<&Path>) -> anyhow::Result<serde_json::Value> {
    let e = config.eval.clone().unwrap_or_default();
    let t = config.train.clone();
    let prompts = examples::PromptOptions::of(t.as_ref());
    let batch = t.as_ref().map_or(8, |t| t.batch_size.max(8));
    let (model_path, mut m) = load_model(config)?;
    if let Some(dir) = adapter {
        merge_adapter(&mut m, dir)?;
    }
    let split_path = config.work_dir().join(format!("data/processed/{}.jsonl", e.split));
    let (records, mut problems) = read_jsonl(&split_path)
        .with_context(|| format!("{}: run the data stage first (`medtune data --config {}`)", split_path.display(), config.path.display()))?;
    let train_path = config.work_dir().join("data/processed/train.jsonl");
    let (train_records, _) = read_jsonl(&train_path).with_context(|| format!("reading {}", train_path.display()))?;
    let counts = eval::concept_counts(&train_records);
    let mut exs = Vec::new();
    let mut rare = Vec::new();
    for r in records.iter().take(if e.limit > 0 { e.limit } else { usize::MAX }) {
        match examples::example(r, &m.tokenizer, prompts) {
            Ok(x) => {
                rare.push(eval::is_rare(r, &counts, e.rare_max_count));
                exs.push(x);
            }
            Err(err) => problems.push(err.to_string()),
        }
    }
    anyhow::ensure!(!exs.is_empty(), "{}: no question to evaluate", split_path.display());
    let tokens = examples::label_tokens(&m.tokenizer)?;
    let pad = m.tokenizer.token_id("<|endoftext|>").unwrap_or(0);
    let bar = indicatif::ProgressBar::new(exs.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("eval  {bar:30} {pos}/{len} questions  eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let started = std::time::Instant::now();
    let mut probs = Vec::with_capacity(exs.len());
    for chunk in exs.chunks(batch) {
        probs.extend(eval::score(&m.llama, None, chunk, &tokens, batch, pad).context("scoring")?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let scored = eval::predictions(&exs, &probs, &rare);
    let mut set = metric_plugins(config)?;
    let scores = eval::metrics(&mut set, &scored).map_err(anyhow::Error::msg)?;
    let dir = config.run_dir().join(if adapter.is_some() { "eval" } else { "eval-base" });
    let mut rows = String::new();
    for s in &scored {
        rows.push_str(&serde_json::to_string(s).unwrap_or_default());
        rows.push('\n');
    }
    crate::atomic::write(&dir.join("predictions.jsonl"), rows.as_bytes()).with_context(|| format!("writing {}", dir.display()))?;
    let result = json!({
        "split": e.split,
        "questions": scored.len(),
        "adapter": adapter,
        "model": model_path,
        "scores": scores,
        "baseline": e.baseline,
        "metric_plugins": set.plugins().iter().map(|p| json!({"id": p.id(), "sha256": p.hash()})).collect::<Vec<_>>(),
        "skipped": problems,
        "seconds": secs,
    });
    crate::atomic::write(&dir.join("scores.json"), serde_json::to_string_pretty(&result).unwrap_or_default().as_bytes())
        .with_context(|| format!("writing {}", dir.display()))?;
    Ok(result)
}

pub fn eval_cmd(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let adapter = if args.base { None } else { Some(args.adapter.clone().unwrap_or_else(|| config.run_dir().join("adapter"))) };
    if let Some(a) = &adapter {
        anyhow::ensure!(a.join("adapter_config.json").is_file(), "{}: no adapter there; train first (`medtune train --config {}`) or pass --base", a.display(), args.config.display());
    }
    let r = evaluate(&config, adapter.as_deref())?;
    print_scores(&r);
    Ok(if r["skipped"].as_array().is_some_and(|s| !s.is_empty()) { ExitCode::from(super::EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}

/// Prints an evaluation's headline figures, per-class table and confusion matrix.
pub fn print_scores(r: &serde_json::Value) {
    let s = &r["scores"];
    let f = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
    println!("eval on {} ({} questions, {:.1} s): accuracy {}, macro-F1 {}", r["split"].as_str().unwrap_or("?"), r["questions"], r["seconds"].as_f64().unwrap_or(0.0), f("accuracy"), f("macro_f1"));
    if s.get("rare_concept_accuracy").is_some() {
        println!("  rare-concept accuracy {} ({} questions)", f("rare_concept_accuracy"), f("rare_concept_count"));
    }
    println!("  {:<8} {:>9} {:>7} {:>7} {:>8}", "class", "precision", "recall", "F1", "support");
    for l in examples::LABELS {
        println!("  {l:<8} {:>9} {:>7} {:>7} {:>8}", f(&format!("precision/{l}")), f(&format!("recall/{l}")), f(&format!("f1/{l}")), f(&format!("support/{l}")));
    }
    println!("  confusion (rows true, columns predicted: yes no maybe)");
    for t in examples::LABELS {
        let row: Vec<String> = examples::LABELS.iter().map(|p| format!("{:>5}", s[format!("confusion/{t}/{p}")].as_f64().unwrap_or(0.0))).collect();
        println!("  {t:<8}{}", row.join(""));
    }
}

pub fn merge_cmd(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let adapter = args.adapter.clone().unwrap_or_else(|| config.run_dir().join("adapter"));
    let out = args.out.clone().unwrap_or_else(|| config.run_dir().join("merged"));
    let (_, mut m) = load_model(&config)?;
    let n = merge_adapter(&mut m, &adapter)?;
    model::save_checkpoint(&m.llama, &m.tokenizer, &out).with_context(|| format!("writing {}", out.display()))?;
    println!("merged {n} modules of {} into {}", adapter.display(), out.display());
    Ok(ExitCode::SUCCESS)
}
