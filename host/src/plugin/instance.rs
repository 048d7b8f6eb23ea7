//! One loaded plugin: its compiled code, its live instance (a `Store` of its own), and typed
//! batch calls under the sandbox's limits. After any failed call the instance is dropped
//! (a trap poisons the whole store) and replaced on the next call: by a spare instance that
//! was instantiated and configured ahead on a thread of its own, or made there and then.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

use super::bindings::{augmenter, disambiguator, metric, normalizer};
use super::contract::{self, Contract};
use super::engine::TICK;
use super::error::{CallError, LoadError, RecordFailure};
use super::manifest::Manifest;
use super::sandbox::{Ctx, Sandbox};
use super::types::{
    Annotated, Derived, Document, Expansion, Mention, PluginError, PluginInfo, PluginKind, Prediction, Reference, Score, Setting,
};
use super::{v0_1, validate};

#[derive(Clone)]
enum Pre {
    Normalizer(normalizer::NormalizerPre<Ctx>),
    Disambiguator(disambiguator::DisambiguatorPre<Ctx>),
    Augmenter(augmenter::AugmenterPre<Ctx>),
    Metric(metric::MetricPre<Ctx>),
    /// A component built for contract 0.1.0, adapted.
    V0_1(v0_1::Pre),
}

enum Inst {
    Normalizer(normalizer::Normalizer),
    Disambiguator(disambiguator::Disambiguator),
    Augmenter(augmenter::Augmenter),
    Metric(metric::Metric),
    V0_1(v0_1::Inst),
}

struct Live {
    store: Store<Ctx>,
    inst: Inst,
}

/// Everything that makes a configured instance, owned, so that a spare can be made on a
/// thread of its own.
#[derive(Clone)]
struct Recipe {
    /// `name@version` once known, the origin before.
    id: String,
    origin: String,
    engine: Engine,
    pre: Pre,
    sandbox: Sandbox,
}

/// A configured instance being made ahead: how long instantiating and configuring took.
type Spare = JoinHandle<Result<(Live, Duration, Duration), String>>;

/// How the last restart after a failure went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restart {
    /// How long the call that needed the new instance waited for it.
    pub waited: Duration,
    /// Whether a spare made ahead took over (else the instance was made while the call waited).
    pub from_spare: bool,
    /// How long instantiating the new instance took, wherever it was made.
    pub instantiate: Duration,
    /// How long its `configure` took, wherever it was made.
    pub configure: Duration,
}

/// The function a trap's backtrace (wasmtime keeps its innermost frames) is mostly made of,
/// and in how many frames, when that is a recursion: one function in at least 16 frames.
fn recursion(e: &wasmtime::Error) -> Option<(String, usize)> {
    let frames = e.downcast_ref::<wasmtime::WasmBacktrace>()?.frames();
    let mut counts: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for f in frames {
        *counts.entry(f.func_index()).or_default() += 1;
    }
    let (&index, &n) = counts.iter().max_by_key(|(_, n)| **n)?;
    let name = frames
        .iter()
        .find(|f| f.func_index() == index)
        .and_then(|f| f.func_name())
        .map_or_else(|| format!("function {index}"), |n| format!("{:#}", rustc_demangle::demangle(n)));
    (n >= 16).then_some((name, n))
}

/// A plugin ready to take batches.
pub struct Plugin {
    info: PluginInfo,
    hash: String,
    manifest: Option<Manifest>,
    recipe: Recipe,
    live: Option<Live>,
    spare: Option<Spare>,
    restarts: u64,
    last_restart: Restart,
}

/// Per-record results of a batch: the output, or why this record has none.
pub type Outcomes<T> = Vec<Result<T, RecordFailure>>;

impl Recipe {
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
            Pre::V0_1(p) => p.instantiate(&mut store).map(Inst::V0_1),
        }
        .map_err(|e| format!("{e:#}"))?;
        Ok(Live { store, inst })
    }

    fn configure(&self, live: &mut Live) -> Result<(), String> {
        let settings: Vec<Setting> = self.sandbox.settings.iter().map(|(k, v)| Setting { key: k.clone(), value: v.clone() }).collect();
        live.store.set_epoch_deadline(self.deadline_ticks());
        let s = &mut live.store;
        let r = match &live.inst {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_configure(s, &settings),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_configure(s, &settings),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_configure(s, &settings),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_configure(s, &settings),
            Inst::V0_1(i) => i.configure(s, &settings),
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(plugin_error_text(&e)),
            Err(e) => Err(self.classify(e, &live.store).to_string()),
        }
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<Ctx>) -> CallError {
        let plugin = self.id.clone();
        if let Some(asked) = store.data().limiter.refused {
            return CallError::Memory { plugin, cap_mib: self.sandbox.memory_cap >> 20, asked_mib: asked >> 20 };
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallError::Timeout { plugin, limit_ms: self.sandbox.timeout.as_millis() as u64 };
        }
        let stderr = store.data().stderr_text();
        let message = match e.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => "stack overflow: the call stack ran out (runaway recursion?)".to_owned(),
            // A Rust or C guest keeps its stack in linear memory: running past its end touches
            // memory below address 0, which wasm reports as an out-of-bounds access. Inside a
            // recursion, that is taken for what it most likely is.
            Some(Trap::MemoryOutOfBounds) => match recursion(&e) {
                Some((name, n)) => {
                    format!("stack overflow (most likely): out of bounds memory access in a recursion ({name} in {n} of the last frames)")
                }
                None => Trap::MemoryOutOfBounds.to_string(),
            },
            Some(trap) => trap.to_string(),
            None => format!("{e:#}"),
        };
        let message = if stderr.is_empty() { message } else { format!("{message}; guest stderr: {stderr}") };
        CallError::Trap { plugin, message }
    }
}

impl Plugin {
    pub(crate) fn start(
        engine: Engine,
        pre: InstancePre<Ctx>,
        (kind, contract): (PluginKind, Contract),
        (hash, manifest): (String, Option<Manifest>),
        origin: String,
        sandbox: Sandbox,
        configure: bool,
    ) -> Result<Self, LoadError> {
        let inst_err = |e: wasmtime::Error| LoadError::Instantiate { origin: origin.clone(), reason: format!("{e:#}") };
        let pre = match (contract, kind) {
            (Contract::V0_1, kind) => Pre::V0_1(v0_1::Pre::new(kind, pre).map_err(inst_err)?),
            (Contract::Current, PluginKind::Normalizer) => Pre::Normalizer(normalizer::NormalizerPre::new(pre).map_err(inst_err)?),
            (Contract::Current, PluginKind::Disambiguator) => {
                Pre::Disambiguator(disambiguator::DisambiguatorPre::new(pre).map_err(inst_err)?)
            }
            (Contract::Current, PluginKind::Augmenter) => Pre::Augmenter(augmenter::AugmenterPre::new(pre).map_err(inst_err)?),
            (Contract::Current, PluginKind::Metric) => Pre::Metric(metric::MetricPre::new(pre).map_err(inst_err)?),
        };
        let placeholder = PluginInfo {
            name: origin.clone(),
            version: "?".into(),
            kind,
            contract_version: contract.version().into(),
            description: String::new(),
        };
        let recipe = Recipe { id: origin.clone(), origin: origin.clone(), engine, pre, sandbox };
        let mut live = recipe.instantiate().map_err(|reason| LoadError::Instantiate { origin: origin.clone(), reason })?;
        let mut plugin = Plugin {
            info: placeholder,
            hash,
            manifest: None,
            recipe,
            live: None,
            spare: None,
            restarts: 0,
            last_restart: Restart::default(),
        };
        let info = match &live.inst {
            Inst::Normalizer(i) => i.medtune_plugin_normalizer_api().call_describe(&mut live.store),
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_describe(&mut live.store),
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_describe(&mut live.store),
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_describe(&mut live.store),
            Inst::V0_1(i) => i.describe(&mut live.store),
        }
        .map_err(|e| LoadError::Describe { origin: origin.clone(), reason: format!("{e:#}") })?;
        validate::info(&info, kind, contract).map_err(|reason| LoadError::Describe { origin: origin.clone(), reason })?;
        if let Some(m) = &manifest {
            m.agrees_with(&info).map_err(|reason| LoadError::Describe { origin: origin.clone(), reason })?;
        }
        plugin.manifest = manifest;
        plugin.info = info;
        plugin.recipe.id = plugin.id();
        if !configure {
            return Ok(plugin);
        }
        plugin.recipe.configure(&mut live).map_err(|reason| LoadError::Configure { plugin: plugin.id(), reason })?;
        plugin.live = Some(live);
        plugin.make_spare();
        Ok(plugin)
    }

    /// `name@version`, as error messages and output records name the plugin.
    pub fn id(&self) -> String {
        format!("{}@{}", self.info.name, self.info.version)
    }

    /// What the plugin's manifest declares, if it carries one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
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
        &self.recipe.origin
    }

    /// How many times the instance was thrown away and re-created after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The sandbox it runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.recipe.sandbox
    }

    /// Changes the wall-clock limit of later calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.recipe.sandbox.timeout = timeout;
    }

    /// Makes sure a live instance exists now (re-creating it if a failure dropped it);
    /// returns how long that took, zero when one was already there.
    pub fn warm_up(&mut self) -> Result<Duration, CallError> {
        let t = Instant::now();
        if self.live.is_none() {
            self.revive()?;
        }
        Ok(if self.restarts > 0 { t.elapsed() } else { Duration::ZERO })
    }

    /// How the last restart after a failure went.
    pub fn last_restart(&self) -> Restart {
        self.last_restart
    }

    /// Whether a spare instance is made and waiting (a failure now would not make a call wait).
    pub fn spare_ready(&self) -> bool {
        self.spare.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Starts making a spare instance on a thread of its own, when the sandbox asks for one.
    fn make_spare(&mut self) {
        if !self.recipe.sandbox.spare || self.spare.is_some() {
            return;
        }
        let recipe = self.recipe.clone();
        // If no thread can be had, the next restart makes its instance while the call waits.
        self.spare = std::thread::Builder::new()
            .name(format!("medtune-spare-{}", recipe.id))
            .spawn(move || {
                let t = Instant::now();
                let mut live = recipe.instantiate()?;
                let instantiated = t.elapsed();
                recipe.configure(&mut live)?;
                Ok((live, instantiated, t.elapsed() - instantiated))
            })
            .ok();
    }

    fn revive(&mut self) -> Result<(), CallError> {
        let id = self.id();
        let restart = |reason: String| CallError::Restart { plugin: id.clone(), reason };
        let t = Instant::now();
        let spare = self.spare.take().map(|h| h.join().unwrap_or_else(|_| Err("the thread making a spare panicked".into())));
        let from_spare = spare.as_ref().is_some_and(Result::is_ok);
        let (live, instantiate, configure) = match spare {
            Some(Ok(made)) => made,
            // A spare that failed is made again here, so the error is the one of this attempt.
            _ => {
                let mut live = self.recipe.instantiate().map_err(restart)?;
                let instantiated = t.elapsed();
                self.recipe.configure(&mut live).map_err(restart)?;
                (live, instantiated, t.elapsed() - instantiated)
            }
        };
        self.live = Some(live);
        self.restarts += 1;
        self.last_restart = Restart { waited: t.elapsed(), from_spare, instantiate, configure };
        self.make_spare();
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
        live.store.set_epoch_deadline(self.recipe.deadline_ticks());
        match f(&mut live.store, &live.inst) {
            Ok(r) => {
                self.live = Some(live);
                Ok(r)
            }
            // The instance (and its store) is dropped here: a trap poisons the store.
            Err(e) => Err(self.recipe.classify(e, &live.store)),
        }
    }

    fn wrong_kind(&self, wanted: PluginKind) -> CallError {
        CallError::Trap {
            plugin: self.id(),
            message: format!("is a {}, not a {}", contract::kind_name(self.kind()), contract::kind_name(wanted)),
        }
    }

    fn per_record<'a, T>(
        &self,
        ids: impl ExactSizeIterator<Item = &'a str>,
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
                let fail = |reason: String| RecordFailure { plugin: self.id(), record: record.to_owned(), reason, timed_out: false };
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
            Inst::V0_1(i) => i.normalize(s, batch),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.id.as_str()), out, |i, m| validate::mentions(&batch[i], m))
    }

    /// Abbreviation expansions in each document.
    pub fn disambiguate(&mut self, batch: &[Annotated]) -> Result<Outcomes<Vec<Expansion>>, CallError> {
        if self.kind() != PluginKind::Disambiguator {
            return Err(self.wrong_kind(PluginKind::Disambiguator));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Disambiguator(i) => i.medtune_plugin_disambiguator_api().call_disambiguate(s, batch),
            Inst::V0_1(i) => i.disambiguate(s, batch),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.document.id.as_str()), out, |i, x| validate::expansions(&batch[i].document, x))
    }

    /// New records made from each document.
    pub fn augment(&mut self, batch: &[Annotated], seed: u64) -> Result<Outcomes<Vec<Derived>>, CallError> {
        if self.kind() != PluginKind::Augmenter {
            return Err(self.wrong_kind(PluginKind::Augmenter));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Augmenter(i) => i.medtune_plugin_augmenter_api().call_augment(s, batch, seed),
            Inst::V0_1(i) => i.augment(s, batch, seed),
            _ => unreachable_kind(),
        })?;
        self.per_record(batch.iter().map(|d| d.document.id.as_str()), out, |i, x| validate::derived(&batch[i].document, x))
    }

    /// The figures of a metric.
    pub fn compute(&mut self, predictions: &[Prediction], references: &[Reference]) -> Result<Result<Vec<Score>, String>, CallError> {
        if self.kind() != PluginKind::Metric {
            return Err(self.wrong_kind(PluginKind::Metric));
        }
        let out = self.call(|s, inst| match inst {
            Inst::Metric(i) => i.medtune_plugin_metric_api().call_compute(s, predictions, references),
            Inst::V0_1(i) => i.compute(s, predictions, references),
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::plugin::types::Document;
    use crate::plugin::{Grant, PluginEngine, Sandbox, builtin};

    fn doc(id: &str, text: &str) -> Document {
        Document { id: id.into(), text: text.into(), fields: Vec::new(), metadata: Vec::new() }
    }

    /// Times out on a batch too big for a 1 ms limit, then runs a small one; returns whether
    /// the instance that ran it was a spare made ahead.
    fn trap_then_run(spare: bool) -> bool {
        let vocab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vocab");
        let sandbox = Sandbox { grants: vec![Grant { host: vocab, guest: "/vocab".into() }], spare, ..Sandbox::default() };
        let engine = PluginEngine::new(None).expect("engine");
        let b = builtin("terminology-normalizer").expect("built in");
        let mut plugin = engine.load(b.wasm, "builtin:terminology-normalizer", None, sandbox).expect("load");
        let t = Instant::now();
        while spare && !plugin.spare_ready() {
            assert!(t.elapsed() < Duration::from_secs(60), "no spare was made");
            std::thread::sleep(Duration::from_millis(5));
        }
        let big: Vec<Document> =
            (0..4000).map(|i| doc(&i.to_string(), &"Programmed cell death after a myocardial infarction. ".repeat(40))).collect();
        plugin.set_timeout(Duration::from_millis(1));
        let err = plugin.normalize(&big).expect_err("1 ms is too short for 4000 documents");
        assert!(err.to_string().contains("timed out"), "{err}");
        plugin.set_timeout(Duration::from_secs(10));
        let out = plugin.normalize(&[doc("small", "Apoptosis.")]).expect("runs again");
        let mentions = out[0].as_ref().expect("record");
        assert_eq!(mentions.iter().map(|m| m.concept.id.as_str()).collect::<Vec<_>>(), ["D017209"]);
        assert_eq!(plugin.restarts(), 1);
        plugin.last_restart().from_spare
    }

    #[test]
    fn after_a_failure_the_spare_made_ahead_takes_over() {
        assert!(trap_then_run(true), "the configured spare took over");
        assert!(!trap_then_run(false), "without a spare, the instance is made on the spot");
    }
}
