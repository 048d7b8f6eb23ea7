//! Hot swap: watches the plugin folders, the slots' own files, the granted folders and the
//! config, and prepares what changed off the hot path (compile, contract check, instantiate,
//! configure) for the chain to swap in between batches. After any change each slot is decided
//! again as at start (`resolve.rs`), so a rollback is a swap like any other and what runs is
//! what the next start would load; a refused file is moved into `.refused/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::engine::PluginEngine;
use super::error::LoadError;
use super::resolve::{self, Memo, Pick};
use super::set::{SlotSpec, SwapEvent, load_pick, short};

/// Files that keep changing are picked up once they have been quiet this long.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The config file a chain came from, and how to read its slots again.
pub struct ConfigSource {
    /// The config file.
    pub path: PathBuf,
    /// Reads the file again into the chain's slots (the same filter as at start).
    pub reload: Box<dyn Fn() -> Result<Vec<SlotSpec>, String> + Send>,
}

type Notify = Arc<Mutex<notify::RecommendedWatcher>>;

/// A running watcher; dropping it stops the watching.
pub struct Watcher {
    _notify: Notify,
}

impl Watcher {
    /// Watches what `specs`, `dirs` and `config` name; `running` holds the content hash of
    /// each slot's plugin. Ready plugins and refusals arrive on the returned channel.
    pub fn start(
        engine: PluginEngine,
        specs: Vec<SlotSpec>,
        dirs: Vec<PathBuf>,
        running: Vec<String>,
        config: Option<ConfigSource>,
    ) -> Result<(Self, Receiver<SwapEvent>), LoadError> {
        let (fs_tx, fs_rx) = channel::<notify::Result<notify::Event>>();
        let watcher = notify::recommended_watcher(fs_tx).map_err(|e| watch_err(&dirs, e))?;
        let notify: Notify = Arc::new(Mutex::new(watcher));
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| canonical(d)).collect();
        let config = config.map(|c| ConfigSource { path: canonical(&c.path), reload: c.reload });
        let mut state = State {
            engine,
            specs,
            dirs,
            running,
            config,
            memo: Memo::new(),
            watched: BTreeSet::new(),
            failed: HashMap::new(),
            pick_errors: HashMap::new(),
            notify: Arc::downgrade(&notify),
        };
        state.watch_all().map_err(|e| watch_err(&state.dirs, e))?;
        // what is in the folders now was decided at start: remember it
        resolve::scan(&state.engine, &state.dirs, &mut state.memo)?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("medtune-plugin-watch".into())
            .spawn(move || state.run(fs_rx, tx))
            .map_err(|e| watch_err(&[], e))?;
        Ok((Self { _notify: notify }, rx))
    }
}

fn watch_err(dirs: &[PathBuf], e: impl std::fmt::Display) -> LoadError {
    let path = dirs.first().cloned().unwrap_or_default();
    LoadError::Read { path, source: std::io::Error::other(format!("cannot watch plugin folder: {e}")) }
}

/// `p` with its folder made absolute and free of links (the file itself may not exist).
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent().and_then(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d }.canonicalize().ok()), p.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => p.to_owned(),
    }
}

struct State {
    engine: PluginEngine,
    specs: Vec<SlotSpec>,
    dirs: Vec<PathBuf>,
    /// The content hash of what each slot runs (or was last sent to run).
    running: Vec<String>,
    config: Option<ConfigSource>,
    memo: Memo,
    watched: BTreeSet<(PathBuf, bool)>,
    /// Slot -> the content hash that failed to load into it (not retried until it changes).
    failed: HashMap<usize, String>,
    /// Slot -> the last reason it could not be decided (said once).
    pick_errors: HashMap<usize, String>,
    notify: Weak<Mutex<notify::RecommendedWatcher>>,
}

impl State {
    /// Watches the folders, the slots' files' folders, the granted folders (recursively) and
    /// the config's folder; new ones after a config change are added.
    fn watch_all(&mut self) -> notify::Result<()> {
        let mut want: Vec<(PathBuf, bool)> = self.dirs.iter().map(|d| (d.clone(), false)).collect();
        for spec in &self.specs {
            if let Some(dir) = spec.path.as_deref().map(canonical).and_then(|p| p.parent().map(Path::to_path_buf)) {
                want.push((dir, false));
            }
            want.extend(spec.sandbox.grants.iter().map(|g| (canonical(&g.host), true)));
        }
        if let Some(dir) = self.config.as_ref().and_then(|c| c.path.parent().map(Path::to_path_buf)) {
            want.push((dir, false));
        }
        let Some(notify) = self.notify.upgrade() else { return Ok(()) };
        let mut notify = notify.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, recursive) in want {
            if self.watched.contains(&(dir.clone(), recursive)) || !dir.is_dir() {
                continue;
            }
            let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
            notify.watch(&dir, mode)?;
            self.watched.insert((dir, recursive));
        }
        Ok(())
    }

    fn run(mut self, events: Receiver<notify::Result<notify::Event>>, out: Sender<SwapEvent>) {
        loop {
            let Ok(first) = events.recv() else { return };
            let mut paths = BTreeSet::new();
            // reads are reported too (a plugin reading its granted files): only changes count
            let mut add = |ev: notify::Result<notify::Event>| {
                if let Ok(ev) = ev
                    && !matches!(ev.kind, notify::EventKind::Access(_))
                {
                    paths.extend(ev.paths.iter().map(|p| canonical(p)));
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
            for event in self.react(&paths) {
                if out.send(event).is_err() {
                    return;
                }
            }
        }
    }

    /// What the changed `paths` mean for the chain.
    fn react(&mut self, paths: &BTreeSet<PathBuf>) -> Vec<SwapEvent> {
        let mut events = Vec::new();
        let mut dirty: BTreeMap<usize, String> = BTreeMap::new();
        if let Some(config) = self.config.as_ref().filter(|c| paths.contains(&c.path)) {
            let what = config.path.display().to_string();
            match (config.reload)() {
                Err(error) => events.push(SwapEvent::Refused { what, error }),
                Ok(new)
                    if new.len() != self.specs.len() || new.iter().zip(&self.specs).any(|(a, b)| a.name != b.name || a.kind != b.kind) =>
                {
                    events.push(SwapEvent::Refused {
                        what,
                        error: "the chain's plugins changed (names, kinds or order): restart to apply".into(),
                    })
                }
                Ok(new) => {
                    for (slot, (a, b)) in new.iter().zip(&self.specs).enumerate() {
                        if a != b {
                            dirty.insert(slot, format!("its settings changed in {what}"));
                        }
                    }
                    self.specs = new;
                    if let Err(e) = self.watch_all() {
                        events.push(SwapEvent::Refused { what, error: format!("cannot watch the new grants: {e}") });
                    }
                }
            }
        }
        for (slot, spec) in self.specs.iter().enumerate() {
            for g in &spec.sandbox.grants {
                let host = canonical(&g.host);
                if paths.iter().any(|p| p.starts_with(&host)) {
                    dirty.entry(slot).or_insert_with(|| format!("files changed in its granted folder {}", g.host.display()));
                }
            }
        }
        let scan = match resolve::scan(&self.engine, &self.dirs, &mut self.memo) {
            Ok(scan) => scan,
            Err(e) => {
                events.push(SwapEvent::Refused { what: "the plugin folders".into(), error: e.to_string() });
                return events;
            }
        };
        // new files that cannot run here, and files of a slot's name at a version it does not allow
        let mut refused: Vec<(PathBuf, String)> = scan.unusable.iter().filter(|(p, _)| paths.contains(p)).cloned().collect();
        for f in scan.found.iter().filter(|f| paths.contains(&f.path)) {
            match self.specs.iter().find(|s| s.name == f.name) {
                Some(spec) if spec.path.is_none() => {
                    refused.extend(resolve::version_refusal(spec, &f.version).map(|r| (f.path.clone(), r)))
                }
                Some(_) => {}
                None => {
                    let names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
                    let error = format!("plugin {} is not in the chain ({}): left where it is", f.name, names.join(", "));
                    events.push(SwapEvent::Refused { what: f.path.display().to_string(), error });
                }
            }
        }
        for (path, reason) in &refused {
            events.push(SwapEvent::Refused { what: path.display().to_string(), error: aside(path, reason) });
        }
        let scan = if refused.is_empty() { scan } else { resolve::scan(&self.engine, &self.dirs, &mut self.memo).unwrap_or(scan) };
        for slot in 0..self.specs.len() {
            if let Some(event) = self.decide(slot, &scan, dirty.remove(&slot), paths) {
                events.push(event);
            }
        }
        events
    }

    /// Decides `slot` again; a plugin to swap in, or a refusal, when something changed.
    fn decide(&mut self, slot: usize, scan: &resolve::Scan, dirty: Option<String>, paths: &BTreeSet<PathBuf>) -> Option<SwapEvent> {
        let spec = &self.specs[slot];
        let pick = match resolve::pick(spec, scan, &self.dirs) {
            Ok(pick) => {
                self.pick_errors.remove(&slot);
                pick
            }
            Err(error) => {
                let again = self.pick_errors.insert(slot, error.clone()).as_ref() == Some(&error);
                return (!again).then(|| SwapEvent::Refused { what: format!("plugin {}", spec.name), error });
            }
        };
        let bytes = match pick.bytes() {
            Ok(b) => b,
            Err(e) => return Some(SwapEvent::Refused { what: pick.origin(), error: e.to_string() }),
        };
        let hash = PluginEngine::content_hash(&bytes);
        let changed = hash != self.running[slot];
        if !changed && dirty.is_none() || self.failed.get(&slot) == Some(&hash) && dirty.is_none() {
            return None;
        }
        let why = dirty.unwrap_or_else(|| "its file changed".into());
        match load_pick(&self.engine, spec, &pick, &bytes) {
            Ok(plugin) => {
                self.failed.remove(&slot);
                self.running[slot] = hash;
                Some(SwapEvent::Ready { slot, spec: Box::new(spec.clone()), from: pick.origin(), why, plugin: Box::new(plugin) })
            }
            Err(e) => {
                self.failed.insert(slot, hash.clone());
                let error = match &pick {
                    Pick::File(path) if spec.path.is_none() && paths.contains(path) => aside(path, &e.to_string()),
                    _ => format!("{e} (tried because {why}, #{})", short(&hash)),
                };
                Some(SwapEvent::Refused { what: pick.origin(), error })
            }
        }
    }
}

/// Moves a refused file aside; the refusal's text, with where the file went.
fn aside(path: &Path, reason: &str) -> String {
    match resolve::move_aside(path, reason) {
        Ok(to) => format!("{reason}; moved to {} (the reason is beside it)", to.display()),
        Err(e) => format!("{reason}; could not move it aside ({e}): remove it before the next start"),
    }
}
