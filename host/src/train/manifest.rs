//! `runs/<name>/manifest.json`: the audit trail of a training run — the config (text and
//! hash), the data files' hashes, the plugins that made the data (ids, versions, hashes), the
//! seeds, the model, the medtune commit and the versions of the crates that did the math.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::Config;
use crate::data::file_hash;

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

/// A file's hash, skipping files over 2 GiB (size and name instead: hashing a 13 GB checkpoint
/// on every run is not worth it).
fn hash_or_size(path: &Path) -> Value {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() < 2 << 30 => json!({"path": path, "sha256": file_hash(path)}),
        Ok(m) => json!({"path": path, "bytes": m.len()}),
        Err(_) => json!({"path": path, "missing": true}),
    }
}

/// The manifest of a run; `extra` is merged in (steps, timings, device).
pub fn manifest(config: &Config, data: &Path, model: &Path, extra: Value) -> Value {
    let text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let stage: Value = std::fs::read_to_string(config.work_dir().join("data/processed/manifest.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let mut m = json!({
        "name": config.name,
        "config": {"path": config.path, "sha256": file_hash(&config.path), "text": text},
        "data": {"train": hash_or_size(data), "input": stage["inputs"], "stage_config_sha256": stage["config"]["sha256"]},
        "plugins": stage["plugins"],
        "seeds": {"train": config.train.as_ref().map(|t| t.seed), "data": config.data.seed},
        "model": hash_or_size(model),
        "model_settings": config.model,
        "train": config.train,
        "medtune": {"version": env!("CARGO_PKG_VERSION"), "commit": git_commit()},
        "crates": CRATES.iter().map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(obj), Value::Object(more)) = (m.as_object_mut(), extra) {
        obj.extend(more);
    }
    m
}

/// Writes `manifest.json` into `dir` atomically.
pub fn write(dir: &Path, manifest: &Value) -> std::io::Result<PathBuf> {
    let path = dir.join("manifest.json");
    crate::atomic::write(&path, serde_json::to_string_pretty(manifest).unwrap_or_default().as_bytes())?;
    Ok(path)
}
