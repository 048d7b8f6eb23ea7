//! `medtune run`: the whole pipeline of a config, stages skipped when unchanged, an
//! interrupted run resumed, failures that stop with a clear message and leave earlier stages'
//! outputs intact, `runs list` / `runs compare`.

use crate::harness::{Env, read_jsonl, repo};

#[test]
fn the_default_job_runs_the_whole_pipeline_and_skips_unchanged_stages() {
    let env = Env::new();
    let text = std::fs::read_to_string(repo().join("configs/pubmedqa-smollm2.toml")).expect("default config");
    let configs = repo().join("configs");
    // the default config, with its outputs in the temp folder
    let text =
        text.replace("\"../work", &format!("\"{}", env.path("work").display())).replace("\"../", &format!("\"{}/../", configs.display()));
    let config = env.write("default.toml", text);
    let run = env.run(&["run", config.to_str().expect("utf-8")]);
    run.expect_code(0)
        .stdout_has("data    ran")
        .stdout_has("train   ran")
        .stdout_has("eval    ran")
        .stdout_has("export  ran")
        .stdout_has("train: 6/6 steps");
    run.stdout_has("checked on ONNX Runtime");
    run.stdout_has("eval on test (40 questions")
        .stdout_has("data stage: 1000 records")
        .stdout_has("test: 500 records")
        .stdout_has("dev: 50 records")
        .stdout_has("train: 450 records");
    run.stdout_has("vocabulary").stdout_has("30532 concepts");
    let test = read_jsonl(&env.path("work/data/processed/test.jsonl"));
    assert_eq!(test.len(), 500);
    let expanded = test.iter().filter(|r| r["expansions"].as_array().is_some_and(|x| !x.is_empty())).count();
    assert!(expanded > 200, "only {expanded} of 500 records have abbreviation expansions");
    // dev is fold 0 of the official split (tests/fixtures/pubmedqa_folds.json, made by the official code)
    let folds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/pubmedqa_folds.json")).expect("folds")).expect("json");
    let dev: Vec<serde_json::Value> = read_jsonl(&env.path("work/data/processed/dev.jsonl")).iter().map(|r| r["id"].clone()).collect();
    let mut want: Vec<serde_json::Value> = folds["folds"][0].as_array().expect("fold 0").clone();
    let mut got = dev.clone();
    want.sort_by_key(|v| v.to_string());
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    let augmented = read_jsonl(&env.path("work/data/augmented/train.jsonl"));
    assert!(augmented.len() > 450, "{} training records after augmentation", augmented.len());
    let with_mentions = test.iter().filter(|r| r["mentions"].as_array().is_some_and(|m| !m.is_empty())).count();
    assert!(with_mentions > 250, "only {with_mentions} of 500 records have mentions");
    for r in &test {
        let stamp = r["provenance"]["plugins"][0].as_str().expect("provenance names the plugin");
        assert!(stamp.starts_with("terminology-normalizer@0.1.0#"), "{stamp}");
        let stamp = r["provenance"]["plugins"][1].as_str().expect("and the disambiguator");
        assert!(stamp.starts_with("abbreviation-disambiguator@0.1.0#"), "{stamp}");
        assert_eq!(r["failures"].as_array().map(Vec::len), Some(0));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("work/data/processed/manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["plugins"][0]["id"], "terminology-normalizer@0.1.0");
    assert_eq!(manifest["plugins"][0]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(manifest["inputs"][0]["sha256"].as_str().map(str::len), Some(64));

    // the run folder: adapter, metrics, plot, manifest, evaluation through the metric plugin, report
    let run_dir = env.path("work/runs/pubmedqa-smollm2");
    for f in [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "metrics.jsonl",
        "loss.svg",
        "manifest.json",
        "eval/scores.json",
        "eval/predictions.jsonl",
        "report.html",
        "stages.json",
        "onnx/model.onnx",
        "onnx/config.json",
        "onnx/tokenizer.json",
    ] {
        assert!(run_dir.join(f).is_file(), "the run lacks {f}");
    }
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("eval/scores.json")).expect("scores")).expect("json");
    assert_eq!(scores["questions"], 40);
    assert!(scores["scores"]["rare_concept_count"].as_f64().is_some_and(|n| n > 0.0), "no rare-concept question tagged: {scores}");
    assert_eq!(scores["baseline"]["accuracy"], 0.548);
    crate::report::renders_in_a_browser(&run_dir.join("report.html"));

    // nothing changed: every stage is skipped
    let again = env.run(&["run", config.to_str().expect("utf-8")]);
    again
        .expect_code(0)
        .stdout_has("data    unchanged, skipped")
        .stdout_has("train   unchanged, skipped")
        .stdout_has("eval    unchanged, skipped")
        .stdout_has("export  unchanged, skipped");
    // a changed training setting re-runs training and evaluation, not the data stage
    let changed = std::fs::read_to_string(&config).expect("config").replace("max_steps = 6", "max_steps = 2");
    std::fs::write(&config, changed).expect("write");
    let third = env.run(&["run", config.to_str().expect("utf-8")]);
    third
        .expect_code(0)
        .stdout_has("data    unchanged, skipped")
        .stdout_has("train   ran")
        .stdout_has("train: 2/2 steps")
        .stdout_has("eval    ran")
        .stdout_has("export  ran");

    // the export answers on ONNX Runtime, from the command line and from the server
    let onnx = run_dir.join("onnx");
    let q = ["ask", "Is aspirin an antiplatelet drug?", "--context", "Aspirin inhibits platelet aggregation.", "--max-tokens", "4"];
    let by_ort = env.run(&[&q[..], &["--engine", "ort", "--onnx", onnx.to_str().expect("utf-8")]].concat());
    by_ort.expect_code(0).stdout_has("answer: ");
    let merged = env.path("merged");
    env.run(&["merge", "-c", config.to_str().expect("utf-8"), "--out", merged.to_str().expect("utf-8")]).expect_code(0);
    let by_candle = env.run(&[&q[..], &["--model", merged.to_str().expect("utf-8")]].concat());
    let answer = |out: &str| out.lines().find(|l| l.starts_with("answer: ")).map(str::to_owned).unwrap_or_default();
    assert_eq!(answer(&by_ort.stdout), answer(&by_candle.stdout), "ORT and candle answer differently");
}

/// An interrupted training resumes under `run`; a broken config, a missing model and a
/// failing plugin each stop with a clear message and leave the earlier stages' outputs as
/// they were; `runs list` and `runs compare` read the run folders.
#[test]
fn interruptions_resume_and_failures_leave_earlier_outputs_intact() {
    let env = Env::new();
    let config = crate::train::config(&env, "tiny", "");
    let arg = config.to_str().expect("utf-8");
    env.run(&["data", "-c", arg]).expect_code(0);
    env.run(&["train", "-c", arg, "--stop-after", "2"]).stdout_has("stopped at step 2");
    // `run` has no record of that data stage, so it runs it (same records); the training
    // checkpoint fits the same config and data, so training resumes
    let run = env.run(&["run", arg]);
    run.expect_code(2).stdout_has("train: 4/4 steps (resumed at 2)").stdout_has("eval    ran");
    let adapter = env.path("work/runs/tiny/adapter/adapter_model.safetensors");
    let before = std::fs::read(&adapter).expect("adapter");
    let processed = std::fs::read(env.path("work/data/processed/train.jsonl")).expect("data");
    let intact = || {
        assert!(std::fs::read(&adapter).expect("adapter") == before, "the adapter changed");
        assert!(std::fs::read(env.path("work/data/processed/train.jsonl")).expect("data") == processed, "the data changed");
    };
    let text = std::fs::read_to_string(&config).expect("config");

    std::fs::write(&config, text.replace("[eval]", "[eval]\nthreshold = 0.5")).expect("write");
    env.run(&["run", arg]).stderr_has("unknown field `threshold`");
    intact();

    std::fs::write(&config, format!("{text}\n[model]\npath = \"nowhere.gguf\"\n")).expect("write");
    env.run(&["run", arg]).stderr_has("model.path").stderr_has("nowhere.gguf does not exist");
    intact();

    std::fs::write(&config, text.replace("labels = \"yes,no,maybe\"", "labels = \"\"")).expect("write");
    let failed = env.run(&["run", arg]);
    assert_ne!(failed.code, Some(0));
    failed.stderr_has("classification-metrics").stderr_has("labels is empty");
    intact();

    std::fs::write(&config, text.replace("kind = \"metric\"", "kind = \"metric\"\nversion = \"9.9.9\"")).expect("write");
    env.run(&["run", arg]).stderr_has("version 0.1.0 is outside the config's requirement `^9.9.9` for classification-metrics");
    intact();

    std::fs::write(&config, &text).expect("write");
    env.run(&["run", arg]).stdout_has("train   unchanged, skipped");
    let work = env.path("work");
    env.run(&["runs", "list", "--work", work.to_str().expect("utf-8")]).expect_code(0).stdout_has("tiny");
    let copy = env.path("copy");
    std::fs::create_dir_all(copy.join("eval")).expect("mkdir");
    for f in ["manifest.json", "metrics.jsonl", "eval/scores.json"] {
        std::fs::copy(env.path(&format!("work/runs/tiny/{f}")), copy.join(f)).expect("copy");
    }
    let manifest = std::fs::read_to_string(copy.join("manifest.json")).expect("manifest").replace("seed = 7", "seed = 8");
    std::fs::write(copy.join("manifest.json"), manifest).expect("write");
    env.run(&["runs", "compare", "tiny", copy.to_str().expect("utf-8"), "--work", work.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("accuracy")
        .stdout_has("config differences (1)")
        .stdout_has("train.seed: 7 -> 8");
}
