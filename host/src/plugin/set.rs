//! A plugin set: the chain of plugins a config names, each slot filled from an explicit
//! file, a plugin folder, or the built-in defaults, and swapped between batches.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use super::builtin::builtin;
use super::contract::kind_name;
use super::engine::PluginEngine;
use super::error::LoadError;
use super::instance::Plugin;
use super::sandbox::Sandbox;
use super::types::PluginKind;
use super::watch::Watcher;

/// One slot of the chain, as the config describes it.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    /// The plugin's name (what its `describe()` says).
    pub name: String,
    /// The kind the slot needs.
    pub kind: PluginKind,
    /// An explicit component file; otherwise the plugin folders, then the built-ins.
    pub path: Option<PathBuf>,
    /// Its limits, grants and settings.
    pub sandbox: Sandbox,
    /// The version the config pins, if any: another version is refused (at load and swap).
    pub version: Option<String>,
}

impl SlotSpec {
    /// Why `plugin` cannot fill this slot because of its version, if it cannot.
    pub fn version_mismatch(&self, plugin: &Plugin) -> Option<String> {
        let want = self.version.as_deref()?;
        (plugin.info().version != want)
            .then(|| format!("{} is version {}, but the config pins {} to {want}", plugin.origin(), plugin.info().version, self.name))
    }
}

/// What the watcher found in a plugin folder.
pub enum SwapEvent {
    /// A new version, compiled, checked and configured, ready to take over `slot`.
    Ready { slot: usize, path: PathBuf, plugin: Box<Plugin> },
    /// A file that was refused; the running version stays.
    Refused { path: PathBuf, error: String },
}

/// The chain of loaded plugins.
pub struct PluginSet {
    engine: PluginEngine,
    specs: Vec<SlotSpec>,
    dirs: Vec<PathBuf>,
    slots: Vec<Plugin>,
    swaps: Option<(Watcher, Receiver<SwapEvent>)>,
}

impl PluginSet {
    /// Loads every slot: from its `path`, else from a `.wasm` in `dirs` whose plugin has the
    /// slot's name, else from the built-in plugin of that name.
    pub fn load(engine: PluginEngine, specs: Vec<SlotSpec>, dirs: Vec<PathBuf>) -> Result<Self, LoadError> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for dir in &dirs {
            for path in wasm_files(dir)? {
                let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
                let (info, _) = engine.inspect(&bytes, &path.display().to_string())?;
                found.push((info.name, path));
            }
        }
        let mut slots = Vec::with_capacity(specs.len());
        for spec in &specs {
            let from_dir = found.iter().find(|(name, _)| *name == spec.name).map(|(_, p)| p.clone());
            let plugin = match spec.path.clone().or(from_dir) {
                Some(path) => engine.load_file(&path, Some(spec.kind), spec.sandbox.clone())?,
                None => {
                    let b = builtin(&spec.name).ok_or_else(|| LoadError::Contract {
                        origin: format!("{} {}", kind_name(spec.kind), spec.name),
                        detail: format!(
                            "no plugin of that name: not built in, not in the plugin folders ({}), and no path given",
                            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    })?;
                    engine.load(b.wasm, &format!("builtin:{}", b.name), Some(spec.kind), spec.sandbox.clone())?
                }
            };
            if let Some(detail) = spec.version_mismatch(&plugin) {
                return Err(LoadError::Contract { origin: plugin.id(), detail });
            }
            slots.push(plugin);
        }
        Ok(Self { engine, specs, dirs, slots, swaps: None })
    }

    /// Starts watching the plugin folders; new versions are applied by [`PluginSet::apply_swaps`].
    pub fn watch(&mut self) -> Result<(), LoadError> {
        if self.swaps.is_none() && !self.dirs.is_empty() {
            let (watcher, rx) = Watcher::start(self.engine.clone(), self.specs.clone(), self.dirs.clone())?;
            self.swaps = Some((watcher, rx));
        }
        Ok(())
    }

    /// Swaps in the versions the watcher has ready (call between batches); returns one line
    /// per swap or refusal, for the log.
    pub fn apply_swaps(&mut self) -> Vec<String> {
        let Some((_, rx)) = &self.swaps else { return Vec::new() };
        let mut log = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                SwapEvent::Ready { slot, path, plugin } => {
                    if let Some(detail) = self.specs.get(slot).and_then(|s| s.version_mismatch(&plugin)) {
                        log.push(format!("refused {}: {detail}; the running version stays", path.display()));
                        continue;
                    }
                    let Some(old) = self.slots.get_mut(slot) else { continue };
                    log.push(format!("swapped {} -> {} (sha256 {}) from {}", old.id(), plugin.id(), &plugin.hash()[..12], path.display()));
                    *old = *plugin;
                }
                SwapEvent::Refused { path, error } => {
                    log.push(format!("refused {}: {error}; the running version stays", path.display()));
                }
            }
        }
        log
    }

    /// The loaded plugins, in chain order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.slots
    }

    /// The loaded plugins, to call them.
    pub fn plugins_mut(&mut self) -> &mut [Plugin] {
        &mut self.slots
    }

    /// The slot specs, in chain order.
    pub fn specs(&self) -> &[SlotSpec] {
        &self.specs
    }
}

/// The `.wasm` files of a folder, sorted by name.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file()).collect();
    files.sort();
    Ok(files)
}
