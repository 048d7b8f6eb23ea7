//! `medtune data`: read the input, split it, run the plugin chain, write processed JSONL
//! and a manifest, atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::artifacts::{self, AugmentedCount, DataManifest, HashedFile, PluginRef};
use crate::atomic;
use crate::config::{Config, OnError, SplitKind, TaskKind};
use crate::hash::file_sha256;
use crate::plugin::{LoadError, PluginEngine, PluginSet, RecordFailure};

use super::chain::{AugmentReport, ChainReport, annotate, augment};
use super::input::{Input, InputError, read};
use super::labels::{check_answer, label_set};
use super::layout::Layout;
use super::record::{Record, Split};
use super::split::official_folds;

/// Why the data stage could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A plugin of the chain could not be loaded.
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The test ground truth cannot be read.
    #[error("{path}: {message}")]
    GroundTruth { path: PathBuf, message: String },
    /// Not one input record could be read: nothing is written, the last outputs stay.
    #[error(
        "{path}: no record could be read ({count} error(s); the first: {first}); nothing was written, the outputs of the last run are as they were"
    )]
    NoRecords { path: PathBuf, count: usize, first: String },
    /// The records give no usable label set.
    #[error("{path}: {message}; nothing was written, the outputs of the last run are as they were")]
    Labels { path: PathBuf, message: String },
}

/// What the data stage did.
#[derive(Debug)]
pub struct DataReport {
    /// Records read.
    pub records: usize,
    /// Records per split.
    pub splits: BTreeMap<String, usize>,
    /// Records or files that could not be read.
    pub input_errors: Vec<InputError>,
    /// The chain's report (failures, swaps, plugin time).
    pub chain: ChainReport,
    /// What the augmenters made from the training split.
    pub augmented: AugmentReport,
    /// The files written.
    pub outputs: Vec<PathBuf>,
    /// The loaded plugins as `name@version sha256`.
    pub plugins: Vec<String>,
    /// The layout the records were read as.
    pub layout: Option<Layout>,
    /// The task's label set.
    pub labels: Vec<String>,
}

impl DataReport {
    /// Whether anything was lost or failed (the CLI exits non-zero then).
    pub fn has_errors(&self) -> bool {
        !self.input_errors.is_empty() || self.chain.failed_records > 0 || self.chain.stopped || !self.augmented.failures.is_empty()
    }
}

/// Runs the data stage of `config`; the manifest records `fingerprint` (what the outputs are a
/// function of, so that another config with the same data may use them). `on_batch` sees
/// progress (records done, swap log).
pub fn run(
    config: &Config,
    engine: PluginEngine,
    fingerprint: &str,
    on_batch: impl FnMut(usize, &[String]),
) -> Result<DataReport, DataError> {
    let input = config.resolve(&config.data.input);
    let Input { mut records, errors: mut input_errors, layout } = read(&input, &config.input_spec());
    let no_records = |errors: &[InputError]| {
        let first = errors.first().map_or_else(|| "the file holds no record".to_owned(), ToString::to_string);
        DataError::NoRecords { path: input.clone(), count: errors.len(), first }
    };
    if records.is_empty() {
        return Err(no_records(&input_errors));
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    records.retain(|r| match seen.get(&r.id) {
        Some(first) => {
            input_errors.push(InputError::at(&input, &place_of(r, &input), format!("the id {} is taken by {first}", r.id)));
            false
        }
        None => {
            seen.insert(r.id.clone(), r.provenance.source.clone());
            true
        }
    });
    // a generate task learns text: no label set
    let labels = match config.task.kind {
        TaskKind::Choice => {
            label_set(config.task.labels.as_deref(), &records).map_err(|e| DataError::Labels { path: input.clone(), message: e.0 })?
        }
        TaskKind::Generate => Vec::new(),
    };
    records.retain_mut(|r| match if labels.is_empty() { Ok(()) } else { check_answer(r, &labels) } {
        Ok(()) => true,
        Err(message) => {
            input_errors.push(InputError::at(&input, &place_of(r, &input), message));
            false
        }
    });
    if records.is_empty() {
        return Err(no_records(&input_errors));
    }
    match (config.data.split, &config.data.test_ground_truth) {
        (SplitKind::Official, Some(truth)) => assign_splits(&mut records, &config.resolve(truth))?,
        (SplitKind::Random, _) => random_splits(&mut records, config.data.seed, config.data.dev_fraction, config.data.test_fraction),
        (SplitKind::Field, _) => {}
        _ => records.iter_mut().for_each(|r| r.split = Split::Train),
    }
    let mut set = PluginSet::load(engine, config.slots(), config.plugin_dirs())?;
    if config.plugins.watch {
        set.watch()?;
    }
    let plugins: Vec<String> = set.plugins().iter().map(|p| format!("{} {}", p.id(), p.hash())).collect();
    let chain = annotate(&mut set, &mut records, config.data.batch_size, config.data.on_error == OnError::Stop, on_batch);
    let augmented = if chain.stopped { AugmentReport::default() } else { run_augmenters(&mut set, &mut records, config) };

    let out_dir = config.work_dir().join("data/processed");
    let mut outputs = Vec::new();
    let mut splits = BTreeMap::new();
    for split in Split::ALL {
        let rows: Vec<&Record> = records.iter().filter(|r| r.split == split).collect();
        splits.insert(split.to_string(), rows.len());
        let path = out_dir.join(format!("{split}.jsonl"));
        write_jsonl(&path, &rows)?;
        outputs.push(path);
    }
    let aug_path = config.work_dir().join("data/augmented/train.jsonl");
    let train_and_derived: Vec<&Record> = records.iter().filter(|r| r.split == Split::Train).chain(augmented.records.iter()).collect();
    write_jsonl(&aug_path, &train_and_derived)?;
    outputs.push(aug_path);
    let errors_path = out_dir.join("errors.jsonl");
    let error_rows: Vec<serde_json::Value> = input_errors
        .iter()
        .map(|e| json!({"file": e.file, "place": e.place, "error": e.message}))
        .chain(
            chain
                .failures
                .iter()
                .chain(&augmented.failures)
                .map(|f: &RecordFailure| json!({"plugin": f.plugin, "record": f.record, "error": f.reason})),
        )
        .collect();
    write_jsonl(&errors_path, &error_rows)?;
    outputs.push(errors_path);
    let manifest = DataManifest {
        stage: "data".into(),
        config: HashedFile { path: config.path.clone(), sha256: file_sha256(&config.path) },
        inputs: vec![HashedFile { path: input.clone(), sha256: file_sha256(&input) }],
        plugins: set
            .plugins()
            .iter()
            .map(|p| PluginRef {
                id: p.id(),
                kind: crate::plugin::kind_name(p.kind()).into(),
                sha256: p.hash().to_owned(),
                origin: p.origin().to_string(),
            })
            .collect(),
        records: records.len(),
        splits: splits.clone(),
        input_errors: input_errors.len(),
        failed_records: chain.failed_records,
        seed: config.data.seed,
        augmented: augmented.per_plugin.iter().map(|(id, n, _)| AugmentedCount { plugin: id.clone(), records: *n }).collect(),
        swaps: chain.swaps.clone(),
        layout,
        task: config.task.kind,
        labels: labels.clone(),
        fingerprint: Some(fingerprint.to_owned()),
    };
    let manifest_path = out_dir.join("manifest.json");
    artifacts::write(&manifest_path, &manifest)
        .map_err(|e| DataError::Write { path: manifest_path.clone(), source: std::io::Error::other(e) })?;
    outputs.push(manifest_path);
    Ok(DataReport { records: records.len(), splits, input_errors, chain, augmented, outputs, plugins, layout, labels })
}

/// Runs the chain's augmenters over the training split, telling them each record's concepts
/// with their training document counts (`concept_counts`) and the answer counts
/// (`label_counts`).
fn run_augmenters(set: &mut PluginSet, records: &mut [Record], config: &Config) -> AugmentReport {
    let train = || records.iter().filter(|r| r.split == Split::Train);
    let mut concept_docs: HashMap<String, usize> = HashMap::new();
    for r in train() {
        let ids: BTreeSet<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
        for id in ids {
            *concept_docs.entry(id.to_owned()).or_default() += 1;
        }
    }
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for r in train() {
        if let Some(a) = &r.answer {
            *labels.entry(a.clone()).or_default() += 1;
        }
    }
    let label_counts = labels.iter().map(|(l, n)| format!("{l}={n}")).collect::<Vec<_>>().join(",");
    let mut sources: Vec<Record> = train().cloned().collect();
    let report = augment(set, &mut sources, config.data.batch_size, config.data.seed, |r| {
        let ids: BTreeSet<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
        let counts: Vec<String> = ids.iter().map(|id| format!("{id}:{}", concept_docs.get(*id).unwrap_or(&0))).collect();
        vec![("concept_counts".to_owned(), counts.join("|")), ("label_counts".to_owned(), label_counts.clone())]
    });
    // failures on the sources belong to the records themselves
    for source in sources.iter().filter(|s| !s.failures.is_empty()) {
        if let Some(r) = records.iter_mut().find(|r| r.id == source.id) {
            r.failures = source.failures.clone();
        }
    }
    report
}

/// `test`: the ground-truth ids; `dev`: fold 0 of the official 10 folds; `train`: the rest.
fn assign_splits(records: &mut [Record], ground_truth: &Path) -> Result<(), DataError> {
    let labelled: Vec<(String, String)> = records.iter().filter_map(|r| r.answer.clone().map(|a| (r.id.clone(), a))).collect();
    let (_, folds) = official_folds(&labelled);
    let test = read_test_ids(ground_truth)?;
    let dev: BTreeSet<&String> = folds.first().map(|f| f.iter().collect()).unwrap_or_default();
    for r in records.iter_mut() {
        r.split = if test.contains(&r.id) {
            Split::Test
        } else if dev.contains(&r.id) {
            Split::Dev
        } else {
            Split::Train
        };
    }
    Ok(())
}

/// A record's place in its input (`line 7`, `record 12345`), from its provenance.
fn place_of(r: &Record, input: &Path) -> String {
    let file = input.display().to_string();
    let source = &r.provenance.source;
    match source.strip_prefix(&file) {
        Some(rest) if rest.starts_with('#') => format!("record {}", &rest[1..]),
        Some(rest) if rest.starts_with(':') => rest[1..].to_owned(),
        _ => format!("record {}", r.id),
    }
}

/// `dev` and `test` by a hash of the seed and the record id (so a record keeps its split
/// whatever the order or size of the input), `train` the rest.
fn random_splits(records: &mut [Record], seed: u64, dev: f64, test: f64) {
    for r in records.iter_mut() {
        let digest = crate::hash::sha256_hex(format!("{seed}:{}", r.id).as_bytes());
        let draw = u64::from_str_radix(&digest[..16], 16).unwrap_or(0) as f64 / u64::MAX as f64;
        r.split = if draw < dev {
            Split::Dev
        } else if draw < dev + test {
            Split::Test
        } else {
            Split::Train
        };
    }
}

fn read_test_ids(path: &Path) -> Result<BTreeSet<String>, DataError> {
    let err = |message: String| DataError::GroundTruth { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| err(format!("expected an object of id -> answer: {e}")))?;
    Ok(map.into_iter().map(|(k, _)| k).collect())
}

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), DataError> {
    let mut buf = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut buf, row).map_err(|e| DataError::Write { path: path.to_owned(), source: e.into() })?;
        buf.push(b'\n');
    }
    write_bytes(path, &buf)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    atomic::write(path, bytes).map_err(|source| DataError::Write { path: path.to_owned(), source })
}
