//! `medtune plugin new|build|test|list`: the plugin author's loop, on real components.

use crate::harness::{Env, guest, jsonl};

#[test]
fn scaffolded_plugins_of_every_kind_build_and_run() {
    let env = Env::new();
    for (kind, shows) in
        [("normalizer", "\"cell death\""), ("disambiguator", "expansion(s)"), ("augmenter", "new record(s)"), ("metric", "accuracy = ")]
    {
        let name = format!("my-{kind}");
        env.run(&["plugin", "new", &name, "--kind", kind]).expect_code(0).stdout_has("created");
        // the crate carries the SDK: it builds wherever it is moved
        let moved = env.path(&format!("elsewhere/{name}"));
        std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
        std::fs::rename(env.path(&name), &moved).expect("move the crate");
        let manifest = std::fs::read_to_string(moved.join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            manifest.contains("path = \"vendor/plugins/sdk\"") && !manifest.contains(&crate::harness::repo().display().to_string()),
            "{manifest}"
        );
        env.run(&["plugin", "test", moved.to_str().expect("utf-8")])
            .expect_code(0)
            .stdout_has(&format!("{name}@0.1.0 ({kind} plugin"))
            .stdout_has("batch 1: 8 record(s)")
            .stdout_has(shows);
    }
}

#[test]
fn plugin_new_refuses_a_bad_name_or_an_existing_folder() {
    let env = Env::new();
    env.run(&["plugin", "new", "Bad_Name", "--kind", "metric"]).expect_code(1).stderr_has("use lowercase letters");
    std::fs::create_dir(env.path("taken")).expect("mkdir");
    env.run(&["plugin", "new", "taken", "--kind", "metric"]).expect_code(1).stderr_has("already exists");
}

#[test]
fn plugin_list_shows_versions_and_hashes() {
    let env = Env::new();
    std::fs::create_dir(env.path("plugins")).expect("mkdir");
    std::fs::copy(guest("tagger_v1"), env.path("plugins/tagger.wasm")).expect("copy");
    let run = env.run(&["plugin", "list", "--dir", "plugins"]);
    run.expect_code(0);
    let builtin = run.stdout.lines().find(|l| l.starts_with("terminology-normalizer")).expect("builtin listed");
    assert!(builtin.contains("0.1.0") && builtin.contains("normalizer") && builtin.contains("builtin:"), "{builtin}");
    let tagger = run.stdout.lines().find(|l| l.starts_with("tagger")).expect("folder plugin listed");
    assert!(tagger.contains("1.0.0") && tagger.contains("plugins/tagger.wasm"), "{tagger}");
}

#[test]
fn settings_and_grants_are_checked_against_the_manifest_by_name() {
    let env = Env::new();
    let tagger = guest("tagger_v1");
    env.run(&["plugin", "test", tagger.to_str().expect("utf-8"), "--set", "colour=blue"])
        .expect_code(1)
        .stderr_has("tagger_v1.wasm has no setting `colour` (it declares: prefix, prefix_file)");
    env.run(&["plugin", "test", "builtin:entity-mask", "--set", "rate=lots"])
        .expect_code(1)
        .stderr_has("plugin builtin:entity-mask setting `rate` = \"lots\" is not a float");
    // the config entry is named with the grant it lacks, before the plugin runs
    let input = env.write("in.jsonl", jsonl(&[("q1", "first")]));
    let config = env.config(&input, "[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(1).stderr_has(&format!(
        "config {}, plugins.chain[0] (terminology-normalizer): plugin builtin:terminology-normalizer needs the read-only folder /vocab, which is not granted",
        config.display()
    ));
    // and a folder it never declared
    let granted = env.config(&input, "[[plugins.chain]]\nname = \"entity-mask\"\nkind = \"augmenter\"\ngrants = { \"/data\" = \".\" }\n");
    env.run(&["data", "--config", granted.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("is granted /data")
        .stderr_has("which it does not declare (it declares: none)");
    // `plugin list` shows what each plugin declares
    env.run(&["plugin", "list"])
        .expect_code(0)
        .stdout_has("    grants: /vocab (read-only)")
        .stdout_has("    setting rate: float = 0.15 — chance that a mention is masked");
}

#[test]
fn the_walkthrough_plugin_reads_its_granted_table() {
    let env = Env::new();
    let example = crate::harness::repo().join("examples/custom-plugin");
    let (dir, vocab, input) = (example.display().to_string(), example.join("vocab"), example.join("sample.jsonl"));
    env.run(&["plugin", "test", &dir, "--grant", &format!("/vocab={}", vocab.display()), "--input", input.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("drug-class-normalizer@0.1.0 (normalizer plugin")
        .stdout_has("\"Metformin\" [80..89] -> A10BA Biguanides")
        .stdout_has("\"ketamine\" [3..11] -> N01AX");
    // without the grant it has no way to read its table: its manifest says it needs it
    env.run(&["plugin", "test", &dir]).expect_code(1).stderr_has("needs the read-only folder /vocab, which is not granted");
}

/// The component model's promise: a plugin in another language, built from the registries
/// (componentize-py from PyPI, by the example's own build script), runs like a Rust one.
#[test]
fn a_plugin_written_in_python_builds_and_runs_like_a_rust_one() {
    let env = Env::new();
    let repo = crate::harness::repo();
    let example = repo.join("examples/python-normalizer");
    for f in ["app.py", "build.sh", "sample.jsonl"] {
        std::fs::copy(example.join(f), env.path(f)).expect("copy the example");
    }
    let built = std::process::Command::new("bash")
        .arg("build.sh")
        .current_dir(env.path(""))
        .env("WIT", repo.join("wit"))
        .env("VENV", repo.join("target/componentize-py"))
        .status()
        .expect("run build.sh");
    assert!(built.success(), "build.sh: {built}");
    env.run(&["plugin", "test", "python-normalizer.wasm", "--input", "sample.jsonl"])
        .expect_code(0)
        .stdout_has("python-drug-normalizer@0.1.0 (normalizer plugin, contract 0.2.0")
        .stdout_has("\"metformin\" [5..14] -> D008687 Metformin (1.00)")
        .stdout_has("\"INSULIN GLARGINE\" [81..97] -> D000069036 Insulin Glargine (0.90)");
    // no manifest (componentize-py writes none): the plugin's own configure refuses the key
    env.run(&["plugin", "test", "python-normalizer.wasm", "--set", "min_len=4"])
        .expect_code(1)
        .stderr_has("configure refused its settings: config: unknown setting 'min_len'");
    // in a chain, from a plugin folder, through the data stage
    std::fs::create_dir(env.path("plugins")).expect("mkdir");
    std::fs::rename(env.path("python-normalizer.wasm"), env.path("plugins/python-normalizer.wasm")).expect("move");
    let config = env.config(
        &env.path("sample.jsonl"),
        "[plugins]\ndirs = [\"plugins\"]\n\n[[plugins.chain]]\nname = \"python-drug-normalizer\"\nkind = \"normalizer\"\n",
    );
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let records: Vec<serde_json::Value> = ["train", "dev", "test"]
        .iter()
        .map(|s| env.path(&format!("work/data/processed/{s}.jsonl")))
        .filter(|p| p.exists())
        .flat_map(|p| crate::harness::read_jsonl(&p))
        .collect();
    let ids: Vec<&str> =
        records.iter().flat_map(|r| r["mentions"].as_array().into_iter().flatten()).filter_map(|m| m["concept"]["id"].as_str()).collect();
    assert!(ids.contains(&"D014859") && ids.contains(&"D008687"), "{ids:?}");
}

/// An augmenter is tried on records the config's chain annotated, and its records are shown
/// as a word diff against their source.
#[test]
fn an_augmenter_is_tried_on_records_the_chain_annotated() {
    let env = Env::new();
    let vocab = crate::harness::repo().join("tests/fixtures/vocab");
    let input = env.write("in.jsonl", jsonl(&[("q1", "Does apoptosis damage mitochondria in old leaves?")]));
    let config = env.config(
        &input,
        &format!(
            "[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\ngrants = {{ \"/vocab\" = {:?} }}\n",
            vocab.display().to_string()
        ),
    );
    let (config, input) = (config.to_str().expect("utf-8"), input.to_str().expect("utf-8"));
    // without the chain the augmenter has no mentions to mask
    env.run(&["plugin", "test", "builtin:entity-mask", "--set", "rate=1.0", "--input", input])
        .expect_code(0)
        .stdout_has("q1: 0 new record(s)");
    let run = env.run(&["plugin", "test", "builtin:entity-mask", "--set", "rate=1.0", "--input", input, "--config", config]);
    run.expect_code(0).stdout_has("annotated by terminology-normalizer@0.1.0: 3 mention(s)").stdout_has("q1: 1 new record(s)");
    run.stdout_has("entity masking: 3 mention(s) masked")
        .stdout_has("Does [-apoptosis-]{+[MESH]+} damage [-mitochondria-]{+[MESH]+} in old");
}
