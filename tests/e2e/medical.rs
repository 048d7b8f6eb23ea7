//! The default medical plugins through the real binary: abbreviation senses by context and
//! by definition, and augmenters that are repeatable for a seed whatever the batch size.

use crate::harness::{Env, read_jsonl, repo};

#[test]
fn mi_is_expanded_by_its_context_or_its_definition() {
    let env = Env::new();
    let input = env.write(
        "mi.jsonl",
        [
            r#"{"id": "heart", "question": "Is troponin raised after MI?", "context": "Coronary care patients with chest pain."}"#,
            r#"{"id": "brain", "question": "Are cortical MI common in dementia?", "context": "Brain autopsy of cerebral vessels."}"#,
            r#"{"id": "defined", "question": "Does mitral insufficiency (MI) progress?", "context": "MI was graded."}"#,
            r#"{"id": "rate", "question": "Is HR at rest linked to outcome?", "context": "HR was 80 beats per minute."}"#,
        ]
        .join("\n"),
    );
    let vocab = format!("/vocab={}", repo().join("tests/fixtures/vocab").display());
    env.run(&["plugin", "test", "builtin:abbreviation-disambiguator", "--grant", &vocab, "--input", input.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("MI [25..27] -> myocardial infarction")
        .stdout_has("MI [13..15] -> microinfarction")
        .stdout_has("MI [27..29] -> mitral insufficiency (0.99)")
        .stdout_has("HR [3..5] -> heart rate");
}

fn augment_config(env: &Env, batch_size: usize, seed: u64) -> std::path::PathBuf {
    let vocab = repo().join("tests/fixtures/vocab").display().to_string();
    let input = repo().join("examples/data/pubmedqa/sample.jsonl").display().to_string();
    env.write(
        &format!("aug-{batch_size}-{seed}.toml"),
        format!(
            r#"name = "aug"
work_dir = "{work}"
[data]
input = "{input}"
batch_size = {batch_size}
seed = {seed}
[[plugins.chain]]
name = "terminology-normalizer"
kind = "normalizer"
grants = {{ "/vocab" = "{vocab}" }}
[[plugins.chain]]
name = "synonym-swap"
kind = "augmenter"
grants = {{ "/vocab" = "{vocab}" }}
settings = {{ rate = 1.0 }}
[[plugins.chain]]
name = "entity-mask"
kind = "augmenter"
settings = {{ rate = 0.5 }}
[[plugins.chain]]
name = "label-balancer"
kind = "augmenter"
"#,
            work = env.path(&format!("work-{batch_size}-{seed}")).display()
        ),
    )
}

#[test]
fn augmenters_are_repeatable_for_a_seed_whatever_the_batch_size() {
    let env = Env::new();
    let run = |batch: usize, seed: u64| {
        let config = augment_config(&env, batch, seed);
        env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
        std::fs::read_to_string(env.path(&format!("work-{batch}-{seed}/data/augmented/train.jsonl"))).expect("augmented")
    };
    let a = run(1, 7);
    let b = run(64, 7);
    let c = run(64, 8);
    assert_eq!(a, b, "same seed, other batch size: same records");
    assert_ne!(b, c, "another seed: other records");
    let rows = read_jsonl(&env.path("work-64-7/data/augmented/train.jsonl"));
    let derived: Vec<&serde_json::Value> = rows.iter().filter(|r| r.get("augmentation").is_some()).collect();
    assert!(!derived.is_empty());
    for d in &derived {
        let aug = &d["augmentation"];
        let source = aug["source"].as_str().expect("source");
        assert!(rows.iter().any(|r| r["id"] == source), "source {source} is in the file");
        assert!(aug["plugin"].as_str().is_some_and(|p| p.contains('@') && p.contains('#')), "{aug}");
        assert!(aug["seed"].is_u64() && aug["settings"].is_array() && aug["note"].is_string(), "{aug}");
    }
    let masked = derived.iter().filter(|d| d["text"].as_str().is_some_and(|t| t.contains("[MESH]"))).count();
    let swapped = derived.iter().filter(|d| d["augmentation"]["note"].as_str().is_some_and(|n| n.starts_with("synonym swap"))).count();
    assert!(masked > 0 && swapped > 0, "masked {masked}, swapped {swapped}");
}
