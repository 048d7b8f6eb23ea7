//! `medtune train`, `medtune eval` and `medtune merge`: the QLoRA fine-tune of a config, its
//! evaluation through the metric plugins (`pipeline::train`, `pipeline::evaluate`), and the
//! merged checkpoint.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::console::Console;
use super::{AdapterArgs, ConfigArg};
use medtune::config::Config;
use medtune::pipeline::{self, EvalRequest, TrainRequest};

/// `medtune train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// `medtune merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Output folder (default: runs/<name>/merged).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub fn train_cmd(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config.config)?;
    if let Some(n) = args.gpus {
        config = config.with_gpus(n)?;
    }
    let request = TrainRequest { resume: args.resume, stop_after: args.stop_after, rank: args.rank };
    let trained = pipeline::train(&config, &request, &mut Console::default())?;
    Ok(super::partial_if(trained.partial()))
}

pub fn eval_cmd(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let request = EvalRequest { adapter: args.adapter.adapter, base: args.adapter.base };
    let scores = pipeline::evaluate(&config, &request, &mut Console::default())?;
    Ok(super::partial_if(!scores.skipped.is_empty()))
}

pub fn merge_cmd(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    anyhow::ensure!(!args.adapter.base, "--base: merge needs an adapter (the run's own, or --adapter DIR)");
    let adapter = args.adapter.adapter.clone().unwrap_or_else(|| config.run_dir().join("adapter"));
    let out = args.out.clone().unwrap_or_else(|| config.run_dir().join("merged"));
    let (_, mut m) = pipeline::load_model(&config)?;
    let n = pipeline::merge_adapter(&mut m, &adapter)?;
    medtune::model::save_checkpoint(&m.llama, &m.tokenizer, &out).with_context(|| format!("writing {}", out.display()))?;
    println!("merged {n} modules of {} into {}", adapter.display(), out.display());
    Ok(ExitCode::SUCCESS)
}
