//! `runs/<name>/manifest.json` (`artifacts::RunManifest`): the audit trail of a training run
//! — the config (text and hash), the data files' hashes, the plugins that made the data (ids,
//! versions, hashes), the seeds, the model, the medtune commit and the versions of the crates
//! that did the math — and what the training did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifacts::{
    self, ArtifactError, BuildRecord, ConfigRecord, DataManifest, FileIdentity, RunManifest, Seeds, TrainDataRecord, TrainRecord,
};
use crate::config::Config;
use crate::hash::file_sha256;

/// Crate versions from Cargo.lock at build time.
const CRATES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/crate_versions.rs"));

/// The commit of the source tree this binary was built in (`git rev-parse HEAD` there, at run
/// time), or `unknown` when that is not a git checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The manifest of a run that trained on `data` from `model` and did `outcome`.
pub fn manifest(config: &Config, data: &Path, model: &Path, outcome: TrainRecord) -> RunManifest {
    let text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let stage: Option<DataManifest> = artifacts::read_if_any(&config.work_dir().join("data/processed/manifest.json"));
    RunManifest {
        name: config.name.clone(),
        config: ConfigRecord { path: config.path.clone(), sha256: file_sha256(&config.path), text },
        data: TrainDataRecord {
            train: FileIdentity::of(data),
            input: stage.as_ref().map(|s| s.inputs.clone()),
            stage_config_sha256: stage.as_ref().map(|s| s.config.sha256.clone()),
        },
        labels: stage.as_ref().map_or_else(artifacts::pubmedqa_labels, |s| s.labels.clone()),
        plugins: stage.map(|s| s.plugins),
        seeds: Seeds { train: config.train.as_ref().map(|t| t.seed), data: config.data.seed },
        model: FileIdentity::of(model),
        model_settings: config.model.clone(),
        train: config.train.clone(),
        medtune: BuildRecord { version: env!("CARGO_PKG_VERSION").into(), commit: git_commit() },
        crates: CRATES.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        outcome,
    }
}

/// Writes `manifest.json` into `dir` atomically.
pub fn write(dir: &Path, manifest: &RunManifest) -> Result<PathBuf, ArtifactError> {
    let path = dir.join("manifest.json");
    artifacts::write(&path, manifest)?;
    Ok(path)
}
