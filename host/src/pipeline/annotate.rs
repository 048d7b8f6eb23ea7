//! The evaluation of an `annotate` task: the data stage's mentions and the chain's links of
//! each gold mention, compared with an annotated corpus's gold, as units the metric plugins
//! score (by default `annotation-metrics`); written to `runs/<name>/eval/` as `scores.json`,
//! `predictions.jsonl` (the units) and `misses.jsonl` (each miss with its context).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Context, PipelineError, Progress, Result, StageResult};
use crate::artifacts::{self, EvalScores, MetricPluginRef, ScoredQuestion};
use crate::config::Config;
use crate::data::{GoldMention, Record, Sourced, read_jsonl};
use crate::plugin::types::{Mention, PluginKind, Prediction, Reference, Span};
use crate::plugin::{PluginEngine, PluginSet, SlotSpec};

/// Characters of text kept on each side of a miss.
const CONTEXT_CHARS: usize = 60;

/// One miss, for `misses.jsonl` and the report.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Miss {
    /// `link` (a gold mention linked to other ids), `missed` (a gold concept of the document
    /// not found) or `extra` (a concept found that the gold lacks).
    pub kind: String,
    /// The record.
    pub record: String,
    /// The gold entity type (empty for an extra concept).
    #[serde(rename = "type")]
    pub entity: String,
    /// The mention as written (gold for `link` and `missed`, predicted for `extra`).
    pub text: String,
    /// The gold ids.
    pub gold: Vec<String>,
    /// The ids found.
    pub predicted: Vec<String>,
    /// The text around the mention, the mention in square brackets.
    pub context: String,
}

/// Scores `config`'s evaluation split of annotated documents; writes and returns the scores.
pub fn evaluate(config: &Config, progress: &mut dyn Progress) -> Result<EvalScores> {
    let e = config.eval.clone().unwrap_or_default();
    let split_path = config.work_dir().join(format!("data/processed/{}.jsonl", e.split));
    crate::artifacts::DataManifest::of(config).map_err(PipelineError::Stopped)?;
    let (mut records, problems) = read_jsonl(&split_path)
        .context(|| format!("{}: run the data stage first (`medtune data --config {}`)", split_path.display(), config.path.display()))?;
    if e.limit > 0 {
        records.truncate(e.limit);
    }
    records.retain(|r| r.augmentation.is_none());
    if records.iter().all(|r| r.gold.is_empty()) {
        return Err(PipelineError::Stopped(format!("{}: no record has gold mentions to score against", split_path.display())));
    }
    let started = std::time::Instant::now();
    let links = link_gold(config, &records)?;
    let groups = concept_groups(config)?;
    let kinds: BTreeSet<&str> = records.iter().flat_map(|r| r.gold.iter().map(|g| g.kind.as_str())).collect();
    let type_of = |id: &str| -> Option<String> {
        let g = groups.get(id)?.first()?;
        Some(kinds.iter().find(|k| k.eq_ignore_ascii_case(g)).map_or_else(|| g.clone(), |k| (*k).to_owned()))
    };
    let (units, misses) = units(&records, &links, &type_of);
    let predictions: Vec<Prediction> = units.iter().map(|u| Prediction { id: u.id.clone(), label: u.predicted.clone() }).collect();
    let references: Vec<Reference> =
        units.iter().map(|u| Reference { id: u.id.clone(), label: u.gold.clone(), tags: u.tags.clone() }).collect();
    let mut set = super::eval::metric_plugins(config, "annotation-metrics", Vec::new())?;
    let scores = crate::train::eval::metrics_of(&mut set, &predictions, &references).map_err(PipelineError::Stopped)?;
    let seconds = started.elapsed().as_secs_f64();

    let dir = config.run_dir().join("eval");
    let lines = |rows: &mut dyn Iterator<Item = String>| rows.fold(String::new(), |acc, l| acc + &l + "\n");
    let scored = units.iter().map(|u| ScoredQuestion {
        id: u.id.clone(),
        label: u.gold.clone(),
        predicted: u.predicted.clone(),
        probabilities: Vec::new(),
        rare_concept: false,
    });
    for (name, text) in [
        ("predictions.jsonl", lines(&mut scored.map(|s| serde_json::to_string(&s).unwrap_or_default()))),
        ("misses.jsonl", lines(&mut misses.iter().map(|m| serde_json::to_string(m).unwrap_or_default()))),
    ] {
        let path = dir.join(name);
        crate::atomic::write(&path, text.as_bytes()).context(|| format!("writing {}", path.display()))?;
    }
    let result = EvalScores {
        split: e.split,
        questions: records.len(),
        adapter: None,
        model: std::path::PathBuf::new(),
        scores,
        baseline: e.baseline.clone(),
        metric_plugins: set.plugins().iter().map(|p| MetricPluginRef { id: p.id(), sha256: p.hash().to_owned() }).collect(),
        skipped: problems,
        seconds,
        labels: Vec::new(),
    };
    let path = dir.join("scores.json");
    artifacts::write(&path, &result).context(|| format!("writing {}", path.display()))?;
    progress.finished(StageResult::Eval(&result));
    Ok(result)
}

/// The ids the chain links each gold mention to (records in order, their gold mentions in
/// order): the document's own mentions of exactly the gold span, where the data stage found
/// it (so what the document says, "indomethacin (IDM)", counts); else the gold mention's
/// text (an abbreviation the record defines: its long form) as a document of its own (one
/// field, `mention/TYPE`), through the chain's normalizers and disambiguators.
fn link_gold(config: &Config, records: &[Record]) -> Result<Vec<Vec<Vec<String>>>> {
    let mut docs: Vec<Record> = Vec::new();
    for r in records {
        // an abbreviation the record defines ("overactive bladder (OAB)") is linked as its
        // long form, all through the record, and so are gold mentions named by their neighbours
        let mut defined: std::collections::HashMap<String, String> = r
            .fields
            .iter()
            .flat_map(|f| medtext::abbrev::definitions(&crate::data::slice(&r.text, f.span)))
            .map(|d| (d.short, d.long))
            .collect();
        name_by_parentheses(r, &mut defined);
        for (i, g) in r.gold.iter().enumerate() {
            let text = defined.get(g.text.trim()).unwrap_or(&g.text).clone();
            let mut doc = Record::new(format!("{}#{}", r.id, i + 1), String::new(), text, None, Vec::new(), String::new());
            doc.split = r.split;
            // the whole text is one mention of its type (the contract's `mention/TYPE` field)
            for f in &mut doc.fields {
                f.name = format!("mention/{}", g.kind);
            }
            docs.push(doc);
        }
    }
    let specs: Vec<SlotSpec> =
        config.slots().into_iter().filter(|s| matches!(s.kind, PluginKind::Normalizer | PluginKind::Disambiguator)).collect();
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins"))).context(|| "starting the plugin engine".into())?;
    let mut set = PluginSet::load(engine, specs, config.plugin_dirs())
        .context(|| "loading the plugins".into())?
        .with_precedence(config.plugins.precedence.clone());
    let report = crate::data::annotate(&mut set, &mut docs, config.data.batch_size, false, |_, _| {});
    if let Some(first) = report.failures.first() {
        tracing::warn!(
            "{} gold mention(s) could not be linked: a plugin failed on them (counted as not found); the first, {} (record#mention): {}: {}",
            report.failed_records,
            first.record,
            first.plugin,
            first.reason
        );
    }
    let mut out = Vec::with_capacity(records.len());
    let mut it = docs.iter();
    for r in records {
        let ids = r.gold.iter().map(|g| {
            let alone = it.next().map(|d| linked_ids(&d.mentions)).unwrap_or_default();
            let in_place: BTreeSet<String> = r.mentions.iter().filter(|m| m.span == g.span).map(|m| m.concept.id.clone()).collect();
            if in_place.is_empty() { alone } else { in_place.into_iter().collect() }
        });
        out.push(ids.collect());
    }
    Ok(out)
}

/// Adds to `defined` (text as written -> the text to link it as) what gold mentions of one type
/// written side by side, the second in parentheses, say of each other: the second is the
/// first's short form ("sodium (Na)"; it wins over a Schwartz–Hearst long form), or a
/// one-word first is a name of the longer second ("Elavil (amitriptyline)").
fn name_by_parentheses(r: &Record, defined: &mut std::collections::HashMap<String, String>) {
    // the gold spans in bytes (they are in characters), from one pass over the text
    let bytes: Vec<usize> = r.text.char_indices().map(|(b, _)| b).chain([r.text.len()]).collect();
    let byte = |c: u32| bytes.get(c as usize).copied().unwrap_or(r.text.len());
    let mut gold: Vec<(&crate::data::GoldMention, usize, usize)> =
        r.gold.iter().map(|g| (g, byte(g.span.start), byte(g.span.end))).collect();
    gold.sort_by_key(|g| g.1);
    for (&(a, _, a_end), &(b, b_start, b_end)) in gold.iter().zip(gold.iter().skip(1)) {
        if a.kind != b.kind {
            continue;
        }
        if medtext::abbrev::short_form_after(&r.text, a_end) == Some((b_start, b_end)) {
            defined.insert(b.text.trim().to_owned(), a.text.clone());
            continue;
        }
        let between = r.text.get(a_end..b_start).unwrap_or_default();
        let closed = r.text.get(b_end..).is_some_and(|t| t.starts_with([')', ';', ',']));
        let one_word = !a.text.trim().contains(char::is_whitespace);
        if matches!(between, " (" | "(") && closed && one_word && a.text.len() < b.text.len() {
            defined.entry(a.text.trim().to_owned()).or_insert_with(|| b.text.clone());
        }
    }
}

/// The ids a mention's own text is linked to: the longest mentions first, none overlapping
/// an earlier pick but those of the same span (a coordination's concepts); sorted, each once.
fn linked_ids(mentions: &[Sourced<Mention>]) -> Vec<String> {
    let mut by_length: Vec<&Mention> = mentions.iter().map(|m| &m.value).collect();
    by_length.sort_by_key(|m| (std::cmp::Reverse(m.span.end - m.span.start), m.span.start));
    let mut taken: Vec<Span> = Vec::new();
    let mut ids = BTreeSet::new();
    for m in by_length {
        if taken.contains(&m.span) || taken.iter().all(|t| m.span.end <= t.start || t.end <= m.span.start) {
            taken.push(m.span);
            ids.insert(m.concept.id.clone());
        }
    }
    ids.into_iter().collect()
}

/// The semantic groups of the vocabulary's concepts (the last column of `concepts.tsv` and
/// `supplementary.tsv` in `vocab.dir`, as `medtune vocab build` writes them): a concept found
/// that the gold lacks is charged to the entity type its group names (`disease` to `Disease`).
fn concept_groups(config: &Config) -> Result<std::collections::HashMap<String, Vec<String>>> {
    let mut out = std::collections::HashMap::new();
    let Some(dir) = config.vocab.as_ref().map(|v| config.resolve(&v.dir)) else { return Ok(out) };
    for name in ["corpus.tsv", "concepts.tsv", "supplementary.tsv"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut cols = line.split('\t');
            let (Some(id), Some(groups)) = (cols.next(), cols.nth(2)) else { continue };
            let groups: Vec<String> = groups.split('|').filter(|g| !g.is_empty()).map(str::to_owned).collect();
            if !groups.is_empty() {
                out.insert(id.to_owned(), groups);
            }
        }
    }
    Ok(out)
}

/// One unit a metric scores.
struct Unit {
    id: String,
    gold: String,
    predicted: String,
    tags: Vec<String>,
}

fn presence(on: bool) -> String {
    if on { "present" } else { "absent" }.to_owned()
}

/// The units of every measure, and the misses.
fn units(records: &[Record], links: &[Vec<Vec<String>>], type_of: &dyn Fn(&str) -> Option<String>) -> (Vec<Unit>, Vec<Miss>) {
    let (mut units, mut misses) = (Vec::new(), Vec::new());
    for (r, linked) in records.iter().zip(links) {
        // gold-span linking
        for (i, (g, ids)) in r.gold.iter().zip(linked).enumerate() {
            if g.ids.is_empty() {
                continue;
            }
            let mut gold = g.ids.clone();
            gold.sort();
            gold.dedup();
            if gold != *ids {
                misses.push(miss("link", r, g, g.span, ids.clone()));
            }
            units.push(Unit {
                id: format!("link:{}:{}", r.id, i + 1),
                gold: gold.join("|"),
                predicted: ids.join("|"),
                tags: vec!["link".into(), format!("type:{}", g.kind)],
            });
        }
        // document-level concepts
        let mut gold_docs: BTreeMap<&str, (&str, &GoldMention)> = BTreeMap::new();
        for g in &r.gold {
            for id in &g.ids {
                gold_docs.entry(id.as_str()).or_insert((g.kind.as_str(), g));
            }
        }
        let mut found: BTreeMap<&str, &Mention> = BTreeMap::new();
        for m in &r.mentions {
            found.entry(m.concept.id.as_str()).or_insert(&m.value);
        }
        for id in gold_docs.keys().chain(found.keys().filter(|k| !gold_docs.contains_key(*k))) {
            let (gold, predicted) = (gold_docs.get(id), found.get(id));
            let mut tags = vec!["document".to_owned()];
            tags.extend(gold.map(|(kind, _)| (*kind).to_owned()).or_else(|| type_of(id)).map(|k| format!("type:{k}")));
            tags.push(format!("concept:{id}"));
            match (gold, predicted) {
                (Some((_, g)), None) => misses.push(miss("missed", r, g, g.span, Vec::new())),
                (None, Some(m)) => misses.push(Miss {
                    kind: "extra".into(),
                    record: r.id.clone(),
                    entity: String::new(),
                    text: crate::data::slice(&r.text, m.span),
                    gold: Vec::new(),
                    predicted: vec![m.concept.id.clone()],
                    context: context(&r.text, m.span),
                }),
                _ => {}
            }
            units.push(Unit {
                id: format!("document:{}:{id}", r.id),
                gold: presence(gold.is_some()),
                predicted: presence(predicted.is_some()),
                tags,
            });
        }
        // mentions: a found mention matches a gold one with one of its ids, at the same span
        // (exact) or an overlapping one (overlap)
        for (measure, fits) in [("mention-exact", exact as fn(Span, Span) -> bool), ("mention-overlap", overlaps)] {
            let mut used = vec![false; r.mentions.len()];
            for (i, g) in r.gold.iter().enumerate().filter(|(_, g)| !g.ids.is_empty()) {
                let hit = r.mentions.iter().enumerate().find(|(j, m)| !used[*j] && fits(m.span, g.span) && g.ids.contains(&m.concept.id));
                if let Some((j, _)) = hit {
                    used[j] = true;
                }
                units.push(Unit {
                    id: format!("{measure}:{}:{}", r.id, i + 1),
                    gold: presence(true),
                    predicted: presence(hit.is_some()),
                    tags: vec![measure.to_owned(), format!("type:{}", g.kind)],
                });
            }
            for (j, m) in r.mentions.iter().enumerate().filter(|(j, _)| !used[*j]) {
                // a found mention that matches a gold mention without an id, or is another
                // concept of a composite gold mention already matched, is not charged
                if r.gold.iter().any(|g| fits(m.span, g.span) && (g.ids.is_empty() || g.ids.contains(&m.concept.id))) {
                    continue;
                }
                units.push(Unit {
                    id: format!("{measure}:{}:found{}", r.id, j + 1),
                    gold: presence(false),
                    predicted: presence(true),
                    tags: [measure.to_owned(), format!("concept:{}", m.concept.id)]
                        .into_iter()
                        .chain(type_of(&m.concept.id).map(|k| format!("type:{k}")))
                        .collect(),
                });
            }
        }
    }
    (units, misses)
}

fn exact(a: Span, b: Span) -> bool {
    a == b
}

fn overlaps(a: Span, b: Span) -> bool {
    a.start < b.end && b.start < a.end
}

fn miss(kind: &str, r: &Record, g: &GoldMention, span: Span, predicted: Vec<String>) -> Miss {
    Miss {
        kind: kind.into(),
        record: r.id.clone(),
        entity: g.kind.clone(),
        text: g.text.clone(),
        gold: g.ids.clone(),
        predicted,
        context: context(&r.text, span),
    }
}

/// The text around `span`, the span in [brackets], on one line.
fn context(text: &str, span: Span) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (a, b) = (span.start as usize, (span.end as usize).min(chars.len()));
    let from = a.saturating_sub(CONTEXT_CHARS);
    let to = (b + CONTEXT_CHARS).min(chars.len());
    let piece = |x: usize, y: usize| chars[x..y].iter().collect::<String>().replace(['\n', '\r'], " ");
    format!("{}[{}]{}", piece(from, a.min(b)), piece(a.min(b), b), piece(b, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::Concept;

    fn mention(start: u32, end: u32, id: &str) -> Sourced<Mention> {
        Sourced {
            value: Mention { span: Span { start, end }, concept: Concept { id: id.into(), preferred_name: String::new() }, score: 1.0 },
            source: "t".into(),
        }
    }

    fn gold(start: u32, end: u32, text: &str, kind: &str, ids: &[&str]) -> GoldMention {
        GoldMention {
            span: Span { start, end },
            text: text.into(),
            kind: kind.into(),
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            parts: Vec::new(),
        }
    }

    /// Linking picks the longest mentions; a document's concepts and its mentions are units
    /// present or absent on each side; a mention without a gold id is not charged.
    #[test]
    fn units_compare_found_with_gold_per_measure() {
        assert_eq!(linked_ids(&[mention(0, 5, "D2"), mention(0, 13, "D1"), mention(6, 13, "D3")]), ["D1"]);
        assert_eq!(linked_ids(&[mention(0, 6, "D2"), mention(7, 14, "D1")]), ["D1", "D2"]);
        assert_eq!(linked_ids(&[mention(0, 25, "D2"), mention(0, 25, "D1"), mention(11, 25, "D3")]), ["D1", "D2"], "a coordination");

        let mut r = Record::new("7".into(), String::new(), "Aspirin caused asthma and MI.".into(), None, vec![], String::new());
        r.gold = vec![
            gold(0, 7, "Aspirin", "Chemical", &["D001241"]),
            gold(15, 21, "asthma", "Disease", &["D001249"]),
            gold(26, 28, "MI", "Disease", &[]),
        ];
        r.mentions = vec![mention(0, 7, "D001241"), mention(14, 21, "D001249"), mention(26, 28, "D009203")];
        let links = vec![vec![vec!["D001241".to_owned()], vec![], vec![]]];
        let type_of = |id: &str| (id == "D009203").then(|| "Disease".to_owned());
        let (units, misses) = units(&[r], &links, &type_of);
        let get = |id: &str| units.iter().find(|u| u.id == id).map(|u| (u.gold.as_str(), u.predicted.as_str()));
        assert_eq!(get("link:7:1"), Some(("D001241", "D001241")));
        assert_eq!(get("link:7:2"), Some(("D001249", "")));
        assert_eq!(get("link:7:3"), None, "no gold id, no link unit");
        assert_eq!(get("document:7:D001249"), Some(("present", "present")));
        assert_eq!(get("document:7:D009203"), Some(("absent", "present")));
        let tags = |id: &str| units.iter().find(|u| u.id == id).map(|u| u.tags.join(" ")).unwrap_or_default();
        assert_eq!(tags("document:7:D009203"), "document type:Disease concept:D009203", "typed by its group");
        assert_eq!(get("mention-exact:7:2"), Some(("present", "absent")), "the span differs by one character");
        assert_eq!(get("mention-overlap:7:2"), Some(("present", "present")));
        assert_eq!(get("mention-exact:7:found3"), None, "MI has no gold id: not charged");
        let kinds: Vec<(&str, &str)> = misses.iter().map(|m| (m.kind.as_str(), m.text.as_str())).collect();
        assert_eq!(kinds, [("link", "asthma"), ("extra", "MI")]);
        assert_eq!(misses[0].context, "Aspirin caused [asthma] and MI.");
    }
}
