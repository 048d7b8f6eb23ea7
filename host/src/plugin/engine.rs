//! The plugin engine: one wasmtime `Engine` with epoch interruption, a linker with
//! deny-all WASI, and compiled code cached in memory and on disk by content hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel};

use crate::hash::sha256_hex;

use super::contract;
use super::error::LoadError;
use super::instance::Plugin;
use super::manifest;
use super::sandbox::{Ctx, Sandbox};
use super::types::{PluginInfo, PluginKind};

/// How often the epoch advances: the resolution of call time limits.
pub(crate) const TICK: Duration = Duration::from_millis(2);

/// Loads and compiles plugins; cheap to clone and share between threads.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Ctx>,
    cache_dir: Option<PathBuf>,
    compiled: Mutex<HashMap<String, Component>>,
}

impl PluginEngine {
    /// An engine; compiled code is cached under `cache_dir` when given.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).cranelift_opt_level(OptLevel::Speed);
        // `MEDTUNE_WASM_PERFMAP=1` names plugin functions for `perf record` (see BENCHMARKS.md).
        if std::env::var_os("MEDTUNE_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| LoadError::Compile { origin: "engine".into(), reason: format!("{e:#}") })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Compile { origin: "engine".into(), reason: format!("cannot link WASI: {e:#}") })?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("medtune-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| LoadError::Compile { origin: "engine".into(), reason: e.to_string() })?;
        Ok(Self { inner: Arc::new(Inner { engine, linker, cache_dir, compiled: Mutex::new(HashMap::new()) }) })
    }

    /// Loads a component file (see [`PluginEngine::load`]).
    pub fn load_file(&self, path: &Path, expected: Option<PluginKind>, sandbox: Sandbox) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        self.load(&bytes, &path.display().to_string(), expected, sandbox)
    }

    /// Compiles (or takes from the cache), checks the contract, instantiates in the sandbox,
    /// and asks the plugin who it is. `origin` names the source in error messages.
    pub fn load(&self, bytes: &[u8], origin: &str, expected: Option<PluginKind>, sandbox: Sandbox) -> Result<Plugin, LoadError> {
        self.start(bytes, origin, expected, sandbox, true)
    }

    /// Compiles, checks and asks a component who it is, without configuring it (so a
    /// plugin folder can be matched to the chain's slots by name).
    pub fn inspect(&self, bytes: &[u8], origin: &str) -> Result<(PluginInfo, String), LoadError> {
        let p = self.start(bytes, origin, None, Sandbox::default(), false)?;
        Ok((p.info().clone(), p.hash().to_owned()))
    }

    fn start(
        &self,
        bytes: &[u8],
        origin: &str,
        expected: Option<PluginKind>,
        sandbox: Sandbox,
        configure: bool,
    ) -> Result<Plugin, LoadError> {
        let hash = sha256_hex(bytes);
        let component = self.compile(bytes, &hash, origin)?;
        let (kind, contract) = contract::check(&self.inner.engine, &component, expected)
            .map_err(|detail| LoadError::Contract { origin: origin.to_owned(), detail })?;
        let manifest = manifest::read(bytes).map_err(|detail| LoadError::Contract { origin: origin.to_owned(), detail })?;
        if let Some(m) = manifest.as_ref().filter(|_| configure) {
            m.check(&sandbox).map_err(|detail| LoadError::Needs { entry: String::new(), origin: origin.to_owned(), detail })?;
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate { origin: origin.to_owned(), reason: format!("{e:#}") })?;
        Plugin::start(self.inner.engine.clone(), pre, (kind, contract), (hash, manifest), origin.to_owned(), sandbox, configure)
    }

    /// The content hash a file would be cached under (sha256, hex).
    pub fn content_hash(bytes: &[u8]) -> String {
        sha256_hex(bytes)
    }

    fn compile(&self, bytes: &[u8], hash: &str, origin: &str) -> Result<Component, LoadError> {
        if let Some(c) = self.lock_compiled().get(hash) {
            return Ok(c.clone());
        }
        let engine = &self.inner.engine;
        let cached = self.inner.cache_dir.as_ref().map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key())));
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the cache folder holds only files this host wrote itself (atomically,
            // by rename) from components it compiled, keyed by content hash and engine.
            if let Ok(c) = unsafe { Component::deserialize_file(engine, path) } {
                self.lock_compiled().insert(hash.to_owned(), c.clone());
                return Ok(c);
            }
        }
        let compile_err = |e: wasmtime::Error| LoadError::Compile { origin: origin.to_owned(), reason: format!("{e:#}") };
        let component = match &cached {
            Some(path) => {
                let code = engine.precompile_component(bytes).map_err(compile_err)?;
                crate::atomic::write(path, &code).map_err(|source| LoadError::Cache { path: path.clone(), source })?;
                // SAFETY: `code` was produced just now by this engine.
                unsafe { Component::deserialize(engine, &code) }.map_err(compile_err)?
            }
            None => Component::new(engine, bytes).map_err(compile_err)?,
        };
        self.lock_compiled().insert(hash.to_owned(), component.clone());
        Ok(component)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.inner.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A short key for the engine's compilation settings (part of cache file names).
    fn engine_key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }
}
