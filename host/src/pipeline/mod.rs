//! The pipeline as a library: one entry per stage (vocabulary, data, train, eval, export,
//! report), each from typed inputs to a typed result, and [`run`] over them, skipping each
//! stage whose inputs did not change. The CLI parses flags, calls these and prints.

mod annotate;
mod data;
mod eval;
mod export;
mod fingerprint;
mod model;
mod train;
mod vocab;

use std::path::PathBuf;
use std::time::Instant;

pub use annotate::Miss;
pub use data::data;
pub use eval::{EvalRequest, evaluate};
pub use export::{ExportOutcome, ExportRequest, OrtCheck, export};
pub use fingerprint::{StageRecord, Stages, data_fingerprint, eval_fingerprint, export_fingerprint, train_fingerprint};
pub use model::{default_adapter, device, load_model, load_model_on, merge_adapter, model_path, ort_engine, ort_engine_for};
pub use train::{EXIT_PARTIAL, TrainRequest, Trained, train};
pub use vocab::{build_vocab, ensure_vocab};

use crate::artifacts::{ArtifactError, EvalScores};
use crate::config::{Config, ConfigError, OnError};
use crate::data::{DataError, DataReport};
use crate::export::ExportError;
use crate::model::ModelError;
use crate::plugin::LoadError;
use crate::train::{StepRow, TrainError};
use crate::vocab::{VocabError, VocabReport};

/// A stage that could not run, with what it was doing and the typed cause (boxed: the
/// causes are large, the error travels up every stage).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The config cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Loading, resolving or running the model failed.
    #[error("{what}")]
    Model { what: String, source: Box<ModelError> },
    /// The device cannot be used, or a tensor operation failed.
    #[error("{what}")]
    Tensor { what: String, source: Box<candle_core::Error> },
    /// The vocabulary cannot be built.
    #[error("{what}")]
    Vocab { what: String, source: Box<VocabError> },
    /// The plugin chain cannot be loaded.
    #[error("{what}")]
    Plugins { what: String, source: Box<LoadError> },
    /// The data stage failed.
    #[error("{what}")]
    Data { what: String, source: Box<DataError> },
    /// Training failed.
    #[error("{what}")]
    Train { what: String, source: Box<TrainError> },
    /// The export failed.
    #[error("{what}")]
    Export { what: String, source: Box<ExportError> },
    /// A run output cannot be read or written.
    #[error("{what}")]
    Artifact { what: String, source: Box<ArtifactError> },
    /// A file or process failed.
    #[error("{what}")]
    Io { what: String, source: Box<std::io::Error> },
    /// A stage cannot go on; the message says why and what to do.
    #[error("{0}")]
    Stopped(String),
}

/// The pipeline's result type.
pub type Result<T> = std::result::Result<T, PipelineError>;

/// Adds what a stage was doing to a lower layer's error.
pub(crate) trait Context<T> {
    /// The error, with `what` the stage was doing.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

macro_rules! context_for {
    ($($error:ty => $variant:ident),*) => {$(
        impl<T> Context<T> for std::result::Result<T, $error> {
            fn context(self, what: impl FnOnce() -> String) -> Result<T> {
                self.map_err(|source| PipelineError::$variant { what: what(), source: Box::new(source) })
            }
        }
    )*};
}
context_for!(ModelError => Model, candle_core::Error => Tensor, VocabError => Vocab, LoadError => Plugins, DataError => Data,
    TrainError => Train, ExportError => Export, ArtifactError => Artifact, std::io::Error => Io);

/// A stage of [`run`] (the vocabulary is built inside the data stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The data stage.
    Data,
    /// Training.
    Train,
    /// Evaluation.
    Eval,
    /// The ONNX export.
    Export,
    /// The report.
    Report,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Data => "data",
            Stage::Train => "train",
            Stage::Eval => "eval",
            Stage::Export => "export",
            Stage::Report => "report",
        })
    }
}

/// What a stage produced, as the caller sees it when the stage finishes.
#[derive(Debug)]
pub enum StageResult<'a> {
    /// The vocabulary folder was built.
    Vocab(&'a VocabReport, &'a std::path::Path, f64),
    /// The data stage ran.
    Data(&'a DataReport, f64),
    /// Training ran.
    Train(&'a Trained),
    /// An evaluation ran.
    Eval(&'a EvalScores),
    /// The export ran and was checked.
    Export(&'a ExportOutcome),
}

/// What the caller sees while the pipeline runs (progress bars, summaries). Every method has
/// a default that does nothing.
pub trait Progress {
    /// A data batch went through the chain: records done so far, plugin swaps since.
    fn data_batch(&mut self, _done: usize, _swaps: &[String]) {}
    /// A training step finished (of `total`).
    fn train_step(&mut self, _row: &StepRow, _total: usize) {}
    /// `done` of `total` evaluation questions are scored.
    fn eval_progress(&mut self, _done: usize, _total: usize) {}
    /// A stage finished with this result.
    fn finished(&mut self, _result: StageResult<'_>) {}
}

/// How a stage of [`run`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum StageStatus {
    /// It ran.
    Ran,
    /// Its inputs were unchanged and its outputs there.
    Skipped,
    /// An interrupted training continued from its last checkpoint.
    Resumed,
    /// The report was written here.
    Wrote(PathBuf),
}

/// One line of a run's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct StageLine {
    /// The stage.
    pub stage: Stage,
    /// What happened.
    pub status: StageStatus,
    /// Wall-clock seconds (0 when skipped).
    pub seconds: f64,
}

/// What [`run`] did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The stages, in order.
    pub stages: Vec<StageLine>,
    /// Whether some records failed or were skipped somewhere (the run still went on).
    pub partial: bool,
}

/// Runs the stages `config`'s sections name, in order, skipping each whose fingerprint is
/// unchanged and whose outputs exist; an interrupted training resumes from its last
/// checkpoint. Records that fail are kept going unless `data.on_error = "stop"`.
pub fn run(config: &Config, progress: &mut dyn Progress) -> Result<RunSummary> {
    config.require_data()?;
    let mut stages = Stages::load(config);
    let mut summary = RunSummary::default();
    let save = |stages: &mut Stages, stage: Stage, fp: &str, done: bool| {
        stages.set(config, stage, fp, done).context(|| format!("writing {}", config.run_dir().join("stages.json").display()))
    };
    let line = |summary: &mut RunSummary, stage: Stage, status: StageStatus, t: Instant| {
        let seconds = if status == StageStatus::Skipped { 0.0 } else { t.elapsed().as_secs_f64() };
        summary.stages.push(StageLine { stage, status, seconds });
    };

    let t = Instant::now();
    // the vocabulary first: its files are part of the data stage's fingerprint
    if let Some(opts) = config.vocab_options() {
        ensure_vocab(&opts, progress)?;
    }
    let data_fp = data_fingerprint(config);
    let own_data = crate::artifacts::DataManifest::of(config).is_ok_and(|m| m.is_some());
    if stages.done_with(Stage::Data, &data_fp) && own_data && config.work_dir().join("data/processed/train.jsonl").is_file() {
        line(&mut summary, Stage::Data, StageStatus::Skipped, t);
    } else {
        let report = data(config, progress)?;
        let failed = report.has_errors();
        if failed {
            summary.partial = true;
            if config.data.on_error == OnError::Stop {
                return Err(PipelineError::Stopped(
                    "the data stage stopped on a failed record (on_error = \"stop\"); later stages did not run".into(),
                ));
            }
        }
        save(&mut stages, Stage::Data, &data_fp, !failed)?;
        line(&mut summary, Stage::Data, StageStatus::Ran, t);
    }
    if config.task.kind == crate::config::TaskKind::Annotate && config.eval.is_some() {
        // no model: the data stage's mentions are what is scored
        let t = Instant::now();
        let eval_fp = eval_fingerprint(config, &data_fp);
        if stages.done_with(Stage::Eval, &eval_fp) && config.run_dir().join("eval/scores.json").is_file() {
            line(&mut summary, Stage::Eval, StageStatus::Skipped, t);
        } else {
            annotate::evaluate(config, progress)?;
            save(&mut stages, Stage::Eval, &eval_fp, true)?;
            line(&mut summary, Stage::Eval, StageStatus::Ran, t);
        }
        let t = Instant::now();
        let report = crate::report::write(config).context(|| format!("writing the report of {}", config.name))?;
        line(&mut summary, Stage::Report, StageStatus::Wrote(report), t);
    }
    if config.train.is_none() {
        return Ok(summary);
    }

    let t = Instant::now();
    let model = model_path(config)?;
    let train_fp = train_fingerprint(config, &data_fp, &model);
    if stages.done_with(Stage::Train, &train_fp) && config.run_dir().join("adapter/adapter_model.safetensors").is_file() {
        line(&mut summary, Stage::Train, StageStatus::Skipped, t);
    } else {
        // an interrupted training (same config, data and model) continues from its checkpoint
        let resume = crate::train::resumable(config);
        save(&mut stages, Stage::Train, &train_fp, false)?;
        let trained = train(config, &TrainRequest { resume, ..TrainRequest::default() }, progress)?;
        summary.partial |= trained.partial();
        save(&mut stages, Stage::Train, &train_fp, true)?;
        line(&mut summary, Stage::Train, if resume { StageStatus::Resumed } else { StageStatus::Ran }, t);
    }
    if config.eval.is_some() {
        let t = Instant::now();
        let eval_fp = eval_fingerprint(config, &train_fp);
        if stages.done_with(Stage::Eval, &eval_fp) && config.run_dir().join("eval/scores.json").is_file() {
            line(&mut summary, Stage::Eval, StageStatus::Skipped, t);
        } else {
            let scores = evaluate(config, &EvalRequest::default(), progress)?;
            summary.partial |= !scores.skipped.is_empty();
            save(&mut stages, Stage::Eval, &eval_fp, true)?;
            line(&mut summary, Stage::Eval, StageStatus::Ran, t);
        }
    }
    if let Some(e) = &config.export {
        let t = Instant::now();
        let export_fp = export_fingerprint(config, &train_fp);
        if stages.done_with(Stage::Export, &export_fp) && config.run_dir().join("onnx/model.onnx").is_file() {
            line(&mut summary, Stage::Export, StageStatus::Skipped, t);
        } else {
            export(config, &ExportRequest { precision: e.precision, ..ExportRequest::default() }, progress)?;
            save(&mut stages, Stage::Export, &export_fp, true)?;
            line(&mut summary, Stage::Export, StageStatus::Ran, t);
        }
    }
    let t = Instant::now();
    let report = crate::report::write(config).context(|| format!("writing the report of {}", config.name))?;
    line(&mut summary, Stage::Report, StageStatus::Wrote(report), t);
    Ok(summary)
}
