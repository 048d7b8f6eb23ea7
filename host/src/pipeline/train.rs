//! The training stage: the QLoRA fine-tune of a config (`crate::train::train`) on its model,
//! and the run's manifest. On several GPUs it starts one rank process per GPU (this binary's
//! `train --rank`), forwards their messages and names the rank that failed.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Context, PipelineError, Progress, Result, StageResult, load_model_on};
use crate::artifacts::TrainRecord;
use crate::config::Config;
use crate::train::{self, DataParallel, NCCL_ID_ENV, TrainOptions, TrainOutcome, ranks};

/// The exit status of a `medtune` process that ran but had records fail or skipped (a rank
/// process reports that way too).
pub const EXIT_PARTIAL: u8 = 2;

/// How to train.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// Continue from the last checkpoint in `runs/<name>/checkpoints`.
    pub resume: bool,
    /// Stop after this many steps, as an interruption would.
    pub stop_after: Option<usize>,
    /// This process's rank in a run on `train.gpus` GPUs (the launcher sets it for the
    /// processes it starts); `None`: this process is the launcher, or the only one.
    pub rank: Option<usize>,
}

/// What the training stage did.
#[derive(Debug)]
pub enum Trained {
    /// This process trained (alone, or as rank 0 of several) and wrote the run.
    Run {
        /// The trainer's outcome.
        outcome: Box<TrainOutcome>,
        /// The run folder.
        run_dir: PathBuf,
        /// Its manifest.
        manifest: PathBuf,
        /// The config file (for the resume hint).
        config: PathBuf,
    },
    /// A rank other than 0 finished its share; rank 0 writes the run.
    Share,
    /// The rank processes finished; rank 0 printed its summary.
    Ranks {
        /// Whether rank 0 reported skipped records.
        partial: bool,
    },
}

impl Trained {
    /// Whether records were skipped.
    pub fn partial(&self) -> bool {
        match self {
            Trained::Run { outcome, .. } => !outcome.skipped.is_empty(),
            Trained::Share => false,
            Trained::Ranks { partial } => *partial,
        }
    }
}

/// Trains `config`'s adapters as its `[train]` section says; writes `runs/<name>/`
/// (adapter/, checkpoints/, metrics.jsonl, loss.svg, manifest.json).
pub fn train(config: &Config, request: &TrainRequest, progress: &mut dyn Progress) -> Result<Trained> {
    let t = config.train.as_ref().ok_or_else(|| PipelineError::Stopped(format!("{}: no [train] section", config.path.display())))?;
    let dp_rank = match (t.gpus, request.rank) {
        (Some(world), None) => return launch_ranks(config, request, world),
        (Some(world), Some(rank)) if rank < world => Some((rank, world)),
        (world, Some(rank)) => {
            return Err(PipelineError::Stopped(format!(
                "--rank {rank}: not a rank of a run on {} GPUs; ranks are started by `medtune train --gpus N`",
                world.unwrap_or(1)
            )));
        }
        (None, None) => None,
    };
    let (model_path, m) = load_model_on(config, dp_rank.map_or(0, |(rank, _)| rank))?;
    let dp = match dp_rank {
        Some((rank, world)) => {
            let id = std::env::var(NCCL_ID_ENV).unwrap_or_default();
            let joined = DataParallel::join(m.llama.device(), rank, world, &id);
            Some(joined.map_err(|e| PipelineError::Stopped(format!("training {} on {world} GPUs: {e}", config.name)))?)
        }
        None => None,
    };
    let started = Instant::now();
    let opts = TrainOptions { resume: request.resume, stop_after: request.stop_after };
    let outcome = train::train(config, &m, opts, dp.as_ref(), |row, total| progress.train_step(row, total))
        .context(|| format!("training {}", config.name))?;
    if dp.as_ref().is_some_and(|d| !d.leads()) {
        return Ok(Trained::Share);
    }
    let run_dir = config.run_dir();
    let data = config.work_dir().join(format!("data/{}/train.jsonl", t.data));
    let record = TrainRecord {
        device: config.model.device,
        gpus: t.gpus.unwrap_or(1),
        steps: outcome.steps,
        total_steps: outcome.total_steps,
        resumed_from: outcome.resumed_from,
        examples: outcome.examples,
        skipped_records: outcome.skipped.clone(),
        tokens_per_s: outcome.tokens_per_s,
        peak_memory_mib: outcome.memory_mib,
        seconds: started.elapsed().as_secs_f64(),
        adapter: outcome.adapter.clone(),
        selected_step: outcome.selected_step,
    };
    let manifest = train::manifest::write(&run_dir, &train::manifest::manifest(config, &data, &model_path, record))
        .context(|| format!("writing {}", run_dir.display()))?;
    let trained = Trained::Run { outcome: Box::new(outcome), run_dir, manifest, config: config.path.clone() };
    progress.finished(StageResult::Train(&trained));
    Ok(trained)
}

/// Runs `request` on `world` GPUs, one `medtune train --rank r` process each; returns once
/// every rank has finished. A rank that fails has the others stopped and is named with its
/// last message.
fn launch_ranks(config: &Config, request: &TrainRequest, world: usize) -> Result<Trained> {
    let id = DataParallel::new_id().map_err(|e| PipelineError::Stopped(format!("creating the NCCL id of the run: {e}")))?;
    let exe = std::env::current_exe().context(|| "finding the medtune binary to start the ranks".into())?;
    let mut children = ranks::spawn(world, |rank| {
        let mut cmd = Command::new(&exe);
        cmd.arg("train").arg("--config").arg(&config.path).args(["--gpus", &world.to_string(), "--rank", &rank.to_string()]);
        if request.resume {
            cmd.arg("--resume");
        }
        if let Some(n) = request.stop_after {
            cmd.args(["--stop-after", &n.to_string()]);
        }
        // rank 0 prints the run's summary; every rank's stderr comes through here
        cmd.env(NCCL_ID_ENV, &id)
            .stdin(Stdio::null())
            .stdout(if rank == 0 { Stdio::inherit() } else { Stdio::null() })
            .stderr(Stdio::piped());
        cmd
    })
    .map_err(|(rank, e)| PipelineError::Io { what: format!("starting rank {rank} of {world} ({})", exe.display()), source: Box::new(e) })?;
    let mut last_lines = Vec::with_capacity(world);
    let mut forwarders = Vec::with_capacity(world);
    for (rank, child) in children.iter_mut().enumerate() {
        let last = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let keep = Arc::clone(&last);
            forwarders.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(std::result::Result::ok) {
                    if rank == 0 {
                        eprintln!("{line}")
                    } else {
                        eprintln!("[rank {rank}] {line}")
                    }
                    if let (false, Ok(mut l)) = (line.trim().is_empty(), keep.lock()) {
                        *l = line;
                    }
                }
            }));
        }
        last_lines.push(last);
    }
    // a rank ends its part with success, or success with skipped records
    let statuses = ranks::wait(&mut children, |s| s.success() || s.code() == Some(i32::from(EXIT_PARTIAL)));
    for f in forwarders {
        let _ = f.join();
    }
    match statuses {
        Ok(s) => Ok(Trained::Ranks { partial: s.first().and_then(ExitStatus::code) == Some(i32::from(EXIT_PARTIAL)) }),
        Err((rank, status)) => {
            let said = last_lines[rank].lock().map(|l| l.clone()).unwrap_or_default();
            let others: Vec<String> = (0..world).filter(|&r| r != rank).map(|r| r.to_string()).collect();
            Err(PipelineError::Stopped(format!(
                "rank {rank} of {world} (GPU {rank}) failed ({status}){}; stopped the other ranks ({})",
                if said.is_empty() { String::new() } else { format!(": {said}") },
                others.join(", ")
            )))
        }
    }
}
