//! Several adapters over one base model: the models a server answers as, picked by a
//! request's `model`. The main model (the config's name) and every named adapter, kept apart
//! from the weights ([`Lora`]) so that sequences of different adapters share a batch. Named
//! adapters come from the command line (`--adapter NAME=DIR`) and from a watched folder
//! (`--adapters-dir`: one subfolder per adapter, named after it), whose adapters are added,
//! replaced and removed while serving. A request holds the adapter it started with, so a
//! replacement takes over at the next request and nothing in flight fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use notify::{RecursiveMode, Watcher as _};

use super::ApiError;
use crate::engine::Engine;
use crate::model::{Adapter, Llama, Lora, ModelError};

/// A folder that keeps changing is read again once it has been quiet this long.
const QUIET: Duration = Duration::from_millis(300);

/// `--adapter NAME=DIR`: an adapter served as the model `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSpec {
    /// The model's name in the API.
    pub name: String,
    /// The PEFT adapter folder.
    pub dir: PathBuf,
}

impl AdapterSpec {
    /// `NAME=DIR` as a named adapter; `None` for a plain folder (`DIR`).
    pub fn parse(arg: &str) -> Option<Self> {
        let (name, dir) = arg.split_once('=')?;
        valid_name(name).then(|| Self { name: name.to_owned(), dir: PathBuf::from(dir) })
    }
}

/// Whether `name` can be a model's name: letters, digits, `-`, `_`, `.` and `:`, not starting
/// with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// Where a named adapter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The command line: kept for the server's life.
    Given,
    /// The watched folder, with its files' times and sizes when it was read.
    Folder(Stamp),
}

type Stamp = Vec<(SystemTime, u64)>;

struct Entry {
    lora: Arc<Lora>,
    origin: Origin,
}

/// The models the server answers as.
pub struct Models {
    main: String,
    main_lora: RwLock<Option<Arc<Lora>>>,
    named: RwLock<BTreeMap<String, Entry>>,
    /// The folder's adapters that failed to load, as they were then (said once).
    refused: Mutex<BTreeMap<String, Stamp>>,
}

impl Models {
    /// Only the main model, called `main`.
    pub fn new(main: String) -> Self {
        Self { main, main_lora: RwLock::new(None), named: RwLock::new(BTreeMap::new()), refused: Mutex::new(BTreeMap::new()) }
    }

    /// The main model's name.
    pub fn main(&self) -> &str {
        &self.main
    }

    /// Every model's name, the main one first.
    pub fn ids(&self) -> Vec<String> {
        let named = self.named.read().map(|n| n.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        std::iter::once(self.main.clone()).chain(named).collect()
    }

    /// The adapter of the model a request names (none: the weights as loaded), or 404.
    pub fn pick(&self, model: &str) -> Result<Option<Arc<Lora>>, ApiError> {
        if model == self.main {
            return Ok(self.main_lora.read().ok().and_then(|l| l.clone()));
        }
        match self.named.read().ok().and_then(|n| n.get(model).map(|e| e.lora.clone())) {
            Some(lora) => Ok(Some(lora)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("unknown model {model:?}: this server serves {} (see /v1/models)", quoted(&self.ids())),
            )),
        }
    }

    /// Applies `lora` unmerged to the main model's requests.
    pub fn set_main(&self, lora: Lora) {
        if let Ok(mut l) = self.main_lora.write() {
            *l = Some(Arc::new(lora));
        }
    }

    /// Adds the command line's adapter `spec`, loaded onto `llama`.
    pub fn add_given(&self, spec: &AdapterSpec, llama: &Llama) -> Result<(), String> {
        if spec.name == self.main || self.named.read().is_ok_and(|n| n.contains_key(&spec.name)) {
            return Err(format!("--adapter {}={}: the name {:?} is taken", spec.name, spec.dir.display(), spec.name));
        }
        let lora = load(&spec.dir, llama).map_err(|e| format!("--adapter {}={}: {e}", spec.name, spec.dir.display()))?;
        if let Ok(mut n) = self.named.write() {
            n.insert(spec.name.clone(), Entry { lora: Arc::new(lora), origin: Origin::Given });
        }
        Ok(())
    }

    /// Reads the watched folder `dir` again: its new and changed adapters are loaded (one
    /// that fails to load keeps its previous version, if any), those gone are removed. Says
    /// what it did through `log`.
    pub fn rescan(&self, dir: &Path, llama: &Llama, log: &mut dyn FnMut(String)) {
        let found = folder_adapters(dir, log);
        let current: BTreeMap<String, Origin> =
            self.named.read().map(|n| n.iter().map(|(k, e)| (k.clone(), e.origin.clone())).collect()).unwrap_or_default();
        for (name, origin) in &current {
            if matches!(origin, Origin::Folder(_)) && !found.contains_key(name) {
                if let Ok(mut n) = self.named.write() {
                    n.remove(name);
                }
                log(format!("adapter {name}: removed (its folder is gone)"));
            }
        }
        let mut refused = match self.refused.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        refused.retain(|name, _| found.contains_key(name));
        for (name, (sub, stamp)) in found {
            if refused.get(&name) == Some(&stamp) {
                continue;
            }
            let previous = current.get(&name);
            match previous {
                Some(Origin::Folder(s)) if *s == stamp => continue,
                Some(Origin::Given) => {
                    log(format!("adapter {name} in {}: not loaded, --adapter gives that name", sub.display()));
                    refused.insert(name, stamp);
                    continue;
                }
                _ if name == self.main => {
                    log(format!("adapter {name} in {}: not loaded, that is the main model's name", sub.display()));
                    refused.insert(name, stamp);
                    continue;
                }
                _ => {}
            }
            match load(&sub, llama) {
                Ok(lora) => {
                    if let Ok(mut n) = self.named.write() {
                        n.insert(name.clone(), Entry { lora: Arc::new(lora), origin: Origin::Folder(stamp) });
                    }
                    refused.remove(&name);
                    let what = if previous.is_some() { "replaced" } else { "added" };
                    log(format!("adapter {name}: {what} from {}", sub.display()));
                }
                Err(e) => {
                    let kept = if previous.is_some() { "; the previous version stays" } else { "" };
                    log(format!("adapter {name} in {}: refused: {e}{kept}", sub.display()));
                    refused.insert(name, stamp);
                }
            }
        }
    }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A PEFT adapter folder, kept apart from `llama`'s weights.
pub fn load(dir: &Path, llama: &Llama) -> Result<Lora, ModelError> {
    Adapter::load(dir, llama.device())?.unmerged(llama)
}

/// The adapter subfolders of `dir` (those with an `adapter_config.json`), by name, with their
/// files' stamps. A subfolder whose name cannot be a model's is skipped, and said.
fn folder_adapters(dir: &Path, log: &mut dyn FnMut(String)) -> BTreeMap<String, (PathBuf, Stamp)> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            log(format!("adapters folder {}: cannot read it: {e}", dir.display()));
            return out;
        }
    };
    for entry in entries.flatten() {
        let sub = entry.path();
        let Some(name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if name.starts_with('.') || !sub.join("adapter_config.json").is_file() {
            continue;
        }
        if !valid_name(&name) {
            log(format!("adapter folder {}: not loaded, a model's name takes letters, digits, '-', '_', '.' and ':'", sub.display()));
            continue;
        }
        let stamp: Stamp = ["adapter_config.json", "adapter_model.safetensors"]
            .iter()
            .map(|f| {
                std::fs::metadata(sub.join(f))
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
                    .unwrap_or((SystemTime::UNIX_EPOCH, 0))
            })
            .collect();
        out.insert(name, (sub, stamp));
    }
    out
}

/// A watched adapters folder.
pub struct AdapterFolder {
    dir: PathBuf,
    events: Receiver<notify::Result<notify::Event>>,
    watcher: notify::RecommendedWatcher,
}

impl AdapterFolder {
    /// Starts watching `dir` (changes are kept until [`AdapterFolder::serve`] reads them).
    pub fn watch(dir: &Path) -> std::io::Result<Self> {
        let fail = |e: notify::Error| std::io::Error::other(format!("cannot watch the adapters folder {}: {e}", dir.display()));
        if !dir.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("the adapters folder {} does not exist", dir.display())));
        }
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(tx).map_err(fail)?;
        watcher.watch(dir, RecursiveMode::Recursive).map_err(fail)?;
        Ok(Self { dir: dir.to_owned(), events, watcher })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `models` in step with the folder, on a thread of its own, for the server's life.
    pub fn serve(self, engine: Arc<Engine>, models: Arc<Models>) -> std::io::Result<()> {
        std::thread::Builder::new().name("medtune-adapter-watch".into()).spawn(move || {
            let Engine::Candle(m) = &*engine else { return };
            let _watching = self.watcher;
            let mut log = |line: String| eprintln!("{line}");
            loop {
                // wait for a change, then for quiet
                match self.events.recv() {
                    Ok(_) => {}
                    Err(_) => return,
                }
                loop {
                    match self.events.recv_timeout(QUIET) {
                        Ok(_) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                models.rescan(&self.dir, &m.llama, &mut log);
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_adapters_parse_and_plain_folders_do_not() {
        assert_eq!(AdapterSpec::parse("cardio=runs/c/adapter"), Some(AdapterSpec { name: "cardio".into(), dir: "runs/c/adapter".into() }));
        assert_eq!(AdapterSpec::parse("runs/c/adapter"), None);
        assert_eq!(AdapterSpec::parse("runs/a=b/adapter"), None, "a path with '=' in it");
        assert!(valid_name("llama-3.1:med_v2") && !valid_name(".hidden") && !valid_name("a b") && !valid_name(""));
    }
}
