//! Hot swap: watches plugin folders and prepares new versions off the hot path (compile,
//! contract check, instantiate, configure) for the chain to swap in between batches.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::engine::PluginEngine;
use super::error::LoadError;
use super::set::{SlotSpec, SwapEvent, wasm_files};

/// Files that keep changing are picked up once they have been quiet this long.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// A running folder watcher; dropping it stops the watching.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
}

impl Watcher {
    /// Watches `dirs`; ready versions and refusals arrive on the returned channel.
    pub fn start(engine: PluginEngine, specs: Vec<SlotSpec>, dirs: Vec<PathBuf>) -> Result<(Self, Receiver<SwapEvent>), LoadError> {
        let mut seen = HashSet::new();
        for dir in &dirs {
            for path in wasm_files(dir)? {
                if let Ok(bytes) = std::fs::read(&path) {
                    seen.insert(PluginEngine::content_hash(&bytes));
                }
            }
        }
        let (fs_tx, fs_rx) = channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(fs_tx).map_err(|e| watch_err(&dirs, e))?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive).map_err(|e| watch_err(&dirs, e))?;
        }
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("medtune-plugin-watch".into())
            .spawn(move || loader(engine, specs, fs_rx, tx, seen))
            .map_err(|e| watch_err(&dirs, e))?;
        Ok((Self { _watcher: watcher }, rx))
    }
}

fn watch_err(dirs: &[PathBuf], e: impl std::fmt::Display) -> LoadError {
    let path = dirs.first().cloned().unwrap_or_default();
    LoadError::Read { path, source: std::io::Error::other(format!("cannot watch plugin folder: {e}")) }
}

fn loader(
    engine: PluginEngine,
    specs: Vec<SlotSpec>,
    events: Receiver<notify::Result<notify::Event>>,
    out: Sender<SwapEvent>,
    mut seen: HashSet<String>,
) {
    loop {
        let Ok(first) = events.recv() else { return };
        let mut paths = BTreeSet::new();
        let mut add = |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                paths.extend(ev.paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wasm")));
            }
        };
        add(first);
        loop {
            match events.recv_timeout(DEBOUNCE) {
                Ok(ev) => add(ev),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        for path in paths {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if !seen.insert(PluginEngine::content_hash(&bytes)) {
                continue;
            }
            let event = prepare(&engine, &specs, path.clone(), &bytes);
            if out.send(event).is_err() {
                return;
            }
        }
    }
}

fn prepare(engine: &PluginEngine, specs: &[SlotSpec], path: PathBuf, bytes: &[u8]) -> SwapEvent {
    let origin = path.display().to_string();
    let refused = |error: String| SwapEvent::Refused { path: path.clone(), error };
    let info = match engine.inspect(bytes, &origin) {
        Ok((info, _)) => info,
        Err(e) => return refused(e.to_string()),
    };
    let Some(slot) = specs.iter().position(|s| s.name == info.name) else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        return refused(format!("plugin {} is not in the chain ({})", info.name, names.join(", ")));
    };
    match engine.load(bytes, &origin, Some(specs[slot].kind), specs[slot].sandbox.clone()) {
        Ok(plugin) => SwapEvent::Ready { slot, path, plugin: Box::new(plugin) },
        Err(e) => refused(e.to_string()),
    }
}
