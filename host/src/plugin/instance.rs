//! One loaded plugin: its compiled code, its live instance (a `Store` of its own), and typed
//! batch calls under the sandbox's limits. After any failed call the instance is dropped
//! (a trap poisons the whole store) and re-created from the compiled code on the next call.

use std::time::Duration;

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

use super::bindings::{augmenter, disambiguator, metric, normalizer};
use super::contract::{self, CONTRACT_VERSION};
use super::engine::TICK;
use super::error::{CallError, LoadError, RecordFailure};
use super::sandbox::{Ctx, Sandbox};
use super::types::{
    Annotated, Derived, Document, Expansion, Mention, PluginError, PluginInfo, PluginKind,
    Prediction, Reference, Score, Setting,
};
use super::validate;

enum Pre {
    Normalizer(normalizer::NormalizerPre<Ctx>),
    Disambiguator(disambiguator::DisambiguatorPre<Ctx>),
    Augmenter(augmenter::AugmenterPre<Ctx>),
    Metric(metric::MetricPre<Ctx>),
}

enum Inst {
    Normalizer(normalizer::Normalizer),
    Disambiguator(disambiguator::Disambiguator),
    Augmenter(augmenter::Augmenter),
    Metric(metric::Metric),
}

struct Live {
    store: Store<Ctx>,
    inst: Inst,
}

/// A plugin ready to take batches.
pub struct Plugin {
    info: PluginInfo,
    hash: String,
    origin: String,
    engine: Engine,
    pre: Pre,
    sandbox: Sandbox,
    live: Option<Live>,
    restarts: u64,
    last_restart: (Duration, Duration),
}

/// Per-record results of a batch: the output, or why this record has none.
pub type Outcomes<T> = Vec<Result<T, RecordFailure>>;

impl Plugin {
    pub(crate) fn start(
        engine: Engine,
        pre: InstancePre<Ctx>,
        kind: PluginKind,
        hash: String,
        origin: String,
        sandbox: Sandbox,
        configure: bool,
    ) -> Result<Self, LoadError> {
        let inst_err = |e: wasmtime::Error| LoadError::Instantiate { origin: origin.clone(), reason: format!("{e:#}") };
        let pre = match kind {
            PluginKind::Normalizer => Pre::Normalizer(normalizer::NormalizerPre::new(pre).map_err(inst_err)?),
            PluginKind::Disambiguator => Pre::Disambiguator(disambiguator::DisambiguatorPre::new(pre).map_err(inst_err)?),
            PluginKind::Augmenter => Pre::Augmenter(augmenter::AugmenterPre::new(pre).map_err(inst_err)?),
            PluginKind::Metric => Pre::Metric(metric::MetricPre::new(pre).map_err(inst_err)?),
        };
        let placeholder = PluginInfo {
            name: origin.clone(),
            version: "?".into(),
            kind,
            contract_version: CONTRACT_VERSION.into(),
            description: String::new(),
        };
        let mut plugin =
            Plugin { info: placeholder, hash, origin: origin.clone(), engine, pre, sandbox, live: None, restarts: 0, last_restart: Default::default() };
        let mut live = plugin.instantiate().map_err(|reason| LoadError::Instantiate { origin: origin.clone(), reason })?;
        live.store.set_epoch_deadline(plugin.deadline_ticks());
        let info = match &live.inst {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_describe(&mut live.store),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_describe(&mut live.store),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_describe(&mut live.store),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_describe(&mut live.store),
        }
        .map_err(|e| LoadError::Describe { origin: origin.clone(), reason: format!("{e:#}") })?;
        validate::info(&info, kind).map_err(|reason| LoadError::Describe { origin: origin.clone(), reason })?;
        plugin.info = info;
        if !configure {
            return Ok(plugin);
        }
        plugin.configure(&mut live).map_err(|reason| LoadError::Configure { plugin: plugin.id(), reason })?;
        plugin.live = Some(live);
        Ok(plugin)
    }

    /// `name@version`, as error messages and output records name the plugin.
    pub fn id(&self) -> String {
        format!("{}@{}", self.info.name, self.info.version)
    }

    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's kind.
    pub fn kind(&self) -> PluginKind {
        self.info.kind
    }

    /// The sha256 of the component's bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Where it was loaded from (a path, or `builtin:NAME`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How many times the instance was thrown away and re-created after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The sandbox it runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Changes the wall-clock limit of later calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.sandbox.timeout = timeout;
    }

    /// Makes sure a live instance exists now (re-creating it if a failure dropped it);
    /// returns how long that took, zero when one was already there.
    pub fn warm_up(&mut self) -> Result<Duration, CallError> {
        let t = std::time::Instant::now();
        if self.live.is_none() {
            self.revive()?;
        }
        Ok(if self.restarts > 0 { t.elapsed() } else { Duration::ZERO })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.sandbox.timeout.as_micros() / TICK.as_micros()).max(1) as u64 + 1
    }

    fn instantiate(&self) -> Result<Live, String> {
        let ctx = Ctx::new(&self.sandbox, &self.origin).map_err(|e| e.to_string())?;
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limiter);
        store.set_epoch_deadline(self.deadline_ticks());
        let inst = match &self.pre {
            Pre::Normalizer(p) => p.instantiate(&mut store).map(Inst::Normalizer),
            Pre::Disambiguator(p) => p.instantiate(&mut store).map(Inst::Disambiguator),
            Pre::Augmenter(p) => p.instantiate(&mut store).map(Inst::Augmenter),
            Pre::Metric(p) => p.instantiate(&mut store).map(Inst::Metric),
        }
        .map_err(|e| format!("{e:#}"))?;
        Ok(Live { store, inst })
    }

    fn configure(&self, live: &mut Live) -> Result<(), String> {
        let settings: Vec<Setting> =
            self.sandbox.settings.iter().map(|(k, v)| Setting { key: k.clone(), value: v.clone() }).collect();
        live.store.set_epoch_deadline(self.deadline_ticks());
        let s = &mut live.store;
        let r = match &live.inst {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_configure(s, &settings),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_configure(s, &settings),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_configure(s, &settings),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_configure(s, &settings),
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(plugin_error_text(&e)),
            Err(e) => Err(self.classify(e, &live.store).to_string()),
        }
    }

    /// How long the last restart took: (instantiate, configure).
    pub fn last_restart(&self) -> (Duration, Duration) {
        self.last_restart
    }

    fn revive(&mut self) -> Result<(), CallError> {
        let restart = |reason: String| CallError::Restart { plugin: self.id(), reason };
        let t = std::time::Instant::now();
        let mut live = self.instantiate().map_err(restart)?;
        let instantiated = t.elapsed();
        self.configure(&mut live).map_err(restart)?;
        self.last_restart = (instantiated, t.elapsed() - instantiated);
        self.restarts += 1;
        self.live = Some(live);
        Ok(())
    }

    /// Runs one call on the live instance; any error throws the instance away.
    fn call<R>(&mut self, f: impl FnOnce(&mut Store<Ctx>, &Inst) -> wasmtime::Result<R>) -> Result<R, CallError> {
        if self.live.is_none() {
            self.revive()?;
        }
        let Some(mut live) = self.live.take() else {
            return Err(CallError::Restart { plugin: self.id(), reason: "no instance".into() });
        };
        live.store.set_epoch_deadline(self.deadline_ticks());
        match f(&mut live.store, &live.inst) {
            Ok(r) => {
                self.live = Some(live);
                Ok(r)
            }
            // The instance (and its store) is dropped here: a trap poisons the store.
            Err(e) => Err(self.classify(e, &live.store)),
        }
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<Ctx>) -> CallError {
        let plugin = self.id();
        if let Some(asked) = store.data().limiter.refused {
            return CallError::Memory { plugin, cap_mib: self.sandbox.memory_cap >> 20, asked_mib: asked >> 20 };
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallError::Timeout { plugin, limit_ms: self.sandbox.timeout.as_millis() as u64 };
        }
        let stderr = store.data().stderr_text();
        let message = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{e:#}"),
        };
        let message = if stderr.is_empty() { message } else { format!("{message}; guest stderr: {stderr}") };
        CallError::Trap { plugin, message }
    }

    fn wrong_kind(&self, wanted: PluginKind) -> CallError {
        CallError::Trap {
            plugin: self.id(),
            message: format!("is a {}, not a {}", contract::kind_name(self.kind()), contract::kind_name(wanted)),
        }
    }

    fn per_record<T>(
        &self,
        ids: impl ExactSizeIterator<Item = String>,
        results: Vec<Result<T, PluginError>>,
        check: impl Fn(usize, &T) -> Result<(), String>,
    ) -> Result<Outcomes<T>, CallError> {
        if results.len() != ids.len() {
            return Err(CallError::Shape { plugin: self.id(), expected: ids.len(), got: results.len() });
        }
        Ok(ids
            .zip(results)
            .enumerate()
            .map(|(i, (record, r))| {
                let fail = |reason: String| RecordFailure { plugin: self.id(), record: record.clone(), reason };
                match r {
                    Ok(out) => check(i, &out).map(|()| out).map_err(|e| fail(format!("invalid output: {e}"))),
                    Err(e) => Err(fail(plugin_error_text(&e))),
                }
            })
            .collect())
    }

    /// Mentions in each document.
    pub fn normalize(&mut self, batch: &[Document]) -> Result<Outcomes<Vec<Mention>>, CallError> {
        if self.kind() != PluginKind::Normalizer {
            return Err(self.wrong_kind(PluginKind::Normalizer));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_normalize(s, batch),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.id.clone()), out, |i, m| validate::mentions(&batch[i].text, m))
    }

    /// Abbreviation expansions in each document.
    pub fn disambiguate(&mut self, batch: &[Annotated]) -> Result<Outcomes<Vec<Expansion>>, CallError> {
        if self.kind() != PluginKind::Disambiguator {
            return Err(self.wrong_kind(PluginKind::Disambiguator));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_disambiguate(s, batch),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.document.id.clone()), out, |i, x| {
            validate::expansions(&batch[i].document.text, x)
        })
    }

    /// New records made from each document.
    pub fn augment(&mut self, batch: &[Annotated], seed: u64) -> Result<Outcomes<Vec<Derived>>, CallError> {
        if self.kind() != PluginKind::Augmenter {
            return Err(self.wrong_kind(PluginKind::Augmenter));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_augment(s, batch, seed),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.document.id.clone()), out, |i, x| {
            validate::derived(&batch[i].document.text, x)
        })
    }

    /// The figures of a metric.
    pub fn compute(&mut self, predictions: &[Prediction], references: &[Reference]) -> Result<Result<Vec<Score>, String>, CallError> {
        if self.kind() != PluginKind::Metric {
            return Err(self.wrong_kind(PluginKind::Metric));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_compute(s, predictions, references),
            _ => unreachable_kind(),
        })?;
        Ok(match out {
            Ok(scores) => validate::scores(&scores).map(|()| scores).map_err(|e| format!("invalid output: {e}")),
            Err(e) => Err(plugin_error_text(&e)),
        })
    }
}

fn unreachable_kind<R>() -> wasmtime::Result<R> {
    Err(wasmtime::Error::msg("instance of another kind than its compiled code"))
}

fn plugin_error_text(e: &PluginError) -> String {
    match e {
        PluginError::Config(m) => format!("config: {m}"),
        PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        PluginError::MissingResource(m) => format!("missing resource: {m}"),
        PluginError::Internal(m) => format!("internal: {m}"),
    }
}
