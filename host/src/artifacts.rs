//! The JSON files a run writes and reads back, as types: the data stage's manifest, a training
//! run's manifest, an evaluation's scores and predictions, and a checkpoint's trainer state.
//! Every writer and reader goes through these, so a field is named in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{Device, ModelConfig, TrainConfig};
use crate::data::Split;

/// An artifact that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not the JSON it should be.
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// Reads a JSON artifact.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ArtifactError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|source| ArtifactError::Json { path: path.to_owned(), source })
}

/// Reads a JSON artifact if it is there and readable (the report and `runs` show what exists).
pub fn read_if_any<T: DeserializeOwned>(path: &Path) -> Option<T> {
    read(path).ok()
}

/// Writes a JSON artifact atomically (pretty-printed).
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ArtifactError::Json { path: path.to_owned(), source })?;
    crate::atomic::write(path, &bytes).map_err(|source| ArtifactError::Io { path: path.to_owned(), source })
}

/// A file by path and content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedFile {
    /// Its path.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
}

/// A file by path and, where hashing is worth it, content hash (else its size, or that it is
/// missing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Its path.
    pub path: PathBuf,
    /// Its sha256 (files under 2 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its size (larger files and folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Set when it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<bool>,
}

impl FileIdentity {
    /// A file's identity, skipping the hash of files over 2 GiB (size instead: hashing a 13 GB
    /// checkpoint on every run is not worth it).
    pub fn of(path: &Path) -> Self {
        let path_buf = path.to_owned();
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() < 2 << 30 => {
                Self { path: path_buf, sha256: Some(crate::hash::file_sha256(path)), ..Self::default() }
            }
            Ok(m) => Self { path: path_buf, bytes: Some(m.len()), ..Self::default() },
            Err(_) => Self { path: path_buf, missing: Some(true), ..Self::default() },
        }
    }
}

/// A plugin that made data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRef {
    /// `name@version`.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The component's sha256.
    pub sha256: String,
    /// Where it came from (built in, a folder, a path).
    pub origin: String,
}

/// How many records an augmenter made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentedCount {
    /// The augmenter's id.
    pub plugin: String,
    /// Records made.
    pub records: usize,
}

/// `data/processed/manifest.json`: what the data stage read, ran and wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataManifest {
    /// Always `data`.
    pub stage: String,
    /// The config file.
    pub config: HashedFile,
    /// The input files.
    pub inputs: Vec<HashedFile>,
    /// The plugins of the chain.
    pub plugins: Vec<PluginRef>,
    /// Records read.
    pub records: usize,
    /// Records per split.
    pub splits: BTreeMap<String, usize>,
    /// Input records that could not be read.
    pub input_errors: usize,
    /// Records a plugin failed on (kept, marked).
    pub failed_records: usize,
    /// The augmenters' seed.
    pub seed: u64,
    /// Records each augmenter made.
    pub augmented: Vec<AugmentedCount>,
    /// Plugins swapped while the stage ran.
    pub swaps: Vec<String>,
    /// The layout the records were read as.
    #[serde(default)]
    pub layout: Option<crate::data::Layout>,
    /// The task the records were read for.
    #[serde(default)]
    pub task: crate::config::TaskKind,
    /// The task's label set, in order (an answer's index is its place here; empty for a
    /// `generate` task).
    #[serde(default = "pubmedqa_labels")]
    pub labels: Vec<String>,
    /// The data stage's fingerprint (`pipeline::data_fingerprint`): configs whose data
    /// sections, input and plugins agree share the outputs.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The answers of a `choice` task: its label set, and whether its questions come with options
/// (the labels are then the options' letters).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLabels {
    /// The labels, in order.
    pub labels: Vec<String>,
    /// Whether each question comes with options.
    pub multiple_choice: bool,
}

impl TaskLabels {
    /// `config`'s task: the data stage's label set (its manifest), else the config's
    /// `task.labels`, else PubMedQA's (none for a `generate` task).
    pub fn of(config: &crate::config::Config) -> Self {
        match DataManifest::of(config).ok().flatten() {
            Some(m) => Self { multiple_choice: m.layout == Some(crate::data::Layout::MultipleChoice), labels: m.labels },
            None if config.task.kind == crate::config::TaskKind::Generate => Self { labels: Vec::new(), multiple_choice: false },
            None => Self {
                labels: config.task.labels.clone().unwrap_or_else(pubmedqa_labels),
                multiple_choice: config.data.layout == Some(crate::data::Layout::MultipleChoice),
            },
        }
    }
}

/// The label set of files written before label sets were recorded.
pub fn pubmedqa_labels() -> Vec<String> {
    crate::data::PUBMEDQA_LABELS.map(str::to_owned).to_vec()
}

impl DataManifest {
    /// The data stage's manifest in `config`'s work folder (`None` when there is none); an
    /// error naming both configs when it was written for other data (configs sharing a
    /// `work_dir` share `data/processed/`, so the data there is the last data stage's).
    pub fn of(config: &crate::config::Config) -> Result<Option<Self>, String> {
        let path = config.work_dir().join("data/processed/manifest.json");
        let Some(m) = read_if_any::<Self>(&path) else { return Ok(None) };
        match m.fingerprint.as_deref().is_none_or(|f| f == crate::pipeline::data_fingerprint(config)) {
            true => Ok(Some(m)),
            false => {
                let folder = path.parent().unwrap_or(&path).display();
                let whose = match m.config.path == config.path {
                    true => format!("the data of {} before its config, inputs, vocabulary or plugins changed", config.path.display()),
                    false => format!("the data of {}, not of {}", m.config.path.display(), config.path.display()),
                };
                Err(format!(
                    "{folder} holds {whose}: run the data stage of this config first (`medtune data --config {}`)",
                    config.path.display()
                ))
            }
        }
    }
}

/// The config of a run, with its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// The config file.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Its text.
    pub text: String,
}

/// The data a run trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainDataRecord {
    /// The training file.
    pub train: FileIdentity,
    /// The data stage's inputs.
    #[serde(default)]
    pub input: Option<Vec<HashedFile>>,
    /// The sha256 of the config the data stage ran under.
    #[serde(default)]
    pub stage_config_sha256: Option<String>,
}

/// The seeds of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seeds {
    /// The trainer's seed.
    pub train: Option<u64>,
    /// The augmenters' seed.
    pub data: u64,
}

/// The build that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// medtune's version.
    pub version: String,
    /// The commit, or `unknown`.
    pub commit: String,
}

/// `runs/<name>/manifest.json`: the audit trail of a training run — the config (text and
/// hash), the data files' hashes, the plugins that made the data, the seeds, the model, the
/// medtune commit and the versions of the crates that did the math — and what the training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run's name.
    pub name: String,
    /// The config.
    pub config: ConfigRecord,
    /// The data.
    pub data: TrainDataRecord,
    /// The plugins that made the data.
    #[serde(default)]
    pub plugins: Option<Vec<PluginRef>>,
    /// The task's label set the adapters answer with, in order.
    #[serde(default = "pubmedqa_labels")]
    pub labels: Vec<String>,
    /// The seeds.
    pub seeds: Seeds,
    /// The model file or folder.
    pub model: FileIdentity,
    /// The `[model]` section.
    pub model_settings: ModelConfig,
    /// The `[train]` section.
    pub train: Option<TrainConfig>,
    /// The build.
    pub medtune: BuildRecord,
    /// Versions of the crates that did the math.
    pub crates: BTreeMap<String, String>,
    /// What the training did.
    #[serde(flatten)]
    pub outcome: TrainRecord,
}

/// What a training run did (part of its manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Where it ran.
    pub device: Device,
    /// On how many GPUs.
    pub gpus: usize,
    /// Optimizer steps done.
    pub steps: usize,
    /// Steps the schedule spans.
    pub total_steps: usize,
    /// The checkpoint step it resumed from.
    pub resumed_from: Option<usize>,
    /// Training examples.
    pub examples: usize,
    /// Records that made no example, and why.
    pub skipped_records: Vec<String>,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Peak memory.
    pub peak_memory_mib: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The adapter folder, once the run finished.
    pub adapter: Option<PathBuf>,
    /// The step whose adapter the run ended with.
    pub selected_step: usize,
}

/// A metric plugin that scored an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPluginRef {
    /// `name@version`.
    pub id: String,
    /// The component's sha256.
    pub sha256: String,
}

/// `runs/<name>/eval/scores.json`: one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    /// The split scored.
    pub split: Split,
    /// Questions scored.
    pub questions: usize,
    /// The adapter (none: the base model).
    pub adapter: Option<PathBuf>,
    /// The model.
    pub model: PathBuf,
    /// The metric plugins' scores (`accuracy`, `macro_f1`, `f1/yes`, `confusion/yes/no`, ...).
    pub scores: BTreeMap<String, f64>,
    /// Reference figures from the config.
    pub baseline: BTreeMap<String, f64>,
    /// The metric plugins.
    pub metric_plugins: Vec<MetricPluginRef>,
    /// Records that made no question, and why.
    pub skipped: Vec<String>,
    /// Wall-clock seconds of the scoring.
    pub seconds: f64,
    /// The label set the questions were scored under, in order.
    #[serde(default = "pubmedqa_labels")]
    pub labels: Vec<String>,
}

impl EvalScores {
    /// A score by name.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied()
    }

    /// Whether these are an `annotate` task's scores (linking, document concepts).
    pub fn is_annotation(&self) -> bool {
        self.score("link/accuracy").is_some() || self.score("document/f1").is_some()
    }
}

/// One line of `runs/<name>/eval/predictions.jsonl`: one scored question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredQuestion {
    /// The record id.
    pub id: String,
    /// The gold answer.
    pub label: String,
    /// The predicted answer.
    pub predicted: String,
    /// The probability of each label of [`EvalScores::labels`] (renormalized over the answers
    /// the question offers).
    pub probabilities: Vec<f64>,
    /// Whether the question is about a rare concept.
    pub rare_concept: bool,
}

/// `checkpoints/step-NNNNNN/trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// The training fingerprint it was written under (a resume under another is refused).
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each artifact reads back what it wrote, through the atomic writer.
    #[test]
    fn artifacts_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = TrainerState { step: 7, fingerprint: "abc".into() };
        let path = dir.path().join("state/trainer_state.json");
        write(&path, &state).expect("write");
        assert_eq!(read::<TrainerState>(&path).expect("read"), state);
        let scores = EvalScores {
            split: Split::Dev,
            questions: 2,
            adapter: None,
            model: "m".into(),
            scores: [("accuracy".to_owned(), 0.5)].into(),
            baseline: BTreeMap::new(),
            metric_plugins: vec![MetricPluginRef { id: "m@0.1.0".into(), sha256: "00".into() }],
            skipped: vec![],
            seconds: 1.5,
            labels: vec!["A".into(), "B".into()],
        };
        let path = dir.path().join("scores.json");
        write(&path, &scores).expect("write");
        let back: EvalScores = read(&path).expect("read");
        assert_eq!(back, scores);
        assert_eq!(back.score("accuracy"), Some(0.5));
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.contains("\"split\": \"dev\""), "{text}");
    }

    /// A file that is not the artifact names itself.
    #[test]
    fn a_bad_artifact_names_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trainer_state.json");
        std::fs::write(&path, "{\"step\": \"x\"}").expect("write");
        let err = read::<TrainerState>(&path).expect_err("not a state").to_string();
        assert!(err.contains("trainer_state.json"), "{err}");
        assert!(read_if_any::<TrainerState>(&dir.path().join("none.json")).is_none());
    }
}
