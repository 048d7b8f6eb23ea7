//! `medtune data`: read the input, split it, run the plugin chain, write processed JSONL
//! and a manifest, atomically; streamed, so memory stays bounded whatever the input's size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::artifacts::{self, AugmentedCount, DataManifest, HashedFile, PluginRef};
use crate::atomic;
use crate::config::{Config, OnError, SplitKind, TaskKind};
use crate::hash::file_sha256;
use crate::plugin::{LoadError, PluginEngine, PluginSet, RecordFailure};

use super::chain::{AugmentReport, ChainReport, annotate, augment};
use super::input::{InputError, read_each};
use super::labels::{Answers, check_answer};
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

/// Records handed to the plugin chain and written at a time: memory stays bounded by this
/// many records whatever the input's size.
const CHUNK: usize = 2048;

/// What the first pass over the input finds: the first good record of each id (by a digest
/// of the id), what the label set is found from, PubMedQA's labelled ids (for the official
/// split), and the good records' count and the first error.
#[derive(Default)]
struct Scan {
    first: HashMap<[u8; 16], u32>,
    answers: Answers,
    labelled: Vec<(String, String)>,
    good: usize,
    errors: usize,
    first_error: Option<String>,
}

fn id_digest(id: &str) -> [u8; 16] {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(id.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The outputs being written: one temporary file each, renamed into place only when the
/// whole stage succeeded.
struct Outputs {
    splits: Vec<(Split, atomic::Writer)>,
    errors: atomic::Writer,
}

impl Outputs {
    fn create(out_dir: &Path) -> Result<Self, DataError> {
        let open = |path: PathBuf| atomic::Writer::create(&path).map_err(|source| DataError::Write { path, source });
        Ok(Self {
            splits: Split::ALL.iter().map(|s| Ok((*s, open(out_dir.join(format!("{s}.jsonl")))?))).collect::<Result<_, DataError>>()?,
            errors: open(out_dir.join("errors.jsonl"))?,
        })
    }

    fn record(&mut self, r: &Record) -> Result<(), DataError> {
        let w = self.splits.iter_mut().find(|(s, _)| *s == r.split).map(|(_, w)| w).ok_or_else(|| DataError::Write {
            path: PathBuf::from(format!("{}.jsonl", r.split)),
            source: std::io::Error::other("no such split"),
        })?;
        line(w, r)
    }

    fn error(&mut self, row: &serde_json::Value) -> Result<(), DataError> {
        line(&mut self.errors, row)
    }
}

/// One JSON line into `w`.
fn line<T: serde::Serialize>(w: &mut atomic::Writer, row: &T) -> Result<(), DataError> {
    let err = |source: std::io::Error, w: &atomic::Writer| DataError::Write { path: w.path().to_owned(), source };
    serde_json::to_writer(&mut *w, row).map_err(|e| err(e.into(), w))?;
    std::io::Write::write_all(w, b"\n").map_err(|e| err(e, w))
}

fn input_error_row(e: &InputError) -> serde_json::Value {
    json!({"file": e.file, "place": e.place, "error": e.message})
}

fn failure_row(f: &RecordFailure) -> serde_json::Value {
    json!({"plugin": f.plugin, "record": f.record, "error": f.reason})
}

/// Runs the data stage of `config`; the manifest records `fingerprint` (what the outputs are a
/// function of, so that another config with the same data may use them). `on_batch` sees
/// progress (records done, swap log).
///
/// The input is read twice and never held whole: a first pass finds the ids, the label set and
/// the official split; the second validates, splits, annotates and writes `CHUNK` records at
/// a time; the augmenters then read the training split back from its file. Every output goes
/// to a temporary file renamed into place at the end, so a failed stage leaves the last
/// outputs as they were.
pub fn run(
    config: &Config,
    engine: PluginEngine,
    fingerprint: &str,
    mut on_batch: impl FnMut(usize, &[String]),
) -> Result<DataReport, DataError> {
    let inputs = config.inputs();
    let input = inputs[0].0.clone();
    let spec = config.input_spec();
    let official = config.data.split == SplitKind::Official;
    let mut scan = Scan::default();
    let mut number = 0u32;
    for (path, _) in &inputs {
        read_each(path, &spec, |item| {
            match item {
                Ok(r) => {
                    number += 1;
                    if let std::collections::hash_map::Entry::Vacant(v) = scan.first.entry(id_digest(&r.id)) {
                        v.insert(number);
                        scan.answers.add(&r);
                        if official && let Some(a) = &r.answer {
                            scan.labelled.push((r.id.clone(), a.clone()));
                        }
                    }
                    scan.good += 1;
                }
                Err(e) => {
                    scan.errors += 1;
                    scan.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            true
        });
    }
    let no_records = |count: usize, first: Option<String>| DataError::NoRecords {
        path: input.clone(),
        count,
        first: first.unwrap_or_else(|| "the file holds no record".to_owned()),
    };
    if scan.good == 0 {
        return Err(no_records(scan.errors, scan.first_error));
    }
    // a generate task learns text: no label set
    let labels = match config.task.kind {
        TaskKind::Choice => {
            scan.answers.label_set(config.task.labels.as_deref()).map_err(|e| DataError::Labels { path: input.clone(), message: e.0 })?
        }
        TaskKind::Generate | TaskKind::Annotate => Vec::new(),
    };
    let official_splits = match (official, &config.data.test_ground_truth) {
        (true, Some(truth)) => {
            // the folds are stratified by answer; a generate task (no label set) keeps every
            // answer, so its dev fold is the choice task's
            if !labels.is_empty() {
                scan.labelled.retain(|(_, a)| labels.iter().any(|l| l.eq_ignore_ascii_case(a.trim())));
            }
            Some(official_splits(&scan.labelled, &config.resolve(truth))?)
        }
        _ => None,
    };
    let mut set = PluginSet::load(engine, config.slots(), config.plugin_dirs())?.with_precedence(config.plugins.precedence.clone());
    if config.plugins.watch {
        set.watch(Some(config.watch_source(|_| true)))?;
    }
    let plugins: Vec<String> = set.plugins().iter().map(|p| format!("{} {}", p.id(), p.hash())).collect();

    // the second pass: validate, split, annotate and write, a chunk at a time
    let out_dir = config.work_dir().join("data/processed");
    let mut out = Outputs::create(&out_dir)?;
    let mut input_errors = Vec::new();
    let mut chain = ChainReport::default();
    let mut splits: BTreeMap<String, usize> = Split::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    let mut concept_docs: HashMap<String, usize> = HashMap::new();
    let mut label_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut chunk: Vec<Record> = Vec::with_capacity(CHUNK);
    let (mut done, mut kept, mut number) = (0usize, 0usize, 0u32);
    let mut failed: Option<DataError> = None;
    let stop_on_error = config.data.on_error == OnError::Stop;
    let mut flush = |chunk: &mut Vec<Record>, out: &mut Outputs, chain: &mut ChainReport| -> Result<(), DataError> {
        let report = annotate(&mut set, chunk, config.data.batch_size, stop_on_error, |n, swaps| on_batch(done + n, swaps));
        done += chunk.len();
        merge(chain, report);
        for r in chunk.iter() {
            out.record(r)?;
            *splits.entry(r.split.to_string()).or_default() += 1;
            if r.split == Split::Train {
                let ids: BTreeSet<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
                for id in ids {
                    *concept_docs.entry(id.to_owned()).or_default() += 1;
                }
                if let Some(a) = &r.answer {
                    *label_counts.entry(a.clone()).or_default() += 1;
                }
            }
            for f in &r.failures {
                out.error(&failure_row(f))?;
            }
        }
        kept += chunk.len();
        chunk.clear();
        Ok(())
    };
    let mut layout = None;
    for (path, file_split) in &inputs {
        let read = read_each(path, &spec, |item| {
            let mut r = match item {
                Ok(r) => r,
                Err(e) => {
                    let row = input_error_row(&e);
                    input_errors.push(e);
                    return out.error(&row).map_err(|e| failed = Some(e)).is_ok();
                }
            };
            number += 1;
            let problem = if scan.first.get(&id_digest(&r.id)) != Some(&number) {
                Some(format!("the id {} is taken by an earlier record", r.id))
            } else if labels.is_empty() {
                None
            } else {
                check_answer(&mut r, &labels).err()
            };
            if let Some(message) = problem {
                let e = InputError::at(path, &place_of(&r, path), message);
                let row = input_error_row(&e);
                input_errors.push(e);
                return out.error(&row).map_err(|e| failed = Some(e)).is_ok();
            }
            r.split = match (config.data.split, &official_splits) {
                (SplitKind::Official, Some((test, dev))) => {
                    if test.contains(&r.id) {
                        Split::Test
                    } else if dev.contains(&r.id) {
                        Split::Dev
                    } else {
                        Split::Train
                    }
                }
                (SplitKind::Random, _) => random_split(&r.id, config.data.seed, config.data.dev_fraction, config.data.test_fraction),
                (SplitKind::Field, _) => r.split,
                (SplitKind::Files, _) => file_split.unwrap_or_default(),
                _ => Split::Train,
            };
            chunk.push(r);
            if chunk.len() >= CHUNK {
                if let Err(e) = flush(&mut chunk, &mut out, &mut chain) {
                    failed = Some(e);
                    return false;
                }
                return !chain.stopped;
            }
            true
        });
        layout = layout.or(read);
        if failed.is_some() || chain.stopped {
            break;
        }
    }
    if failed.is_none() && !chain.stopped && !chunk.is_empty() {
        flush(&mut chunk, &mut out, &mut chain)?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if kept == 0 {
        return Err(no_records(input_errors.len(), input_errors.first().map(ToString::to_string)));
    }

    // the augmenters, over the training split read back from its file
    let aug_path = config.work_dir().join("data/augmented/train.jsonl");
    let mut augmented_out = atomic::Writer::create(&aug_path).map_err(|source| DataError::Write { path: aug_path.clone(), source })?;
    let augmented = {
        let train =
            out.splits.iter_mut().find(|(s, _)| *s == Split::Train).map(|(_, w)| w).ok_or_else(|| DataError::Write {
                path: out_dir.join("train.jsonl"),
                source: std::io::Error::other("no training split"),
            })?;
        train.flush().map_err(|source| DataError::Write { path: train.path().to_owned(), source })?;
        let train_path = train.temp_path().to_owned();
        let label_counts = label_counts.iter().map(|(l, n)| format!("{l}={n}")).collect::<Vec<_>>().join(",");
        let swaps = &mut chain.swaps;
        run_augmenters(
            &mut set,
            &train_path,
            &mut augmented_out,
            &mut out,
            config,
            &concept_docs,
            &label_counts,
            chain.stopped,
            &mut |lines| {
                on_batch(done, lines);
                swaps.extend_from_slice(lines);
            },
        )?
    };

    // everything written: rename into place
    let mut outputs = Vec::new();
    for (_, w) in out.splits {
        outputs.push(w.path().to_owned());
        commit(w)?;
    }
    outputs.push(aug_path);
    commit(augmented_out)?;
    outputs.push(out.errors.path().to_owned());
    commit(out.errors)?;
    let manifest = DataManifest {
        stage: "data".into(),
        config: HashedFile { path: config.path.clone(), sha256: file_sha256(&config.path) },
        inputs: inputs.iter().map(|(path, _)| HashedFile { path: path.clone(), sha256: file_sha256(path) }).collect(),
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
        records: kept,
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
    Ok(DataReport { records: kept, splits, input_errors, chain, augmented, outputs, plugins, layout, labels })
}

fn commit(w: atomic::Writer) -> Result<(), DataError> {
    let path = w.path().to_owned();
    w.commit().map_err(|source| DataError::Write { path, source })
}

/// Adds a chunk's chain report to the stage's.
fn merge(total: &mut ChainReport, part: ChainReport) {
    total.failed_records += part.failed_records;
    total.failures.extend(part.failures);
    total.swaps.extend(part.swaps);
    total.stopped |= part.stopped;
    for (id, t) in part.plugin_time {
        match total.plugin_time.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 += t,
            None => total.plugin_time.push((id, t)),
        }
    }
}

/// Runs the chain's augmenters over the training split (read back from `train`, `CHUNK`
/// records at a time), telling them each record's concepts with their training document
/// counts (`concept_counts`) and the answer counts (`label_counts`). `out` gets the training
/// records (an augmenter's failure on one marked on it) followed by the new records,
/// augmenter by augmenter; each augmenter's go to a temporary file first.
#[allow(clippy::too_many_arguments)]
fn run_augmenters(
    set: &mut PluginSet,
    train: &Path,
    out: &mut atomic::Writer,
    outputs: &mut Outputs,
    config: &Config,
    concept_docs: &HashMap<String, usize>,
    label_counts: &str,
    stopped: bool,
    on_swaps: &mut dyn FnMut(&[String]),
) -> Result<AugmentReport, DataError> {
    let read_err = |source: std::io::Error| DataError::Write { path: train.to_owned(), source };
    let mut report = AugmentReport::default();
    let mut derived: Vec<tempfile::NamedTempFile> = Vec::new();
    let mut reader = std::io::BufReader::new(std::fs::File::open(train).map_err(read_err)?);
    let mut chunk: Vec<Record> = Vec::with_capacity(CHUNK);
    let mut text = String::new();
    loop {
        text.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut text).map_err(read_err)?;
        if n > 0 {
            chunk.push(serde_json::from_str(&text).map_err(|e| read_err(std::io::Error::other(e)))?);
        }
        if chunk.len() < CHUNK && n > 0 {
            continue;
        }
        if !stopped && !chunk.is_empty() {
            let part = augment(
                set,
                &mut chunk,
                config.data.batch_size,
                config.data.seed,
                |r| {
                    let ids: BTreeSet<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
                    let counts: Vec<String> = ids.iter().map(|id| format!("{id}:{}", concept_docs.get(*id).unwrap_or(&0))).collect();
                    vec![("concept_counts".to_owned(), counts.join("|")), ("label_counts".to_owned(), label_counts.to_owned())]
                },
                on_swaps,
            );
            let mut made = part.records.into_iter();
            for (k, (id, count, time)) in part.per_plugin.into_iter().enumerate() {
                if derived.len() <= k {
                    derived.push(tempfile::NamedTempFile::new_in(out.path().parent().unwrap_or(Path::new("."))).map_err(read_err)?);
                    report.per_plugin.push((id.clone(), 0, std::time::Duration::ZERO));
                }
                let file = derived[k].as_file_mut();
                let mut w = std::io::BufWriter::new(file);
                for r in made.by_ref().take(count) {
                    serde_json::to_writer(&mut w, &r).map_err(|e| read_err(e.into()))?;
                    std::io::Write::write_all(&mut w, b"\n").map_err(read_err)?;
                }
                std::io::Write::flush(&mut w).map_err(read_err)?;
                report.per_plugin[k].1 += count;
                report.per_plugin[k].2 += time;
            }
            for f in &part.failures {
                outputs.error(&failure_row(f))?;
            }
            report.failures.extend(part.failures);
        }
        for r in &chunk {
            line(out, r)?;
        }
        chunk.clear();
        if n == 0 {
            break;
        }
    }
    for mut file in derived {
        use std::io::Seek as _;
        file.as_file_mut().rewind().map_err(read_err)?;
        std::io::copy(file.as_file_mut(), out).map_err(read_err)?;
    }
    Ok(report)
}

/// `dev` or `test` by a hash of the seed and the record id (so a record keeps its split
/// whatever the order or size of the input), else `train`.
fn random_split(id: &str, seed: u64, dev: f64, test: f64) -> Split {
    let digest = crate::hash::sha256_hex(format!("{seed}:{id}").as_bytes());
    let draw = u64::from_str_radix(&digest[..16], 16).unwrap_or(0) as f64 / u64::MAX as f64;
    if draw < dev {
        Split::Dev
    } else if draw < dev + test {
        Split::Test
    } else {
        Split::Train
    }
}

/// PubMedQA's official split of the `labelled` records: the test ids (the ground truth's)
/// and the dev ids (fold 0 of the official 10 folds).
fn official_splits(labelled: &[(String, String)], ground_truth: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>), DataError> {
    let (_, folds) = official_folds(labelled);
    let test = read_test_ids(ground_truth)?;
    let dev: BTreeSet<String> = folds.first().map(|f| f.iter().cloned().collect()).unwrap_or_default();
    Ok((test, dev))
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

fn read_test_ids(path: &Path) -> Result<BTreeSet<String>, DataError> {
    let err = |message: String| DataError::GroundTruth { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| err(format!("expected an object of id -> answer: {e}")))?;
    Ok(map.into_iter().map(|(k, _)| k).collect())
}
