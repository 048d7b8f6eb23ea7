//! Components for another contract version or another world, and bytes that are no
//! component at all, are refused with a message that names the mismatch; a component for the
//! frozen contract 0.1.0 is adapted; every field of a record reaches the augmenters.

use crate::harness::{Env, guest, jsonl, read_jsonl, repo};

#[test]
fn a_component_for_another_contract_version_is_refused() {
    let env = Env::new();
    let future = guest("future_contract");
    env.run(&["plugin", "test", future.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("built for contract medtune:plugin@0.3.0")
        .stderr_has("this host speaks medtune:plugin@0.2.0, still loads 0.1.0");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let env = Env::new();
    let input = env.write("in.jsonl", jsonl(&[("a", "text")]));
    let config = env.config(&input, "[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"disambiguator\"\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("is a normalizer plugin (exports medtune:plugin/normalizer-api@0.2.0), but the config expects a disambiguator");
}

#[test]
fn garbage_bytes_are_refused() {
    let env = Env::new();
    let junk = env.write("junk.wasm", b"\0asm not really a component");
    env.run(&["plugin", "test", junk.to_str().expect("utf-8")]).expect_code(1).stderr_has("not a valid WebAssembly component");
}

/// A multiple-choice question whose question, context and options all name concepts.
fn fields_input(env: &Env) -> std::path::PathBuf {
    env.write(
        "mcq.jsonl",
        concat!(
            r#"{"id": "q1", "question": "Is syncope common after a myocardial infarction?", "context": "Adults with diabetes.", "#,
            r#""options": ["Fainting is common", "Urticaria never"], "answer": "A"}"#,
            "\n"
        ),
    )
}

fn chain_config(env: &Env, name: &str, input: &std::path::Path, augmenter: &str) -> std::path::PathBuf {
    let vocab = repo().join("tests/fixtures/vocab").display().to_string();
    env.write(
        &format!("{name}.toml"),
        format!(
            "name = \"{name}\"\nwork_dir = {work:?}\n[data]\ninput = {input:?}\nsplit = \"none\"\n\
             [[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\ngrants = {{ \"/vocab\" = {vocab:?} }}\n\
             [[plugins.chain]]\n{augmenter}\n",
            work = env.path(&format!("work-{name}")).display().to_string(),
            input = input.display().to_string(),
        ),
    )
}

/// A component built with wit-bindgen against the frozen 0.1.0 WIT (`wit/0.1.0/`) still loads:
/// it sees the record's whole text without the field list, and its new text is taken back
/// into the record's fields through the text between them. When it changes that text, the
/// record is marked with the reason and kept.
#[test]
fn a_component_for_contract_0_1_0_is_adapted() {
    let env = Env::new();
    let old = guest("contract_0_1").display().to_string();
    env.run(&["plugin", "test", &old]).expect_code(0).stdout_has("contract-0-1@0.1.0 (augmenter plugin, contract 0.1.0");
    let input = fields_input(&env);
    let config = chain_config(&env, "old", &input, &format!("name = \"contract-0-1\"\nkind = \"augmenter\"\npath = {old:?}"));
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let rows = read_jsonl(&env.path("work-old/data/augmented/train.jsonl"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let new = &rows[1];
    assert_eq!(new["question"], "Is SYNCOPE common after a MYOCARDIAL INFARCTION?");
    assert_eq!(new["context"], "ADULTS with DIABETES.");
    assert_eq!(new["options"], serde_json::json!(["FAINTING is common", "URTICARIA never"]));
    assert_eq!(new["answer"], "A");
    assert!(new["augmentation"]["plugin"].as_str().is_some_and(|p| p.starts_with("contract-0-1@0.1.0#")), "{new}");

    let config = chain_config(
        &env,
        "joined",
        &input,
        &format!("name = \"contract-0-1\"\nkind = \"augmenter\"\npath = {old:?}\nsettings = {{ join = \"true\" }}"),
    );
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(2)
        .stderr_has("plugin contract-0-1@0.1.0 on record q1")
        .stderr_has("derived record 0: the text between fields question and context changed");
    let rows = read_jsonl(&env.path("work-joined/data/augmented/train.jsonl"));
    assert_eq!(rows.len(), 1, "the source is kept, marked");
    assert!(rows[0]["failures"][0]["reason"].as_str().is_some_and(|r| r.contains("contract 0.1.0 augmenter")), "{}", rows[0]);
}

/// The default augmenters (contract 0.2.0) see every field: a multiple-choice question's
/// options change with its question and context, and each new record's text is composed
/// again from its fields.
#[test]
fn augmenters_change_every_field_of_a_record() {
    let env = Env::new();
    let input = fields_input(&env);
    let vocab = repo().join("tests/fixtures/vocab").display().to_string();
    let config = chain_config(
        &env,
        "swap",
        &input,
        &format!("name = \"synonym-swap\"\nkind = \"augmenter\"\ngrants = {{ \"/vocab\" = {vocab:?} }}\nsettings = {{ rate = 1.0 }}"),
    );
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let rows = read_jsonl(&env.path("work-swap/data/augmented/train.jsonl"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (source, new) = (&rows[0], &rows[1]);
    let names: Vec<&str> = source["fields"].as_array().expect("fields").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["question", "context", "option/A", "option/B"]);
    for (part, was) in [("question", "syncope"), ("context", "Adults"), ("options", "Fainting"), ("options", "Urticaria")] {
        assert!(source[part].to_string().contains(was), "{part}: {}", source[part]);
        assert!(!new[part].to_string().contains(was), "{part} was swapped: {}", new[part]);
    }
    let options: Vec<&str> = new["options"].as_array().expect("options").iter().filter_map(|o| o.as_str()).collect();
    let text = format!(
        "{}\n\n{}\n\n{}",
        new["question"].as_str().unwrap_or_default(),
        new["context"].as_str().unwrap_or_default(),
        options.join("\n\n")
    );
    assert_eq!(new["text"].as_str(), Some(text.as_str()));

    // a chat's turns, the assistant's included
    let chat = env.write(
        "chat.jsonl",
        r#"{"id": "c1", "messages": [{"role": "user", "content": "Is fainting dangerous for adults?"}, {"role": "assistant", "content": "Syncope in adults needs a check."}]}"#.to_owned() + "\n",
    );
    let text = std::fs::read_to_string(&config).expect("config").replace(&input.display().to_string(), &chat.display().to_string());
    let config = env.write("swap-chat.toml", text.replace("[data]", "[task]\nkind = \"generate\"\n[data]"));
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(0);
    let rows = read_jsonl(&env.path("work-swap/data/augmented/train.jsonl"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let turns: Vec<&str> = rows[1]["messages"].as_array().expect("messages").iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(!turns[0].contains("fainting") && !turns[0].contains("adults"), "{turns:?}");
    assert!(!turns[1].contains("Syncope") && !turns[1].contains("adults"), "{turns:?}");
    assert_eq!(rows[1]["question"].as_str(), Some(turns[0]));
}
