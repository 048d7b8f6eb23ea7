//! Runs the plugin chain over records in batches. A failed batch is retried record by
//! record to isolate the record at fault; every failure is kept on its record.

use std::time::{Duration, Instant};

use crate::plugin::types::{Annotated, Document, PluginKind};
use crate::plugin::{CallError, Outcomes, Plugin, PluginSet, RecordFailure};

use super::record::{Augmentation, Record, Sourced, plain};

/// What a chain run did.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// Records with at least one failure.
    pub failed_records: usize,
    /// Every failure, in order.
    pub failures: Vec<RecordFailure>,
    /// Hot-swap log lines.
    pub swaps: Vec<String>,
    /// Time spent in each normalizer and disambiguator.
    pub plugin_time: Vec<(String, Duration)>,
    /// Whether the run stopped early (`on_error = "stop"`).
    pub stopped: bool,
}

/// Annotates `records` in place with every normalizer and disambiguator of the chain.
/// `stop_on_error` stops after the first batch with a failure. `on_batch` is called after
/// each batch with the number of records done.
pub fn annotate(
    set: &mut PluginSet,
    records: &mut [Record],
    batch_size: usize,
    stop_on_error: bool,
    mut on_batch: impl FnMut(usize, &[String]),
) -> ChainReport {
    let mut report =
        ChainReport { plugin_time: set.plugins().iter().map(|p| (p.id(), Duration::ZERO)).collect(), ..ChainReport::default() };
    let mut done = 0;
    for batch in records.chunks_mut(batch_size.max(1)) {
        let mut swaps = set.apply_swaps();
        let benched = set.benched();
        let mut timed_out = vec![false; benched.len()];
        for (slot, plugin) in set.plugins_mut().iter_mut().enumerate() {
            if benched[slot] {
                let reason = "skipped: taken out of the chain after timing out on every call of a row; back when it is swapped".to_owned();
                batch.iter_mut().for_each(|r| {
                    r.failures.push(RecordFailure { plugin: plugin.id(), record: r.id.clone(), reason: reason.clone(), timed_out: false })
                });
                continue;
            }
            let t = Instant::now();
            let before: Vec<usize> = batch.iter().map(|r| r.failures.len()).collect();
            match plugin.kind() {
                PluginKind::Normalizer => run_normalizer(plugin, batch),
                PluginKind::Disambiguator => run_disambiguator(plugin, batch),
                PluginKind::Augmenter | PluginKind::Metric => {}
            }
            timed_out[slot] = batch.iter().zip(&before).any(|(r, &n)| r.failures[n..].iter().any(|f| f.timed_out));
            if let Some(entry) = report.plugin_time.get_mut(slot) {
                entry.0 = plugin.id();
                entry.1 += t.elapsed();
            }
        }
        for (slot, &out_of_time) in timed_out.iter().enumerate() {
            if !benched[slot] {
                swaps.extend(set.record_call(slot, out_of_time));
            }
        }
        if !set.precedence().is_empty() {
            batch.iter_mut().for_each(|r| settle_overlaps(r, set.precedence()));
        }
        done += batch.len();
        on_batch(done, &swaps);
        report.swaps.extend(swaps);
        let failed: Vec<&Record> = batch.iter().filter(|r| !r.failures.is_empty()).collect();
        report.failed_records += failed.len();
        report.failures.extend(failed.iter().flat_map(|r| r.failures.iter().cloned()));
        if stop_on_error && !failed.is_empty() {
            report.stopped = true;
            break;
        }
    }
    let kinds: Vec<PluginKind> = set.plugins().iter().map(|p| p.kind()).collect();
    let mut slot = 0;
    report.plugin_time.retain(|_| {
        slot += 1;
        matches!(kinds[slot - 1], PluginKind::Normalizer | PluginKind::Disambiguator)
    });
    report
}

/// Where mentions of two normalizers overlap, keeps only those of the one `precedence` ranks
/// higher (unlisted ones rank last; mentions of one plugin never displace each other).
pub fn settle_overlaps(record: &mut Record, precedence: &[String]) {
    let rank = |source: &str| {
        let name = source.split_once('@').map_or(source, |(n, _)| n);
        precedence.iter().position(|p| p == name).unwrap_or(precedence.len())
    };
    let mut order: Vec<usize> = (0..record.mentions.len()).collect();
    order.sort_by_key(|&i| rank(&record.mentions[i].source));
    let mut keep = vec![false; record.mentions.len()];
    for &i in &order {
        let m = &record.mentions[i];
        let r = rank(&m.source);
        let beaten = order.iter().filter(|&&k| keep[k]).any(|&k| {
            let o = &record.mentions[k];
            rank(&o.source) < r && o.span.start < m.span.end && m.span.start < o.span.end
        });
        keep[i] = !beaten;
    }
    let mut k = keep.into_iter();
    record.mentions.retain(|_| k.next().unwrap_or(true));
}

fn stamp(plugin: &Plugin) -> String {
    format!("{}#{}", plugin.id(), &plugin.hash()[..12])
}

/// The shortest time limit a part of a timed-out batch is given.
const MIN_PART_LIMIT: Duration = Duration::from_millis(50);

/// Calls `call` on the whole batch; if the call itself fails, finds the records at fault so
/// that only they are marked. After a trap each record is tried alone. After a timeout the
/// batch is halved, each half under a limit in proportion to its share of the batch (twice
/// it, at least 50 ms), halves that time out are halved again, and a single record that times
/// out is tried once more alone under the full limit: a record is marked only for what it
/// does by itself, and a runaway record costs about three limits, not one per record.
pub fn isolate<In, T>(
    plugin: &mut Plugin,
    inputs: &[In],
    ids: &[String],
    mut call: impl FnMut(&mut Plugin, &[In]) -> Result<Outcomes<T>, CallError>,
) -> Outcomes<T> {
    match call(plugin, inputs) {
        Ok(out) => out,
        Err(e) if inputs.len() <= 1 => ids.iter().map(|id| Err(failure(plugin, id, &e, None))).collect(),
        Err(CallError::Timeout { .. }) => {
            let full = plugin.sandbox().timeout;
            let out = bisect(plugin, inputs, ids, &mut call, full, inputs.len());
            plugin.set_timeout(full);
            out
        }
        Err(e) => one_by_one(plugin, inputs, ids, &mut call, &e),
    }
}

fn one_by_one<In, T>(
    plugin: &mut Plugin,
    inputs: &[In],
    ids: &[String],
    call: &mut impl FnMut(&mut Plugin, &[In]) -> Result<Outcomes<T>, CallError>,
    first: &CallError,
) -> Outcomes<T> {
    let n = inputs.len();
    inputs
        .chunks(1)
        .zip(ids)
        .map(|(one, id)| match call(plugin, one) {
            Ok(mut out) => out.pop().unwrap_or_else(|| Err(failure(plugin, id, first, Some(n)))),
            Err(e) => Err(failure(plugin, id, &e, Some(n))),
        })
        .collect()
}

fn bisect<In, T>(
    plugin: &mut Plugin,
    inputs: &[In],
    ids: &[String],
    call: &mut impl FnMut(&mut Plugin, &[In]) -> Result<Outcomes<T>, CallError>,
    full: Duration,
    batch: usize,
) -> Outcomes<T> {
    if inputs.len() == 1 {
        plugin.set_timeout(full);
        return match call(plugin, inputs) {
            Ok(out) => out,
            Err(e) => vec![Err(failure(plugin, &ids[0], &e, Some(batch)))],
        };
    }
    let mid = inputs.len() / 2;
    let mut out = Vec::with_capacity(inputs.len());
    for (part, part_ids) in [(&inputs[..mid], &ids[..mid]), (&inputs[mid..], &ids[mid..])] {
        let share = full.mul_f64(2.0 * part.len() as f64 / batch as f64);
        plugin.set_timeout(share.clamp(MIN_PART_LIMIT.min(full), full));
        match call(plugin, part) {
            Ok(o) => out.extend(o),
            Err(CallError::Timeout { .. }) => out.extend(bisect(plugin, part, part_ids, call, full, batch)),
            Err(e) => {
                plugin.set_timeout(full);
                out.extend(one_by_one(plugin, part, part_ids, call, &e));
            }
        }
    }
    out
}

/// A record's failure; `batch` is the size of the batch it was found in, when it was found
/// by trying it alone.
fn failure(plugin: &Plugin, id: &str, e: &CallError, batch: Option<usize>) -> RecordFailure {
    let context = match batch {
        Some(n) if n > 1 => format!(" (tried alone after its batch of {n} failed)"),
        _ => String::new(),
    };
    RecordFailure {
        plugin: plugin.id(),
        record: id.to_owned(),
        reason: format!("{e}{context}"),
        timed_out: matches!(e, CallError::Timeout { .. }),
    }
}

fn run_normalizer(plugin: &mut Plugin, batch: &mut [Record]) {
    let docs: Vec<Document> = batch.iter().map(Record::document).collect();
    let out = isolate(plugin, &docs, &ids(batch), |p, d| p.normalize(d));
    keep(plugin, batch, out, |r, mentions, source| {
        r.mentions.extend(mentions.into_iter().map(|value| Sourced { value, source: source.to_owned() }))
    });
}

fn run_disambiguator(plugin: &mut Plugin, batch: &mut [Record]) {
    let docs: Vec<Annotated> = batch
        .iter()
        .map(|r| Annotated { document: r.document(), mentions: plain(&r.mentions), expansions: plain(&r.expansions) })
        .collect();
    let out = isolate(plugin, &docs, &ids(batch), |p, d| p.disambiguate(d));
    keep(plugin, batch, out, |r, expansions, source| {
        r.expansions.extend(expansions.into_iter().map(|value| Sourced { value, source: source.to_owned() }))
    });
}

fn ids(batch: &[Record]) -> Vec<String> {
    batch.iter().map(|r| r.id.clone()).collect()
}

/// Puts each record's output in place (and the plugin in its provenance), or its failure.
fn keep<T>(plugin: &Plugin, batch: &mut [Record], out: Outcomes<T>, put: impl Fn(&mut Record, T, &str)) {
    let stamp = stamp(plugin);
    for (record, result) in batch.iter_mut().zip(out) {
        match result {
            Ok(found) => {
                put(record, found, &stamp);
                record.provenance.plugins.push(stamp.clone());
            }
            Err(f) => record.failures.push(f),
        }
    }
}

/// What the augmenters made.
#[derive(Debug, Default)]
pub struct AugmentReport {
    /// The new records, in source order, augmenter by augmenter.
    pub records: Vec<Record>,
    /// New records per augmenter (`name@version`).
    pub per_plugin: Vec<(String, usize, Duration)>,
    /// Source records an augmenter failed on (they are kept, marked).
    pub failures: Vec<RecordFailure>,
}

/// Runs every augmenter of the chain over `sources` (each augmenter sees the original
/// records, not another augmenter's output). `extra` adds metadata to a record's document.
/// Swaps are applied between batches and their log lines given to `on_swaps`.
pub fn augment(
    set: &mut PluginSet,
    sources: &mut [Record],
    batch_size: usize,
    seed: u64,
    extra: impl Fn(&Record) -> Vec<(String, String)>,
    on_swaps: &mut dyn FnMut(&[String]),
) -> AugmentReport {
    let mut report = AugmentReport::default();
    for slot in 0..set.plugins().len() {
        if set.plugins()[slot].kind() != PluginKind::Augmenter {
            continue;
        }
        let plugin_seed = seed ^ (slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let before = report.records.len();
        let started = Instant::now();
        for batch in sources.chunks_mut(batch_size.max(1)) {
            let swaps = set.apply_swaps();
            if !swaps.is_empty() {
                on_swaps(&swaps);
            }
            let settings = set.specs().get(slot).map(|s| s.sandbox.settings.clone()).unwrap_or_default();
            let plugin = &mut set.plugins_mut()[slot];
            let stamp = stamp(plugin);
            let docs: Vec<Annotated> = batch
                .iter()
                .map(|r| {
                    let mut document = r.document();
                    document.metadata.extend(extra(r));
                    Annotated { document, mentions: plain(&r.mentions), expansions: plain(&r.expansions) }
                })
                .collect();
            let out = isolate(plugin, &docs, &ids(batch), |p, d| p.augment(d, plugin_seed));
            for (record, result) in batch.iter_mut().zip(out) {
                match result {
                    Ok(derived) => {
                        for (k, d) in derived.iter().enumerate() {
                            let aug = Augmentation {
                                source: record.id.clone(),
                                plugin: stamp.clone(),
                                settings: settings.clone(),
                                seed: plugin_seed,
                                note: d.note.clone(),
                            };
                            match record.derive(k, d, aug) {
                                Ok(new) => report.records.push(new),
                                Err(reason) => {
                                    let f = RecordFailure { plugin: plugin.id(), record: record.id.clone(), reason, timed_out: false };
                                    report.failures.push(f.clone());
                                    record.failures.push(f);
                                }
                            }
                        }
                    }
                    Err(f) => {
                        report.failures.push(f.clone());
                        record.failures.push(f);
                    }
                }
            }
        }
        report.per_plugin.push((set.plugins()[slot].id(), report.records.len() - before, started.elapsed()));
    }
    report
}
