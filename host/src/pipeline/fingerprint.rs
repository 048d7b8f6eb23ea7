//! What [`super::run`] needs to skip and resume stages: a fingerprint of each stage's inputs
//! (config sections, input files' content hashes, plugin hashes, the upstream stage's
//! fingerprint) and the record of what each stage last finished with
//! (`runs/<name>/stages.json`). A stage is skipped when its fingerprint is unchanged and its
//! outputs exist. (An unfinished training resumes from its last checkpoint when the
//! checkpoint was written under the same training config, data and model: `train::resumable`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Stage;
use crate::artifacts::{self, ArtifactError};
use crate::config::Config;
use crate::hash::{file_sha256, sha256_hex, short_digest};

/// What a stage last did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The fingerprint of its inputs.
    pub fingerprint: String,
    /// Whether it finished.
    pub done: bool,
}

/// `runs/<name>/stages.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stages(pub BTreeMap<String, StageRecord>);

impl Stages {
    fn path(config: &Config) -> PathBuf {
        config.run_dir().join("stages.json")
    }

    /// The record of `config`'s run (empty when there is none).
    pub fn load(config: &Config) -> Self {
        artifacts::read_if_any(&Self::path(config)).unwrap_or_default()
    }

    /// Records a stage's state and writes the file atomically.
    pub fn set(&mut self, config: &Config, stage: Stage, fingerprint: &str, done: bool) -> Result<(), ArtifactError> {
        self.0.insert(stage.to_string(), StageRecord { fingerprint: fingerprint.to_owned(), done });
        artifacts::write(&Self::path(config), self)
    }

    /// Whether `stage` finished with this fingerprint.
    pub fn done_with(&self, stage: Stage, fingerprint: &str) -> bool {
        self.0.get(&stage.to_string()).is_some_and(|r| r.done && r.fingerprint == fingerprint)
    }
}

/// A file's identity: its content hash, or for files over 1 GiB its size and mtime; a
/// folder's: its files' identities, by name.
fn identity(path: &Path) -> String {
    if path.is_dir() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(path).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        files.sort();
        return short_digest(&files.iter().map(|f| format!("{}={}", f.display(), identity(f))).collect::<Vec<_>>());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 1 << 30 => format!("{}:{}:{:?}", path.display(), m.len(), m.modified().ok()),
        Ok(_) => file_sha256(path),
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// The hashes of the plugins a config can load: the built-ins and every `.wasm` in its plugin
/// folders and explicit paths.
fn plugin_hashes(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = crate::plugin::builtins().map(|b| format!("{}:{}", b.name, sha256_hex(b.wasm))).collect();
    for dir in config.plugin_dirs() {
        for f in crate::plugin::wasm_files(&dir).unwrap_or_default() {
            out.push(identity(&f));
        }
    }
    for slot in &config.plugins.chain {
        if let Some(p) = &slot.path {
            out.push(identity(&config.resolve(p)));
        }
    }
    out
}

/// The data stage's fingerprint.
pub fn data_fingerprint(config: &Config) -> String {
    let mut parts = vec![
        env!("CARGO_PKG_VERSION").to_owned(),
        format!("{:?}", config.data),
        format!("{:?}", config.task),
        format!("{:?}", config.plugins),
        format!("{:?}", config.vocab),
    ];
    parts.extend(config.inputs().iter().map(|(path, _)| identity(path)));
    // the vocabulary's files: a folder built again with other contents reruns the stage
    if let Some(v) = &config.vocab {
        parts.push(identity(&config.resolve(&v.dir)));
    }
    if let Some(t) = &config.data.test_ground_truth {
        parts.push(identity(&config.resolve(t)));
    }
    parts.extend(plugin_hashes(config));
    short_digest(&parts)
}

/// The training stage's fingerprint (`model` is the resolved model file or folder): the
/// trainer's own fingerprint of the training config and model section (which leaves out the
/// number of GPUs, as a checkpoint does), over the data stage's fingerprint, and the model.
pub fn train_fingerprint(config: &Config, data: &str, model: &Path) -> String {
    let trainer = config.train.as_ref().map(|t| crate::train::fingerprint(t, data, &config.model)).unwrap_or_default();
    short_digest(&[data.to_owned(), trainer, identity(model)])
}

/// The evaluation stage's fingerprint.
pub fn eval_fingerprint(config: &Config, train: &str) -> String {
    short_digest(&[train.to_owned(), serde_json::to_string(&config.eval).unwrap_or_default(), format!("{:?}", config.plugins)])
}

/// The export stage's fingerprint.
pub fn export_fingerprint(config: &Config, train: &str) -> String {
    short_digest(&[train.to_owned(), serde_json::to_string(&config.export).unwrap_or_default()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of GPUs changes neither the trainer's fingerprint nor the stage's, so a run
    /// on 2 GPUs is not trained again on 1.
    #[test]
    fn the_number_of_gpus_leaves_the_training_stage_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("in.json"), "{}").expect("input");
        let text = "name = \"x\"\n[data]\ninput = \"in.json\"\n[model]\ndevice = \"cuda\"\n[train]\ngrad_accum = 2\n";
        std::fs::write(dir.path().join("c.toml"), text).expect("config");
        let one = Config::load(&dir.path().join("c.toml")).expect("config");
        let two = one.clone().with_gpus(2).expect("2 GPUs");
        let model = dir.path().join("model.gguf");
        assert_eq!(train_fingerprint(&one, "d", &model), train_fingerprint(&two, "d", &model));
        assert_ne!(train_fingerprint(&one, "d", &model), train_fingerprint(&one, "e", &model));
    }
}
