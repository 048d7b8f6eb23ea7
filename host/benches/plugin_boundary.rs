//! Boundary cost of the plugin host: documents/s through the terminology normalizer as a
//! WebAssembly component (time limit on) beside the same matcher called natively, at batch
//! sizes 1, 64 and 1024 over the PubMedQA PQA-L contexts; plus load-from-cache,
//! restart-after-trap and hot-swap (file landing to swapped) times.
//!
//! `cargo bench -p medtune --bench plugin_boundary [-- VOCAB_DIR]` (default: the test
//! fixture vocabulary; pass the folder `medtune vocab build` wrote for MeSH).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medtext::{Matcher, Options, fold_salts, link_defined_abbreviations, parse_concepts};
use medtune::plugin::types::PluginKind;
use medtune::plugin::types::{Concept, Document, Mention, Span};
use medtune::plugin::{Grant, PluginEngine, PluginSet, Sandbox, SlotSpec, builtin};

/// Rounds per figure. Native and plugin alternate within a round, so a round's ratio is taken
/// under the same machine conditions; the ratio reported is the median of the rounds' ratios,
/// the docs/s the best round of each side (this 2-core VM's speed drifts by tens of percent).
const ROUNDS: usize = 15;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn docs(repo: &Path) -> Vec<Document> {
    let text = std::fs::read_to_string(repo.join("examples/data/pubmedqa/ori_pqal.json")).expect("PQA-L");
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).expect("PQA-L JSON");
    map.into_iter()
        .map(|(id, v)| {
            let contexts: Vec<&str> = v["CONTEXTS"].as_array().expect("CONTEXTS").iter().filter_map(|c| c.as_str()).collect();
            Document { id, text: contexts.join("\n\n"), fields: Vec::new(), metadata: Vec::new() }
        })
        .collect()
}

/// The plugin's normalize body, natively: match, fold the salts of the concepts `chemical`
/// marks, link the abbreviations the document defines, then build the contract's mentions.
fn native(matcher: &Matcher, chemical: &[bool], doc: &Document) -> Vec<Mention> {
    let mut found = matcher.find(&doc.text);
    fold_salts(&doc.text, &mut found, |c| chemical[c as usize]);
    let mut fields = [(doc.text.as_str(), found)];
    link_defined_abbreviations(&mut fields);
    let [(_, found)] = fields;
    found
        .into_iter()
        .map(|m| {
            let (id, name) = matcher.concept(m.concept);
            Mention {
                span: Span { start: m.char_start, end: m.char_end },
                concept: Concept { id: id.to_owned(), preferred_name: name.to_owned() },
                score: m.score,
            }
        })
        .collect()
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let vocab_dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| repo.join(a)) // relative to the repository root (an absolute path stays)
        .unwrap_or_else(|| repo.join("tests/fixtures/vocab"));
    let docs = docs(&repo);
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let vocab = std::fs::read_to_string(vocab_dir.join("concepts.tsv")).expect("vocabulary concepts.tsv");
    let rows = parse_concepts(&vocab).expect("valid vocabulary");
    println!("{} documents ({:.1} MB), vocabulary {} ({} concepts)", docs.len(), bytes as f64 / 1e6, vocab_dir.display(), rows.len());

    let matcher = Matcher::new(&rows, Options::default());
    let chemical: Vec<bool> = rows.iter().map(|r| r.groups.iter().any(|g| g == "chemical")).collect();
    let cache = tempfile::tempdir().expect("temp dir");
    let engine = PluginEngine::new(Some(cache.path().to_owned())).expect("engine");
    let normalizer = builtin("terminology-normalizer").expect("built-in normalizer");
    // `BOUNDARY_WASM=FILE` measures another build of the normalizer (e.g. other guest flags).
    let other = std::env::var_os("BOUNDARY_WASM").map(|p| std::fs::read(p).expect("BOUNDARY_WASM file"));
    let wasm: &[u8] = other.as_deref().unwrap_or(normalizer.wasm);
    let sandbox = Sandbox {
        timeout: Duration::from_secs(10),
        grants: vec![Grant { host: vocab_dir.clone(), guest: "/vocab".into() }],
        // no spare for the throughput and load figures: its background configure would
        // compete for the cores (the restart figures below measure with and without one)
        spare: false,
        ..Sandbox::default()
    };
    let mut plugin = engine.load(wasm, "builtin:terminology-normalizer", None, sandbox.clone()).expect("load");

    // same answers both ways
    let want: Vec<Vec<Mention>> = docs.iter().map(|d| native(&matcher, &chemical, d)).collect();
    let got: Vec<Vec<Mention>> = plugin.normalize(&docs).expect("call").into_iter().map(|r| r.expect("record")).collect();
    assert!(want == got, "plugin and native results differ");
    let mentions: usize = want.iter().map(Vec::len).sum();
    println!("{mentions} mentions found (identical natively and in the plugin)\n");

    println!("| batch | native docs/s | plugin docs/s | plugin / native time |");
    println!("|---:|---:|---:|---:|");
    for batch in [1usize, 64, 1024] {
        let mut nat = Vec::new();
        let mut wasm = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for chunk in docs.chunks(batch) {
                let out: Vec<Vec<Mention>> = chunk.iter().map(|d| native(&matcher, &chemical, d)).collect();
                std::hint::black_box(out);
            }
            nat.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for chunk in docs.chunks(batch) {
                std::hint::black_box(plugin.normalize(chunk).expect("call"));
            }
            wasm.push(t.elapsed().as_secs_f64());
        }
        let ratio = median(wasm.iter().zip(&nat).map(|(w, n)| w / n).collect());
        let best = |xs: &[f64]| xs.iter().copied().fold(f64::INFINITY, f64::min);
        println!("| {batch} | {:.0} | {:.0} | {ratio:.2}x |", docs.len() as f64 / best(&nat), docs.len() as f64 / best(&wasm));
    }

    // Loading from the compiled cache: a fresh engine (empty in-memory map) over the same folder.
    let mut cached = Vec::new();
    let mut configured = Vec::new();
    for _ in 0..ROUNDS {
        let fresh = PluginEngine::new(Some(cache.path().to_owned())).expect("engine");
        let t = Instant::now();
        fresh.inspect(wasm, "builtin:terminology-normalizer").expect("inspect");
        cached.push(t.elapsed().as_secs_f64() * 1e3);
        let fresh = PluginEngine::new(Some(cache.path().to_owned())).expect("engine");
        let t = Instant::now();
        fresh.load(wasm, "builtin:terminology-normalizer", None, sandbox.clone()).expect("load");
        configured.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("\nload from the compiled cache (deserialize + contract check + instantiate + describe): {:.2} ms", median(cached));
    println!("load from the compiled cache, configured (+ the plugin reading its vocabulary): {:.2} ms", median(configured));

    // Restart after a trap: a 1 ms limit makes a big batch time out, then the next call needs
    // a new instance. With a spare (the default) it was configured ahead on its own thread;
    // failures here are 300 ms apart, time enough to make the next spare. Without one, the
    // call waits while an instance is made and configured.
    for spare in [true, false] {
        let mut plugin = engine.load(wasm, "builtin:terminology-normalizer", None, Sandbox { spare, ..sandbox.clone() }).expect("load");
        let mut waited = Vec::new();
        for _ in 0..ROUNDS {
            std::thread::sleep(Duration::from_millis(300));
            plugin.set_timeout(Duration::from_millis(1));
            let err = plugin.normalize(&docs).expect_err("a 1 ms limit interrupts 1000 documents");
            assert!(err.to_string().contains("timed out"), "{err}");
            plugin.set_timeout(Duration::from_secs(10));
            plugin.warm_up().expect("restart");
            let r = plugin.last_restart();
            assert_eq!(r.from_spare, spare);
            waited.push(r.waited.as_secs_f64() * 1e3);
        }
        let r = plugin.last_restart();
        println!(
            "running again after a trap, {}: {:.3} ms (the instance took: instantiate {:.3} ms + configure {:.2} ms{})",
            if spare { "spare kept (default)" } else { "no spare" },
            median(waited),
            r.instantiate.as_secs_f64() * 1e3,
            r.configure.as_secs_f64() * 1e3,
            if spare { ", made ahead" } else { "" },
        );
    }

    swap_latency(wasm, &sandbox);
}

/// A hot swap, timed from the new file's rename into the watched folder to the chain running
/// it: notice, debounce, compile (a new build: its hash is new), contract check, instantiate,
/// configure. Each round's file is the normalizer with one more custom section (a new build).
fn swap_latency(wasm: &[u8], sandbox: &Sandbox) {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::write(plugins.join("terminology-normalizer.wasm"), wasm).expect("write");
    let engine = PluginEngine::new(Some(dir.path().join("cache"))).expect("engine");
    let spec = SlotSpec {
        entry: "bench".into(),
        name: "terminology-normalizer".into(),
        kind: PluginKind::Normalizer,
        path: None,
        sandbox: sandbox.clone(),
        version: None,
    };
    let mut set = PluginSet::load(engine, vec![spec], vec![plugins.clone()]).expect("load");
    set.watch(None).expect("watch");
    let mut took = Vec::new();
    for round in 0..5u8 {
        // a custom section (id 0): size, name length, name, payload
        let mut build = wasm.to_vec();
        build.extend_from_slice(&[0, 4, 2, b'm', b't', round]);
        let staged = dir.path().join("incoming.wasm");
        std::fs::write(&staged, &build).expect("write");
        let t = Instant::now();
        std::fs::rename(&staged, plugins.join("terminology-normalizer.wasm")).expect("rename");
        loop {
            let log = set.apply_swaps();
            if log.iter().any(|l| l.starts_with("swapped")) {
                break;
            }
            assert!(log.is_empty(), "{log:?}");
            assert!(t.elapsed() < Duration::from_secs(30), "no swap within 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "hot swap, file landing to the chain running it (new build: compiled): median {:.0} ms, max {:.0} ms",
        median(took.clone()),
        took.iter().cloned().fold(0.0, f64::max)
    );
}
