//! A plugin set: the chain of plugins a config names, each slot filled from an explicit
//! file, a plugin folder, or the built-in defaults (`resolve.rs` decides), and swapped
//! between batches.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use super::builtin::builtin;
use super::contract::kind_name;
use super::engine::PluginEngine;
use super::error::LoadError;
use super::instance::Plugin;
use super::resolve::{self, Memo, Pick};
use super::sandbox::Sandbox;
use super::types::PluginKind;
use super::watch::{ConfigSource, Watcher};

/// One slot of the chain, as the config describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    /// Where the slot is written, as errors name it (`config.toml: plugins.chain[0] (x)`).
    pub entry: String,
    /// The plugin's name (what its `describe()` says).
    pub name: String,
    /// The kind the slot needs.
    pub kind: PluginKind,
    /// An explicit component file; otherwise the plugin folders, then the built-ins.
    pub path: Option<PathBuf>,
    /// Its limits, grants and settings.
    pub sandbox: Sandbox,
    /// The versions the config allows (a semver requirement: `0.1` and `^0.1` allow any
    /// 0.1.x, `=0.1.0` that one); another version is passed over or refused.
    pub version: Option<semver::VersionReq>,
}

/// What the watcher has for the chain.
pub enum SwapEvent {
    /// A component checked, instantiated and configured, ready to take over `slot`.
    Ready {
        /// The slot it fills.
        slot: usize,
        /// The slot's spec it was configured with (new settings after a config change).
        spec: Box<SlotSpec>,
        /// Where it came from, for the log.
        from: String,
        /// Why it was made (a changed file, settings or granted files).
        why: String,
        /// The plugin.
        plugin: Box<Plugin>,
    },
    /// Something that was refused; the running versions stay.
    Refused {
        /// The file, config or slot refused.
        what: String,
        /// Why, and where a refused file was moved.
        error: String,
    },
}

/// The chain of loaded plugins.
pub struct PluginSet {
    engine: PluginEngine,
    specs: Vec<SlotSpec>,
    dirs: Vec<PathBuf>,
    slots: Vec<Plugin>,
    swaps: Option<(Watcher, Receiver<SwapEvent>)>,
    precedence: Vec<String>,
    /// Calls in a row that time out after which a slot is benched (`None`: never).
    bench_after: Option<u32>,
    /// Per slot: calls in a row that timed out, and whether it is benched.
    strikes: Vec<u32>,
    benched: Vec<bool>,
}

/// Loads `pick` (its `bytes`) into `spec`'s slot: kind, sandbox, settings and version checked.
pub(crate) fn load_pick(engine: &PluginEngine, spec: &SlotSpec, pick: &Pick, bytes: &[u8]) -> Result<Plugin, LoadError> {
    let plugin = engine.load(bytes, &pick.origin(), Some(spec.kind), spec.sandbox.clone()).map_err(|e| match e {
        LoadError::Needs { origin, detail, .. } => LoadError::Needs { entry: format!("{}: ", spec.entry), origin, detail },
        e => e,
    })?;
    match resolve::version_refusal(spec, &plugin.info().version) {
        Some(detail) => Err(LoadError::Contract { origin: plugin.id(), detail }),
        None => Ok(plugin),
    }
}

impl PluginSet {
    /// Loads every slot: from its `path`, else from the one `.wasm` in `dirs` whose plugin has
    /// the slot's name and an allowed version, else from the built-in plugin of that name.
    /// Folder files that are not usable are skipped with a warning.
    pub fn load(engine: PluginEngine, specs: Vec<SlotSpec>, dirs: Vec<PathBuf>) -> Result<Self, LoadError> {
        let scan = resolve::scan(&engine, &dirs, &mut Memo::new())?;
        for (path, reason) in &scan.unusable {
            tracing::warn!("skipping plugin file {}: {reason}", path.display());
        }
        for f in &scan.found {
            if let Some(reason) =
                specs.iter().find(|s| s.name == f.name && s.path.is_none()).and_then(|s| resolve::version_refusal(s, &f.version))
            {
                tracing::warn!("skipping plugin file {}: {reason}", f.path.display());
            }
        }
        let mut slots = Vec::with_capacity(specs.len());
        for spec in &specs {
            let pick = resolve::pick(spec, &scan, &dirs)
                .map_err(|detail| LoadError::Contract { origin: format!("{} {}", kind_name(spec.kind), spec.name), detail })?;
            let plugin = match (load_pick(&engine, spec, &pick, &pick.bytes()?), &pick, builtin(&spec.name)) {
                (Ok(plugin), _, _) => plugin,
                (Err(e), Pick::File(path), Some(b)) if spec.path.is_none() => {
                    tracing::warn!("skipping plugin file {}: {e}; the built-in {} takes its place", path.display(), b.name);
                    load_pick(&engine, spec, &Pick::Builtin(b), b.wasm)?
                }
                (Err(e), _, _) => return Err(e),
            };
            slots.push(plugin);
        }
        let n = slots.len();
        Ok(Self {
            engine,
            specs,
            dirs,
            slots,
            swaps: None,
            precedence: Vec::new(),
            bench_after: None,
            strikes: vec![0; n],
            benched: vec![false; n],
        })
    }

    /// Starts watching the plugin folders, the slots' own files and granted folders, and the
    /// config (when given) for new settings; what changes is applied by
    /// [`PluginSet::apply_swaps`].
    pub fn watch(&mut self, config: Option<ConfigSource>) -> Result<(), LoadError> {
        if self.swaps.is_none() {
            let running = self.slots.iter().map(|p| p.hash().to_owned()).collect();
            let (watcher, rx) = Watcher::start(self.engine.clone(), self.specs.clone(), self.dirs.clone(), running, config)?;
            self.swaps = Some((watcher, rx));
        }
        Ok(())
    }

    /// Swaps in what the watcher has ready (call between batches); returns one line per swap
    /// or refusal, for the log.
    pub fn apply_swaps(&mut self) -> Vec<String> {
        let Some((_, rx)) = &self.swaps else { return Vec::new() };
        let mut log = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                SwapEvent::Ready { slot, spec, from, why, plugin } => {
                    let (Some(old), Some(old_spec)) = (self.slots.get_mut(slot), self.specs.get_mut(slot)) else { continue };
                    let older = |a: &Plugin, b: &Plugin| match (
                        semver::Version::parse(&a.info().version),
                        semver::Version::parse(&b.info().version),
                    ) {
                        (Ok(a), Ok(b)) => a < b,
                        _ => false,
                    };
                    let rollback = if older(&plugin, old) { ", a rollback" } else { "" };
                    log.push(format!(
                        "swapped {}#{} -> {}#{} from {from} ({why}{rollback})",
                        old.id(),
                        short(old.hash()),
                        plugin.id(),
                        short(plugin.hash())
                    ));
                    *old = *plugin;
                    *old_spec = *spec;
                    if std::mem::take(&mut self.benched[slot]) {
                        log.push(format!("{} is back in the chain", old.id()));
                    }
                    self.strikes[slot] = 0;
                }
                SwapEvent::Refused { what, error } => log.push(format!("refused {what}: {error}; the running version stays")),
            }
        }
        log
    }

    /// Takes a slot out of the chain after `n` calls in a row that time out, until a swap
    /// replaces it (a server: one plugin stuck on every request would hold all of them up).
    pub fn bench_after(mut self, n: u32) -> Self {
        self.bench_after = Some(n.max(1));
        self
    }

    /// Which slots are benched, by slot.
    pub fn benched(&self) -> Vec<bool> {
        self.benched.clone()
    }

    /// Counts a slot's call: one that timed out is a strike, one that did not clears them.
    /// Returns a log line when the slot is benched by it.
    pub fn record_call(&mut self, slot: usize, timed_out: bool) -> Option<String> {
        let (Some(strikes), Some(limit), Some(plugin)) = (self.strikes.get_mut(slot), self.bench_after, self.slots.get(slot)) else {
            return None;
        };
        *strikes = if timed_out { *strikes + 1 } else { 0 };
        if *strikes < limit || self.benched[slot] {
            return None;
        }
        self.benched[slot] = true;
        Some(format!("{} timed out on {limit} calls in a row: taken out of the chain until it is swapped", plugin.id()))
    }

    /// Sets which normalizers' mentions win where two overlap (names, highest first).
    pub fn with_precedence(mut self, names: Vec<String>) -> Self {
        self.precedence = names;
        self
    }

    /// The normalizers by precedence, highest first (empty: every mention is kept).
    pub fn precedence(&self) -> &[String] {
        &self.precedence
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

/// The first 12 hex digits of a content hash, as logs show it.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The `.wasm` files of a folder, sorted by name.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file()).collect();
    files.sort();
    Ok(files)
}
