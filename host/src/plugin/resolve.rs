//! Which component fills each slot of the chain: the slot's `path`, else the one `.wasm` of
//! the plugin folders with the slot's name and a version its requirement allows, else the
//! built-in plugin. Start-up and hot swap both decide here, so what runs after a swap is what
//! the next start would load.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::builtin::{Builtin, builtin};
use super::engine::PluginEngine;
use super::error::LoadError;
use super::set::{SlotSpec, wasm_files};

/// A component file of a plugin folder, with who it says it is.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// `describe().name`.
    pub name: String,
    /// `describe().version`.
    pub version: String,
}

/// What the plugin folders hold: usable components, and files that are not (with why).
#[derive(Debug, Default)]
pub struct Scan {
    /// Components that compiled, passed the contract check and described themselves.
    pub found: Vec<Found>,
    /// Files that did not, with the reason.
    pub unusable: Vec<(PathBuf, String)>,
}

/// Where a slot's component comes from.
#[derive(Debug, Clone)]
pub enum Pick {
    /// A component file (the slot's `path`, or one of the plugin folders).
    File(PathBuf),
    /// The plugin built into medtune.
    Builtin(Builtin),
}

impl Pick {
    /// The component's bytes (a built-in's are not copied).
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>, LoadError> {
        match self {
            Pick::File(path) => std::fs::read(path).map(Cow::Owned).map_err(|source| LoadError::Read { path: path.clone(), source }),
            Pick::Builtin(b) => Ok(Cow::Borrowed(b.wasm)),
        }
    }

    /// How messages name it.
    pub fn origin(&self) -> String {
        match self {
            Pick::File(path) => path.display().to_string(),
            Pick::Builtin(b) => format!("builtin:{}", b.name),
        }
    }
}

/// What each file's content was found to be, by sha256, so a rescan inspects only new files.
pub type Memo = HashMap<String, Result<(String, String), String>>;

/// Inspects every `.wasm` of `dirs` (a folder that cannot be listed is an error).
pub fn scan(engine: &PluginEngine, dirs: &[PathBuf], memo: &mut Memo) -> Result<Scan, LoadError> {
    let mut out = Scan::default();
    for dir in dirs {
        for path in wasm_files(dir)? {
            // a file gone between the listing and the read was moved away: not an error
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let hash = PluginEngine::content_hash(&bytes);
            let seen = memo.entry(hash).or_insert_with(|| {
                engine.inspect(&bytes, &path.display().to_string()).map(|(info, _)| (info.name, info.version)).map_err(|e| e.to_string())
            });
            match seen {
                Ok((name, version)) => out.found.push(Found { path, name: name.clone(), version: version.clone() }),
                Err(reason) => out.unusable.push((path, reason.clone())),
            }
        }
    }
    Ok(out)
}

/// Whether `version` meets the slot's requirement; why not, if it does not.
pub fn version_refusal(spec: &SlotSpec, version: &str) -> Option<String> {
    let req = spec.version.as_ref()?;
    match semver::Version::parse(version) {
        Ok(v) if req.matches(&v) => None,
        Ok(_) => Some(format!("version {version} is outside the config's requirement `{req}` for {}", spec.name)),
        Err(e) => Some(format!("version {version:?} is not a semantic version ({e}), and the config requires `{req}` for {}", spec.name)),
    }
}

/// The component for `spec`, given what the folders hold. A folder file of the slot's name
/// whose version the slot does not allow is passed over; two that it allows are an error
/// naming both.
pub fn pick(spec: &SlotSpec, scan: &Scan, dirs: &[PathBuf]) -> Result<Pick, String> {
    if let Some(path) = &spec.path {
        return Ok(Pick::File(path.clone()));
    }
    let named: Vec<&Found> = scan.found.iter().filter(|f| f.name == spec.name).collect();
    let allowed: Vec<&&Found> = named.iter().filter(|f| version_refusal(spec, &f.version).is_none()).collect();
    match allowed.as_slice() {
        [one] => Ok(Pick::File(one.path.clone())),
        [] => builtin(&spec.name).map(Pick::Builtin).ok_or_else(|| {
            let passed: Vec<String> = named.iter().map(|f| format!("{} is {}", f.path.display(), f.version)).collect();
            format!(
                "no plugin {} of an allowed version: not built in, not in the plugin folders ({}){}, and no path given",
                spec.name,
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
                if passed.is_empty() { String::new() } else { format!(" (passed over: {})", passed.join(", ")) },
            )
        }),
        many => Err(format!(
            "{} files hold plugin {}: {}; remove all but one, or pin a `version` or a `path` for it in the config",
            many.len(),
            spec.name,
            many.iter().map(|f| format!("{} ({})", f.path.display(), f.version)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Moves a refused file into `.refused/` beside it, with the reason in `<file>.reason`, so
/// that the next start does not meet it; returns where it went.
pub fn move_aside(path: &Path, reason: &str) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(".")).join(".refused");
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin.wasm".into());
    let target = dir.join(&name);
    std::fs::rename(path, &target)?;
    crate::atomic::write(&dir.join(format!("{name}.reason")), format!("{reason}\n").as_bytes())?;
    Ok(target)
}
