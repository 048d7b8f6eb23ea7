//! Quality of the default medical plugins on PubMedQA PQA-L (1000 records):
//! - terminology normalizer vs the MeSH headings every record carries: micro recall and
//!   precision of the found concepts' preferred names, and recall on the headings whose name
//!   appears in the record's text (what a dictionary matcher can find);
//! - abbreviation disambiguator, self-supervised: abbreviations defined in the abstracts
//!   ("long form (SF)"), the definition removed, the sense predicted from context; accuracy
//!   beside the most-frequent-sense baseline (the sense most often defined for that
//!   abbreviation in the other abstracts).
//!
//! `cargo bench -p medtune --bench medical_quality [-- VOCAB_DIR]` (default `work/vocab`, made
//! by `medtune vocab build`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use medtext::abbrev::{Inventory, definitions, normalize_long_form};
use medtune::plugin::types::{Annotated, Document};
use medtune::plugin::{Grant, PluginEngine, Sandbox, builtin};

/// The semantic groups of biomedical concepts, people and care (not behavior, disciplines,
/// society, technology, humanities, information science, publication types or places).
const BIOMEDICAL: &str = "disease,chemical,anatomy,organism,procedure,phenomenon,group,healthcare";

struct Rec {
    id: String,
    text: String,
    meshes: Vec<String>,
}

/// Whether `needle` occurs in `text` as whole words (not "male" inside "female").
fn contains_words(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        let before = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = text[i + needle.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        before && after
    })
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let vocab = std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|a| repo.join(a)).unwrap_or_else(|| repo.join("work/vocab"));
    assert!(
        vocab.join("concepts.tsv").is_file(),
        "no vocabulary at {}: run `medtune vocab build --out {}`",
        vocab.display(),
        vocab.display()
    );
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(repo.join("examples/data/pubmedqa/ori_pqal.json")).expect("PQA-L")).expect("JSON");
    let recs: Vec<Rec> = data
        .iter()
        .map(|(id, v)| {
            let contexts: Vec<&str> = v["CONTEXTS"].as_array().expect("CONTEXTS").iter().filter_map(|c| c.as_str()).collect();
            Rec {
                id: id.clone(),
                text: format!("{}\n\n{}", v["QUESTION"].as_str().expect("QUESTION"), contexts.join("\n\n")),
                meshes: v["MESHES"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let engine = PluginEngine::new(None).expect("engine");
    let sandbox = Sandbox { grants: vec![Grant { host: vocab.clone(), guest: "/vocab".into() }], ..Sandbox::default() };
    let load = |name: &str, settings: Vec<(String, String)>| {
        let b = builtin(name).expect("built-in plugin");
        engine.load(b.wasm, &format!("builtin:{name}"), None, Sandbox { settings, ..sandbox.clone() }).expect("load")
    };

    // --- normalizer vs MeSH headings, with every concept and with the biomedical groups only
    let docs: Vec<Document> =
        recs.iter().map(|r| Document { id: r.id.clone(), text: r.text.clone(), fields: vec![], metadata: vec![] }).collect();
    let mut n_gold = 0;
    let mut rows = Vec::new();
    for (label, types) in [("every concept", ""), ("`types` = the biomedical groups", BIOMEDICAL)] {
        let settings = if types.is_empty() { vec![] } else { vec![("types".to_owned(), types.to_owned())] };
        let mut normalizer = load("terminology-normalizer", settings);
        let found = normalizer.normalize(&docs).expect("normalize");
        let (mut tp, mut n_pred, mut visible, mut visible_tp) = (0usize, 0usize, 0usize, 0usize);
        n_gold = 0;
        for (r, out) in recs.iter().zip(found) {
            let pred: BTreeSet<String> = out.expect("record").iter().map(|m| m.concept.preferred_name.clone()).collect();
            let gold: BTreeSet<String> = r.meshes.iter().cloned().collect();
            tp += gold.intersection(&pred).count();
            n_gold += gold.len();
            n_pred += pred.len();
            let lower = r.text.to_lowercase();
            for g in gold.iter().filter(|g| contains_words(&lower, &g.to_lowercase())) {
                visible += 1;
                visible_tp += usize::from(pred.contains(g));
            }
        }
        rows.push(format!(
            "| {label} | {:.3} | {:.3} | {:.3} ({visible}) | {:.1} |",
            tp as f64 / n_gold as f64,
            tp as f64 / n_pred as f64,
            visible_tp as f64 / visible as f64,
            n_pred as f64 / recs.len() as f64
        ));
    }
    println!("## Terminology normalizer vs MeSH headings ({} records, {n_gold} headings)\n", recs.len());
    println!(
        "| concepts | recall (all headings) | precision (found concepts that are headings) | recall on headings written as whole words | concepts per record |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!();

    // --- abbreviation disambiguation, self-supervised
    let inventory =
        Inventory::parse(&std::fs::read_to_string(vocab.join("abbreviations.tsv")).expect("abbreviations.tsv")).expect("inventory");
    let mut supplemented = inventory.clone();
    supplemented.add_supplement(include_str!("../../plugins/abbreviation-disambiguator/senses.tsv")).expect("senses.tsv");
    // every definition in the corpus: (record, short, long)
    let defs: Vec<(usize, String, String)> = recs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let mut seen = BTreeSet::new();
            definitions(&r.text).into_iter().filter(move |d| seen.insert(d.short.clone())).map(move |d| (i, d.short, d.long))
        })
        .collect();
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (_, s, l) in &defs {
        *counts.entry((s.clone(), normalize_long_form(l))).or_default() += 1;
    }
    // cases: the gold sense is one of the inventory's senses, and there are several
    let mut cases = Vec::new();
    for (i, short, long) in &defs {
        let Some(senses) = supplemented.senses(short) else { continue };
        let gold = normalize_long_form(long);
        if senses.len() < 2 || !senses.iter().any(|s| normalize_long_form(&s.long) == gold) {
            continue;
        }
        // the definition removed: "long form (SF)" -> "SF", everywhere in the record
        let text = recs[*i].text.replace(&format!("{long} ({short})"), short);
        if !text.contains(short.as_str()) || text.contains(&format!("({short})")) {
            continue;
        }
        // most frequent sense among the other records' definitions, else the inventory's first
        let mfs = senses
            .iter()
            .map(|s| normalize_long_form(&s.long))
            .max_by_key(|s| counts.get(&(short.clone(), s.clone())).copied().unwrap_or(0) - usize::from(*s == gold))
            .unwrap_or_default();
        cases.push((recs[*i].id.clone(), short.clone(), gold, mfs, text));
    }
    let mut disambiguator = load("abbreviation-disambiguator", vec![("threshold".into(), "0".into())]);
    let batch: Vec<Annotated> = cases
        .iter()
        .map(|(id, _, _, _, text)| Annotated {
            document: Document { id: id.clone(), text: text.clone(), fields: vec![], metadata: vec![] },
            mentions: vec![],
            expansions: vec![],
        })
        .collect();
    let out = disambiguator.disambiguate(&batch).expect("disambiguate");
    let (mut right, mut mfs_right, mut first_right) = (0, 0, 0);
    for ((_, short, gold, mfs, _), res) in cases.iter().zip(out) {
        let pred = res.expect("record").into_iter().find(|x| &x.abbreviation == short).map(|x| normalize_long_form(&x.long_form));
        right += usize::from(pred.as_deref() == Some(gold.as_str()));
        mfs_right += usize::from(mfs == gold);
        let first = supplemented.senses(short).map(|s| normalize_long_form(&s[0].long)).unwrap_or_default();
        first_right += usize::from(&first == gold);
    }
    let n = cases.len().max(1) as f64;
    println!("## Abbreviation disambiguation, self-supervised on PQA-L\n");
    println!("{} definitions found; {} of ambiguous abbreviations whose defined sense is in the inventory\n", defs.len(), cases.len());
    println!("| method | accuracy |\n|---|---:|");
    println!("| abbreviation-disambiguator (context) | {:.3} |", right as f64 / n);
    println!("| most-frequent-sense baseline (leave-one-out) | {:.3} |", mfs_right as f64 / n);
    println!("| first inventory sense | {:.3} |", first_right as f64 / n);
}
