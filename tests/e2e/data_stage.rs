//! `medtune data`: failures kept on their records, bad input reported by file, line and
//! field, outputs written whole.

use crate::harness::{Env, guest, jsonl, read_jsonl, repo};

#[test]
fn a_trap_in_the_middle_of_a_batch_keeps_and_reports_its_record() {
    let env = Env::new();
    let input = env.write("in.jsonl", jsonl(&[("r1", "one"), ("r2", "two"), ("r3", "PANIC now"), ("r4", "four")]));
    let config = env.config(
        &input,
        &format!("[[plugins.chain]]\nname = \"hostile\"\nkind = \"normalizer\"\npath = {:?}\n", guest("hostile").display().to_string()),
    );
    let run = env.run(&["data", "--config", config.to_str().expect("utf-8")]);
    run.expect_code(2)
        .stderr_has("plugin hostile@0.1.0 on record r3: plugin hostile@0.1.0 trapped")
        .stderr_has("hostile guest panics on record r3")
        .stderr_has("1 record(s) failed in plugins");
    let out = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    let ids: Vec<&str> = out.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4"], "every record is kept, in order");
    for r in &out {
        let failed = !r["failures"].as_array().expect("failures").is_empty();
        assert_eq!(failed, r["id"] == "r3", "{r}");
        assert_eq!(r["mentions"].as_array().expect("mentions").is_empty(), failed, "{r}");
    }
    let errors = read_jsonl(&env.path("work/data/processed/errors.jsonl"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["record"], "r3");
}

#[test]
fn bad_input_is_reported_by_line_and_field_and_good_records_go_through() {
    let env = Env::new();
    let mut bytes = jsonl(&[("good1", "fine")]).into_bytes();
    bytes.extend_from_slice(b"{not json\n");
    bytes.extend_from_slice(b"{\"id\": \"nq\", \"context\": \"x\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"badtype\", \"question\": 7}\n");
    bytes.extend_from_slice(b"{\"id\": \"badlabel\", \"question\": \"q\", \"answer\": \"perhaps\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"latin1\", \"question\": \"caf\xe9\"}\n");
    bytes.extend_from_slice(jsonl(&[("good2", "also fine")]).as_bytes());
    let input = env.write("in.jsonl", bytes);
    let config = env.config(
        &input,
        "[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\ngrants = { \"/vocab\" = \"VOCAB\" }\n",
    );
    let vocab = repo().join("tests/fixtures/vocab");
    let text = std::fs::read_to_string(&config).expect("config").replace("VOCAB", &vocab.display().to_string());
    std::fs::write(&config, text).expect("config");
    let run = env.run(&["data", "--config", config.to_str().expect("utf-8")]);
    run.expect_code(2)
        .stderr_has("in.jsonl: line 2: bad JSON")
        .stderr_has("in.jsonl: line 3: missing the question: no field question, QUESTION, stem (fields: id, context)")
        .stderr_has("in.jsonl: line 4: field question must be a string, found a number")
        .stderr_has("in.jsonl: line 5: the answer \"perhaps\" is not among the labels (yes, no, maybe); task.labels")
        .stderr_has("in.jsonl: line 6: not UTF-8")
        .stderr_has("5 input error(s)");
    let out = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    let ids: Vec<&str> = out.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["good1", "good2"]);
}

/// An input with no readable record (empty, or every line bad) stops the stage (exit 1),
/// naming the file and the first error, and leaves the last run's outputs as they were.
#[test]
fn an_empty_input_file_is_an_error_that_names_it_and_keeps_the_last_outputs() {
    let env = Env::new();
    let input = env.write("in.jsonl", jsonl(&[("good1", "one"), ("good2", "two")]));
    let config = env.config(&input, "");
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let before = std::fs::read(env.path("work/data/processed/train.jsonl")).expect("outputs of the good run");
    env.write("in.jsonl", "");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("in.jsonl: file: the file is empty")
        .stderr_has("nothing was written");
    assert_eq!(std::fs::read(env.path("work/data/processed/train.jsonl")).expect("still there"), before, "the good outputs were replaced");
}

/// A JSONL file in PubMedQA's own upper-case keys is read as PubMedQA records: the keys are
/// among the usual names of each field.
#[test]
fn a_jsonl_file_in_pubmedqa_keys_is_read_as_pubmedqa() {
    let env = Env::new();
    let lines = [
        r#"{"QUESTION": "Is it good?", "CONTEXTS": ["Yes it is.", "Really."], "final_decision": "yes", "LONG_ANSWER": "It is."}"#,
        r#"{"QUESTION": "Is it bad?", "CONTEXTS": ["No."], "final_decision": "no"}"#,
    ];
    let input = env.write("pqa.jsonl", lines.join("\n") + "\n");
    let config = env.config(&input, "");
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let records = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    assert_eq!(records.len(), 2);
    assert_eq!((records[0]["id"].as_str(), records[0]["question"].as_str()), (Some("1"), Some("Is it good?")));
    assert_eq!(records[0]["context"], "Yes it is.\n\nReally.");
    assert_eq!((records[0]["answer"].as_str(), records[0]["long_answer"].as_str()), (Some("yes"), Some("It is.")));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("work/data/processed/manifest.json")).expect("manifest")).expect("JSON");
    assert_eq!(manifest["layout"], "qa");
    assert_eq!(manifest["labels"], serde_json::json!(["yes", "no", "maybe"]));
}

#[test]
fn a_config_with_an_unknown_key_or_bad_value_stops_before_any_work() {
    let env = Env::new();
    let input = env.write("in.jsonl", jsonl(&[("a", "x")]));
    let config = env.config(&input, "[[plugins.chain]]\nname = \"x\"\nkind = \"normalizer\"\ntimeout = 5\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(1).stderr_has("unknown field `timeout`");
    let config = env.config(&input, "[[plugins.chain]]\nname = \"x\"\nkind = \"tokenizer\"\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("plugins.chain[0] (x).kind: unknown kind \"tokenizer\"");
    assert!(!env.path("work").exists(), "nothing written");
}

#[test]
fn a_bad_record_in_pubmedqa_json_is_named_and_the_others_go_through() {
    let env = Env::new();
    let input = env.write(
        "ori_pqal.json",
        r#"{
  "111": {"QUESTION": "Is it good?", "CONTEXTS": ["Yes it is."], "final_decision": "yes", "MESHES": ["Humans"], "LONG_ANSWER": "It is good."},
  "222": {"QUESTION": "Is it bad?", "CONTEXTS": 7, "final_decision": "no"},
  "666": {"QUESTION": "Long?", "CONTEXTS": ["Long."], "final_decision": "no", "LONG_ANSWER": 3},
  "333": {"QUESTION": "Maybe?", "CONTEXTS": ["Unclear."], "final_decision": "perhaps"},
  "444": {"CONTEXTS": ["No question."], "final_decision": "yes"},
  "555": {"QUESTION": "Fine too?", "CONTEXTS": ["Fine."], "final_decision": "maybe"}
}"#,
    );
    let config = env.config(&input, "");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(2)
        .stderr_has("ori_pqal.json: record 222: field CONTEXTS must be a string or a list of strings, found a number")
        .stderr_has("ori_pqal.json: record 333: the answer \"perhaps\" is not among the labels (yes, no, maybe)")
        .stderr_has("ori_pqal.json: record 444: missing the question")
        .stderr_has("ori_pqal.json: record 666: field LONG_ANSWER must be a string");
    let records = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    let ids: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["111", "555"], "good records kept, in file order");
    // the long answer travels with its record (for train.with_conclusions); none, no field
    assert_eq!(records[0]["long_answer"], "It is good.");
    assert!(records[1].get("long_answer").is_none());
}

#[test]
fn pubmedqa_json_that_is_not_json_names_the_line() {
    let env = Env::new();
    let input = env.write("ori_pqal.json", "{\n  \"111\": {\"QUESTION\": \"q\",\n  oops\n}");
    let config = env.config(&input, "");
    // a truncated file: no record can be read, so nothing is written and the stage fails
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(1).stderr_has("ori_pqal.json: line 3: not a JSON document");
}

/// Each mention names the plugin that found it; where two normalizers overlap both are kept,
/// unless `plugins.precedence` ranks one above the other.
#[test]
fn mentions_name_their_plugin_and_precedence_settles_overlaps() {
    let env = Env::new();
    std::fs::create_dir(env.path("plugins")).expect("mkdir");
    std::fs::copy(guest("tagger_v1"), env.path("plugins/tagger.wasm")).expect("copy");
    let input = env.write("in.jsonl", jsonl(&[("q1", "Apoptosis of Mitochondria")]));
    let chain = |precedence: &str| {
        let vocab = repo().join("tests/fixtures/vocab");
        env.config(
            &input,
            &format!(
                "[plugins]\ndirs = [\"plugins\"]\n{precedence}\n[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\ngrants = {{ \"/vocab\" = {:?} }}\n\n[[plugins.chain]]\nname = \"tagger\"\nkind = \"normalizer\"\n",
                vocab.display().to_string()
            ),
        )
    };
    let mentions = |config: &std::path::Path| -> Vec<(String, String)> {
        env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
        let out = read_jsonl(&env.path("work/data/processed/train.jsonl"));
        out[0]["mentions"]
            .as_array()
            .expect("mentions")
            .iter()
            .map(|m| (m["concept"]["id"].as_str().unwrap_or("").to_owned(), m["source"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let both = mentions(&chain(""));
    let ids: Vec<&str> = both.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["D017209", "D008928", "V1.0.0"], "{both:?}");
    assert!(both[0].1.starts_with("terminology-normalizer@0.1.0#") && both[2].1.starts_with("tagger@1.0.0#"), "{both:?}");
    // the tagger's span (the first character) overlaps "Apoptosis", not "Mitochondria"
    let ranked = mentions(&chain("precedence = [\"tagger\"]\n"));
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["D008928", "V1.0.0"], "{ranked:?}");
    let config = chain("precedence = [\"nobody\"]\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("plugins.precedence[0]")
        .stderr_has("\"nobody\" is not a normalizer of plugins.chain");
}
