//! A team's own data: multiple-choice questions in MedQA's JSONL layout and labelled notes in a
//! CSV with its own column names go through the data stage, two training steps, evaluation and
//! `/v1/answer`; bad records are named in errors.jsonl while the good ones go on; layouts a
//! choice task cannot train are refused by name.

use crate::harness::{Env, read_json, read_jsonl, repo};
use crate::serve::{http, json, spawn, wait_healthy};

/// A config over `input` with the metric plugin and a two-step run; `extra` goes into `[data]`
/// and may open further sections.
fn config(env: &Env, name: &str, input: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name = "{name}"
work_dir = {work:?}

[data]
input = {input:?}
split = "random"
dev_fraction = 0.2
test_fraction = 0.2
{extra}

[[plugins.chain]]
name = "classification-metrics"
kind = "metric"

[train]
data = "processed"
max_steps = 2
batch_size = 2
grad_accum = 1
max_len = 160
lr = 1e-3
warmup_steps = 1
loss = "choice"
seed = 3

[train.lora]
r = 2
alpha = 4

[eval]
split = "test"
"#,
        work = env.path("work").display().to_string(),
        input = input.display().to_string(),
    );
    env.write(&format!("{name}.toml"), text)
}

/// MedQA-layout questions: the layout and the letters are found from the data, the options
/// are in the prompt, training and evaluation work over the letters, and the server answers a
/// question with its options by letter (and refuses one without them).
#[test]
fn multiple_choice_questions_train_evaluate_and_are_served_by_letter() {
    let env = Env::new();
    let input = repo().join("examples/data/medqa-style/questions.jsonl");
    let config = config(&env, "mcq", &input, "");
    let c = config.to_str().expect("utf-8");
    env.run(&["data", "--config", c]).expect_code(0);
    let manifest = read_json(env.path("work/data/processed/manifest.json"));
    assert_eq!(manifest["layout"], "multiple-choice");
    assert_eq!(manifest["labels"], serde_json::json!(["A", "B", "C", "D", "E"]));
    let splits = &manifest["splits"];
    assert_eq!(splits["train"].as_u64().unwrap_or(0) + splits["dev"].as_u64().unwrap_or(0) + splits["test"].as_u64().unwrap_or(0), 32);
    assert!(splits["test"].as_u64().is_some_and(|n| n > 0), "{manifest}");
    let train = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    let first = train.iter().find(|r| r["id"] == "mcq-002").or(train.first()).expect("a training record");
    assert!(first["options"].as_array().is_some_and(|o| o.len() >= 4), "{first}");
    assert!(["A", "B", "C", "D", "E"].contains(&first["answer"].as_str().unwrap_or("")), "{first}");

    env.run(&["train", "--config", c]).expect_code(0);
    let run = read_json(env.path("work/runs/mcq/manifest.json"));
    assert_eq!(run["labels"], serde_json::json!(["A", "B", "C", "D", "E"]));
    env.run(&["eval", "--config", c]).expect_code(0).stdout_has("confusion (rows true, columns predicted: A B C D E)");
    let scores = read_json(env.path("work/runs/mcq/eval/scores.json"));
    assert_eq!(scores["labels"], serde_json::json!(["A", "B", "C", "D", "E"]));
    assert!(scores["scores"]["accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{scores}");
    let predictions = read_jsonl(&env.path("work/runs/mcq/eval/predictions.jsonl"));
    for p in &predictions {
        let probs: Vec<f64> = p["probabilities"].as_array().expect("probabilities").iter().filter_map(|v| v.as_f64()).collect();
        assert_eq!(probs.len(), 5, "{p}");
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p}");
        let letter = p["predicted"].as_str().expect("predicted");
        let record = read_jsonl(&env.path("work/data/processed/test.jsonl")).into_iter().find(|r| r["id"] == p["id"]).expect("its record");
        let offered = record["options"].as_array().expect("options").len();
        assert!(usize::from(letter.as_bytes()[0] - b'A') < offered, "a letter beyond the question's options: {p}");
        assert!(probs[offered..].iter().all(|&x| x == 0.0), "options the question lacks got probability: {p}");
    }

    let server = spawn(&env, &["serve", "-c", c, "--addr", "127.0.0.1:0"]);
    wait_healthy(&server.addr);
    let ask = r#"{"question": "Which vitamin deficiency causes scurvy?", "options": ["Vitamin A", "Vitamin C", "Vitamin D"]}"#;
    let (code, body) = http(&server.addr, "POST", "/v1/answer", Some(ask));
    assert_eq!(code, 200, "{body}");
    let a = json(&body);
    let letter = a["answer"].as_str().expect("answer");
    assert!(["A", "B", "C"].contains(&letter), "{a}");
    let options = ["Vitamin A", "Vitamin C", "Vitamin D"];
    assert_eq!(a["answer_text"], options[usize::from(letter.as_bytes()[0] - b'A')], "{a}");
    let keys: Vec<&String> = a["probabilities"].as_object().expect("probabilities").keys().collect();
    assert_eq!(keys, ["A", "B", "C"], "{a}");
    let (code, body) = http(&server.addr, "POST", "/v1/answer", Some(r#"{"question": "Which vitamin deficiency causes scurvy?"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("this model answers multiple-choice questions"), "{body}");
}

/// Labelled notes in a CSV with its own column names: the fields are mapped in the config, the
/// label set is the task's, each note is asked the task's question, and evaluation scores the
/// three labels.
#[test]
fn labelled_notes_from_a_csv_with_mapped_columns_train_and_evaluate() {
    let env = Env::new();
    let input = repo().join("examples/data/triage-notes/notes.csv");
    let extra = "[data.fields]\nid = \"note_id\"\ntext = \"note\"\nlabel = \"triage\"\n\n[task]\nlabels = [\"emergent\", \"urgent\", \"routine\"]\nquestion = \"How urgently does this patient need care?\"\n";
    let config = config(&env, "notes", &input, extra);
    let c = config.to_str().expect("utf-8");
    env.run(&["data", "--config", c]).expect_code(0);
    let manifest = read_json(env.path("work/data/processed/manifest.json"));
    assert_eq!((manifest["layout"].as_str(), manifest["records"].as_u64()), (Some("labelled"), Some(32)));
    assert_eq!(manifest["labels"], serde_json::json!(["emergent", "urgent", "routine"]));
    let all: Vec<serde_json::Value> =
        ["train", "dev", "test"].iter().flat_map(|s| read_jsonl(&env.path(&format!("work/data/processed/{s}.jsonl")))).collect();
    let n001 = all.iter().find(|r| r["id"] == "n001").expect("note n001");
    assert_eq!(n001["question"], "How urgently does this patient need care?");
    assert_eq!(n001["answer"], "emergent");
    assert!(n001["context"].as_str().is_some_and(|t| t.starts_with("Crushing chest pain")), "{n001}");
    env.run(&["train", "--config", c]).expect_code(0);
    env.run(&["eval", "--config", c]).expect_code(0).stdout_has("confusion (rows true, columns predicted: emergent urgent routine)");
    let scores = read_json(env.path("work/runs/notes/eval/scores.json"));
    assert!(scores["scores"].as_object().expect("scores").keys().any(|k| k.starts_with("confusion/emergent/")), "{scores}");
}

/// Bad records of a team's own data are named by file, line and field, written to
/// errors.jsonl and counted, and the good ones go through (exit 2); an input a choice task
/// cannot use (chats for a choice task, labels for a generate task) stops the stage (exit 1)
/// with the reason and writes nothing, and training on
/// the data another config's stage wrote is refused.
#[test]
fn bad_own_records_are_named_and_unusable_inputs_are_refused() {
    let env = Env::new();
    let lines = [
        r#"{"id": "ok1", "question": "Which drug reverses opioids?", "options": ["Naloxone", "Flumazenil"], "answer": "Naloxone"}"#,
        r#"{"id": "far", "question": "Which is a statin?", "options": ["Atorvastatin", "Aspirin"], "answer": "C"}"#,
        r#"{"id": "one", "question": "Only one option?", "options": ["Yes"], "answer": "A"}"#,
        r#"{"id": "ok1", "question": "A second ok1", "options": ["x", "y"], "answer": 1}"#,
        r#"{"id": "ok2", "question": "Which ion is low in tetany?", "options": {"A": "Calcium", "B": "Sodium"}, "answer": 0}"#,
    ];
    let input = env.write("mcq.jsonl", lines.join("\n") + "\n");
    let c = config(&env, "bad", &input, "");
    env.run(&["data", "--config", c.to_str().expect("utf-8")])
        .expect_code(2)
        .stderr_has("mcq.jsonl: line 2: field answer: the answer \"C\" is not among the 2 options")
        .stderr_has("mcq.jsonl: line 3: field options has 1 option(s)")
        .stderr_has("mcq.jsonl: line 4: the id ok1 is taken by")
        .stderr_has("3 input error(s)");
    let mut kept: Vec<String> = ["train", "dev", "test"]
        .iter()
        .flat_map(|s| read_jsonl(&env.path(&format!("work/data/processed/{s}.jsonl"))))
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["ok1", "ok2"]);
    let errors = read_jsonl(&env.path("work/data/processed/errors.jsonl"));
    assert_eq!(errors.len(), 3);
    assert_eq!((errors[0]["place"].as_str(), errors[0]["file"].as_str().is_some_and(|f| f.ends_with("mcq.jsonl"))), (Some("line 2"), true));

    // a mapped column the file lacks, on every row: nothing readable, nothing written
    let csv = env.write("notes.csv", "id,text,label\n1,Chest pain,emergent\n2,Rash,routine\n");
    let c = config(&env, "nomap", &csv, "[data.fields]\ntext = \"note\"");
    env.run(&["data", "--config", c.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("notes.csv: line 2: missing field note (named by data.fields.text)");
    // configs sharing a work folder share data/processed: another config's data is not trained on
    let bad_toml = env.path("bad.toml").display().to_string();
    env.run(&["train", "--config", c.to_str().expect("utf-8")]).expect_code(1).stderr_has(&format!("holds the data of {bad_toml}, not of"));
    // one label for every record
    let csv = env.write("same.csv", "text,label\nChest pain,urgent\nRash,urgent\n");
    let c = config(&env, "same", &csv, "");
    env.run(&["data", "--config", c.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("every answer is \"urgent\": a choice needs at least two labels");
    // chat records are for a generate task, which is refused by name
    let chat = env.write(
        "chat.jsonl",
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#.to_owned() + "\n",
    );
    let c = config(&env, "chat", &chat, "");
    env.run(&["data", "--config", c.to_str().expect("utf-8")]).expect_code(1).stderr_has("chat records train a `generate` task");
    let c = config(&env, "gen", &chat, "[task]\nkind = \"generate\"\nlabels = [\"a\", \"b\"]");
    env.run(&["data", "--config", c.to_str().expect("utf-8")]).expect_code(1).stderr_has("task.labels: a `generate` task has no labels");
    // packing is for a generate task's sequences: a choice task refuses it by name
    let text = std::fs::read_to_string(config(&env, "packed", &csv, "")).expect("config").replace("[train]\n", "[train]\npacking = true\n");
    let c = env.write("packed.toml", text);
    env.run(&["data", "--config", c.to_str().expect("utf-8")]).expect_code(1).stderr_has("train.packing: belongs to `generate` tasks");
}

/// Chats in OpenAI's format train a `generate` task through the model's own template (the
/// assistant's turns the only targets), and evaluation writes answers and scores them with the
/// text-metrics plugin and the references' perplexity.
#[test]
fn chats_train_a_generate_task_and_are_scored_on_their_written_answers() {
    let env = Env::new();
    let input = repo().join("examples/data/chat/conversations.jsonl");
    let text = std::fs::read_to_string(config(&env, "chat", &input, "\n[task]\nkind = \"generate\""))
        .expect("config")
        .replace("name = \"classification-metrics\"", "name = \"text-metrics\"")
        .replace("loss = \"choice\"\n", "")
        .replace("split = \"test\"\n", "split = \"test\"\nlimit = 2\nmax_new_tokens = 8\n");
    let c = env.write("chat.toml", text);
    let c = c.to_str().expect("utf-8");
    env.run(&["data", "--config", c]).expect_code(0);
    let manifest = read_json(env.path("work/data/processed/manifest.json"));
    assert_eq!((manifest["layout"].as_str(), manifest["task"].as_str()), (Some("chat"), Some("generate")));
    let train = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    assert!(train.iter().all(|r| r["messages"].as_array().is_some_and(|m| m.last().is_some_and(|t| t["role"] == "assistant"))));
    // packed by default: several chats a row of max_len tokens
    env.run(&["train", "--config", c]).expect_code(0).stdout_has("train: 2/2 steps").stdout_has(" examples packed into ");
    env.run(&["eval", "--config", c]).expect_code(0).stdout_has("(2 answers written");
    let scores = read_json(env.path("work/runs/chat/eval/scores.json"));
    for k in ["exact_match", "token_f1", "rouge_l", "text-metrics/rouge_l"] {
        assert!(scores["scores"][k].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{k}: {scores}");
    }
    assert!(scores["scores"]["perplexity"].as_f64().is_some_and(|p| p > 1.0 && p.is_finite()), "{scores}");
    let predictions = read_jsonl(&env.path("work/runs/chat/eval/predictions.jsonl"));
    assert_eq!(predictions.len(), 2);
    assert!(predictions.iter().all(|p| p["label"].as_str().is_some_and(|l| !l.is_empty()) && p["predicted"].is_string()));

    // served with its adapter: chats are answered, /v1/answer says where to ask instead
    let server = spawn(&env, &["serve", "-c", c, "--addr", "127.0.0.1:0"]);
    wait_healthy(&server.addr);
    let chat = r#"{"model": "chat", "messages": [{"role": "user", "content": "What is the antidote for paracetamol overdose?"}], "max_tokens": 6}"#;
    let (code, body) = http(&server.addr, "POST", "/v1/chat/completions", Some(chat));
    assert_eq!(code, 200, "{body}");
    assert!(json(&body)["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=6).contains(&n)), "{body}");
    let (code, body) = http(&server.addr, "POST", "/v1/answer", Some(r#"{"question": "Is it safe?"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ask it at /v1/chat/completions"), "{body}");
}

/// PubMedQA as a `generate` task learns the decision and the abstract's conclusion; its
/// evaluation scores the decision (the first word written) beside the text.
#[test]
fn explained_pubmedqa_answers_are_scored_on_their_decision() {
    let env = Env::new();
    let data = repo().join("examples/data/pubmedqa");
    let extra =
        format!("test_ground_truth = {:?}\n\n[task]\nkind = \"generate\"", data.join("test_ground_truth.json").display().to_string());
    let text = std::fs::read_to_string(config(&env, "explained", &data.join("ori_pqal.json"), &extra))
        .expect("config")
        .replace("split = \"random\"", "split = \"official\"")
        .replace("name = \"classification-metrics\"", "name = \"text-metrics\"")
        .replace("loss = \"choice\"\n", "")
        .replace("max_len = 160", "max_len = 512")
        .replace("split = \"test\"\n", "split = \"test\"\nlimit = 2\nmax_new_tokens = 4\n");
    let c = env.write("explained.toml", text);
    let c = c.to_str().expect("utf-8");
    env.run(&["data", "--config", c]).expect_code(0);
    // the official split, as a choice task has it: folds 1-9 train, fold 0 dev, the 500 test
    let sizes = ["train", "dev", "test"].map(|s| read_jsonl(&env.path(&format!("work/data/processed/{s}.jsonl"))).len());
    assert_eq!(sizes, [450, 50, 500]);
    env.run(&["train", "--config", c]).expect_code(0);
    env.run(&["eval", "--config", c]).expect_code(0);
    let scores = read_json(env.path("work/runs/explained/eval/scores.json"));
    assert_eq!(scores["scores"]["decision_count"].as_f64(), Some(2.0), "{scores}");
    for k in ["decision_accuracy", "decision_macro_f1"] {
        assert!(scores["scores"][k].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{k}: {scores}");
    }
    let predictions = read_jsonl(&env.path("work/runs/explained/eval/predictions.jsonl"));
    let reference = predictions[0]["label"].as_str().expect("reference");
    assert!(["Yes. ", "No. ", "Maybe. "].iter().any(|d| reference.starts_with(d)), "the decision, then the conclusion: {reference}");
}

/// Bad chats are named by line and turn, and the good ones go through; an instruction record
/// becomes a user and an assistant turn.
#[test]
fn bad_chats_are_named_and_instructions_become_chats() {
    let env = Env::new();
    let lines = [
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}]}"#,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}"#,
        r#"{"messages": [{"role": "doctor", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#,
        r#"{"messages": []}"#,
        r#"{"messages": [{"from": "human", "value": "Dose?"}, {"from": "gpt", "value": "500 mg."}]}"#,
    ];
    let input = env.write("chats.jsonl", lines.join("\n") + "\n");
    let c = config(&env, "chats", &input, "\n[task]\nkind = \"generate\"");
    env.run(&["data", "--config", c.to_str().expect("utf-8")])
        .expect_code(2)
        .stderr_has("chats.jsonl: line 2: field messages ends on a user turn")
        .stderr_has("chats.jsonl: line 3: messages[1] is an empty assistant turn")
        .stderr_has("chats.jsonl: line 4: messages[0].role \"doctor\" is not system, user or assistant")
        .stderr_has("chats.jsonl: line 5: field messages is an empty chat")
        .stderr_has("4 input error(s)");
    let kept: usize = ["train", "dev", "test"].iter().map(|s| read_jsonl(&env.path(&format!("work/data/processed/{s}.jsonl"))).len()).sum();
    assert_eq!(kept, 2);

    let input = env.write(
        "instructions.jsonl",
        r#"{"instruction": "Expand the abbreviation.", "input": "MI", "output": "Myocardial infarction."}"#.to_owned() + "\n",
    );
    let c = config(&env, "instructions", &input, "\n[task]\nkind = \"generate\"");
    env.run(&["data", "--config", c.to_str().expect("utf-8")]).expect_code(0);
    let all: Vec<serde_json::Value> =
        ["train", "dev", "test"].iter().flat_map(|s| read_jsonl(&env.path(&format!("work/data/processed/{s}.jsonl")))).collect();
    assert_eq!(all[0]["messages"][0]["content"], "Expand the abbreviation.\n\nMI");
    assert_eq!(all[0]["messages"][1], serde_json::json!({"role": "assistant", "content": "Myocardial infarction."}));
    // multiple-choice records are for a choice task
    let mcq = repo().join("examples/data/medqa-style/questions.jsonl");
    let c = config(&env, "mcqgen", &mcq, "\n[task]\nkind = \"generate\"");
    env.run(&["data", "--config", c.to_str().expect("utf-8")]).expect_code(1).stderr_has("multiple-choice records train a `choice` task");
}
