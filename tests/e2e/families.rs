//! Every stage on each model family besides SmolLM2's LLaMA: the tiny random Llama 3.x,
//! Mistral and Qwen2 checkpoints of tests/fixtures/families (made with transformers) go
//! through `ask`, the data stage, `train` (LoRA on every linear layer), `eval`, `merge`,
//! `export` (checked on ONNX Runtime) and `serve` on both engines, each in its own chat format.

use crate::harness::{Env, read_json, read_jsonl, repo};
use crate::serve::{http, json, spawn, wait_healthy};

/// Short yes/no questions (a byte-level vocabulary makes a token of nearly every byte).
fn questions() -> String {
    let facts = [
        ("Does aspirin inhibit platelets?", "Aspirin blocks thromboxane.", "yes"),
        ("Is insulin a statin?", "Insulin is a hormone.", "no"),
        ("Does metformin lower glucose?", "Metformin lowers HbA1c.", "yes"),
        ("Is warfarin an antibiotic?", "Warfarin is an anticoagulant.", "no"),
        ("Do statins lower LDL?", "Statins cut LDL by a third.", "yes"),
        ("Is ibuprofen an opioid?", "Ibuprofen is an NSAID.", "no"),
        ("Does heparin thin blood?", "Heparin is an anticoagulant.", "yes"),
        ("Is amoxicillin antiviral?", "Amoxicillin is a penicillin.", "no"),
        ("Do beta blockers slow the heart?", "They lower the heart rate.", "yes"),
        ("Is salbutamol a steroid?", "Salbutamol is a beta agonist.", "no"),
    ];
    facts
        .iter()
        .enumerate()
        .map(|(i, (q, c, a))| serde_json::json!({"id": format!("f{i}"), "question": q, "context": c, "answer": a}).to_string() + "\n")
        .collect()
}

fn config(env: &Env, family: &str) -> std::path::PathBuf {
    let input = env.write("facts.jsonl", questions());
    let text = format!(
        r#"name = "{family}"
work_dir = {work:?}

[data]
input = {input:?}
split = "random"
dev_fraction = 0.2
test_fraction = 0.2

[model]
path = {model:?}

[train]
data = "processed"
max_steps = 2
batch_size = 2
max_len = 256
lr = 1e-2
warmup_steps = 1
loss = "choice"
seed = 3

[train.lora]
r = 2
alpha = 4
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"#,
        work = env.path("work").display().to_string(),
        input = input.display().to_string(),
        model = repo().join("tests/fixtures/families").join(family).display().to_string(),
    );
    env.write(&format!("{family}.toml"), text)
}

/// The answer probabilities of `/v1/answer` for one question.
fn served(env: &Env, args: &[&str]) -> [f64; 3] {
    let server = spawn(env, args);
    wait_healthy(&server.addr);
    let ask = r#"{"question": "Does aspirin inhibit platelets?", "context": "Aspirin blocks thromboxane."}"#;
    let (code, body) = http(&server.addr, "POST", "/v1/answer", Some(ask));
    assert_eq!(code, 200, "{body}");
    let a = json(&body);
    ["yes", "no", "maybe"].map(|k| a["probabilities"][k].as_f64().unwrap_or_else(|| panic!("no probability of {k}: {a}")))
}

fn each_stage(family: &str, chat_start: &str) {
    let env = Env::new();
    let config = config(&env, family);
    let c = config.to_str().expect("utf-8");
    let model = repo().join("tests/fixtures/families").join(family);
    let m = model.to_str().expect("utf-8");

    // ask: the family's chat format, greedy tokens until one of its end-of-turn ids
    env.run(&["ask", "Does aspirin inhibit platelets?", "--model", m, "--max-tokens", "6"]).expect_code(0).stdout_has("answer: ");

    env.run(&["data", "-c", c]).expect_code(0);
    env.run(&["train", "-c", c]).expect_code(0).stdout_has("train: 2/2 steps");
    let adapter = read_json(env.path(&format!("work/runs/{family}/adapter/adapter_config.json")));
    let mut targets: Vec<&str> = adapter["target_modules"].as_array().expect("targets").iter().filter_map(|t| t.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], "{adapter}");
    env.run(&["eval", "-c", c]).expect_code(0).stdout_has("eval on test");
    let predictions = read_jsonl(&env.path(&format!("work/runs/{family}/eval/predictions.jsonl")));
    assert!(!predictions.is_empty());

    // merge: a checkpoint of the same family, with the template and the stop tokens
    let merged = env.path("merged");
    env.run(&["merge", "-c", c, "--out", merged.to_str().expect("utf-8")]).expect_code(0).stdout_has("merged 14 modules");
    let saved = read_json(merged.join("config.json"));
    let original = read_json(model.join("config.json"));
    for key in ["model_type", "architectures", "tie_word_embeddings", "sliding_window"] {
        assert_eq!(saved[key], original[key], "{family}: merged {key}");
    }
    let head = original["head_dim"]
        .as_u64()
        .or(original["hidden_size"].as_u64().zip(original["num_attention_heads"].as_u64()).map(|(h, n)| h / n));
    assert_eq!(saved["head_dim"].as_u64(), head, "{family}: merged head_dim");
    let template = read_json(merged.join("tokenizer_config.json"));
    assert!(template["chat_template"].as_str().is_some_and(|t| t.contains(chat_start)), "{family}: {template}");
    let stops = |dir: &std::path::Path| {
        let mut ids: Vec<u64> = read_json(dir.join("generation_config.json"))["eos_token_id"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(|i| i.as_u64())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(stops(&merged), stops(&model), "{family}: the end-of-turn ids");
    // the merged checkpoint answers as the base with the adapter does
    let adapter = env.path(&format!("work/runs/{family}/adapter"));
    let answer = |args: &[&str]| {
        let run = env.run(&[&["ask", "Is insulin a statin?", "--context", "Insulin is a hormone.", "--max-tokens", "4"], args].concat());
        run.expect_code(0);
        run.stdout.lines().find(|l| l.starts_with("answer: ")).map(str::to_owned).expect("an answer line")
    };
    assert_eq!(
        answer(&["--model", merged.to_str().expect("utf-8")]),
        answer(&["--model", m, "--adapter", adapter.to_str().expect("utf-8")]),
        "{family}: merged vs adapter"
    );

    // export: ONNX Runtime gives candle's answer probabilities (checked by the command)
    let onnx = env.path("onnx");
    env.run(&["export", "-c", c, "--out", onnx.to_str().expect("utf-8")]).expect_code(0).stdout_has("checked on ONNX Runtime");

    // serve: candle with the adapter, and ONNX Runtime over the export, answer alike
    let candle = served(&env, &["serve", "-c", c, "--addr", "127.0.0.1:0"]);
    let ort = served(&env, &["serve", "-c", c, "--addr", "127.0.0.1:0", "--engine", "ort", "--onnx", onnx.to_str().expect("utf-8")]);
    for i in 0..3 {
        assert!((candle[i] - ort[i]).abs() < 1e-3, "{family}: candle {candle:?} vs ort {ort:?}");
    }
}

#[test]
fn llama3_goes_through_every_stage() {
    each_stage("llama3", "<|start_header_id|>");
}

#[test]
fn mistral_goes_through_every_stage() {
    each_stage("mistral", "[INST]");
}

#[test]
fn qwen2_goes_through_every_stage() {
    each_stage("qwen2", "<|im_start|>");
}
