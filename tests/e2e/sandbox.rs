//! The sandbox against hostile guests: time and memory limits, no ambient access,
//! output validation; the host goes on after each.

use std::time::Instant;

use crate::harness::{Env, guest, jsonl, read_jsonl};

fn test_hostile(env: &Env, records: &[(&str, &str)], extra: &[&str]) -> crate::harness::Run {
    let input = env.write("in.jsonl", jsonl(records));
    let hostile = guest("hostile");
    let mut args = vec!["plugin", "test", hostile.to_str().expect("utf-8 path"), "--input", input.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    env.run(&args)
}

#[test]
fn an_infinite_loop_is_stopped_at_the_time_limit_and_the_host_goes_on() {
    let env = Env::new();
    let t = Instant::now();
    let run =
        test_hostile(&env, &[("a", "fine"), ("b", "LOOP forever"), ("c", "fine again")], &["--batch-size", "1", "--timeout-ms", "200"]);
    let secs = t.elapsed().as_secs_f64();
    run.expect_code(2).stdout_has("plugin hostile@0.1.0 timed out after 200 ms");
    // the record after the runaway one is processed by a fresh instance
    run.stdout_has("c: 1 mention(s)");
    assert!(secs < 10.0, "took {secs} s");
}

#[test]
fn a_memory_bomb_is_stopped_at_the_cap() {
    let env = Env::new();
    let run = test_hostile(&env, &[("a", "BOMB"), ("b", "fine")], &["--batch-size", "1", "--memory-mib", "16"]);
    run.expect_code(2).stdout_has("hit its memory cap of 16 MiB").stdout_has("b: 1 mention(s)");
}

#[test]
fn a_guest_cannot_read_host_files_environment_or_network() {
    let env = Env::new();
    let run = test_hostile(&env, &[("a", "SNOOP")], &[]);
    run.expect_code(0).stdout_has("file denied").stdout_has("env denied").stdout_has("net denied");
    assert!(!run.stdout.contains("READ") && !run.stdout.contains("CONNECTED"), "{}", run.stdout);
}

#[test]
fn a_plugin_error_fails_its_record_only() {
    let env = Env::new();
    let records =
        [("a", "REFUSE config"), ("b", "fine"), ("c", "REFUSE input"), ("d", "REFUSE resource"), ("e", "REFUSE internal"), ("f", "SNOOP")];
    let run = test_hostile(&env, &records, &[]);
    run.expect_code(2)
        .stdout_has("a: FAILED: config: record a refused")
        .stdout_has("b: 1 mention(s)")
        .stdout_has("c: FAILED: invalid input: record c refused")
        .stdout_has("d: FAILED: missing resource: record d refused")
        .stdout_has("e: FAILED: internal: record e refused")
        .stdout_has("file denied");
}

#[test]
fn spans_out_of_range_or_inside_a_character_are_refused() {
    let env = Env::new();
    let run = test_hostile(&env, &[("range", "RANGE"), ("cut", "CUT cafe\u{301}"), ("noid", "NOID"), ("ok", "fine")], &[]);
    run.expect_code(2)
        .stdout_has("range: FAILED: invalid output: mention 0: span 0..10 is outside the text (5 characters)")
        .stdout_has("cut: FAILED: invalid output: mention 0: span 0..8 cuts a character at offset 8")
        .stdout_has("noid: FAILED: invalid output: mention 0: concept id is empty")
        .stdout_has("ok: 1 mention(s)");
}

/// A record that loops forever costs its batch nothing: the batch is halved under shorter
/// limits until the record is alone, and only it is marked (in `plugin test` and the data stage).
#[test]
fn a_runaway_record_in_a_batch_is_found_and_only_it_is_marked() {
    let env = Env::new();
    let mut records: Vec<(String, String)> = (0..16).map(|i| (format!("r{i}"), format!("fine {i}"))).collect();
    records[11].1 = "LOOP forever".into();
    let records: Vec<(&str, &str)> = records.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let t = Instant::now();
    let run = test_hostile(&env, &records, &["--batch-size", "16", "--timeout-ms", "300"]);
    let secs = t.elapsed().as_secs_f64();
    run.expect_code(2)
        .stdout_has("r11: FAILED: plugin hostile@0.1.0 timed out after 300 ms (tried alone after its batch of 16 failed)")
        .stdout_has("r10: 1 mention(s)")
        .stdout_has("r12: 1 mention(s)")
        .stderr_has("1 record(s) failed");
    // the first call, the halves on the way down (2 x 300 ms x (8+4+2+1)/16), then alone
    assert!(secs < 3.0, "took {secs} s");

    let input = env.write("data.jsonl", jsonl(&records));
    let config = env.config(
        &input,
        &format!(
            "[[plugins.chain]]\nname = \"hostile\"\nkind = \"normalizer\"\npath = {:?}\ntimeout_ms = 300\n",
            guest("hostile").display().to_string()
        ),
    );
    let text = std::fs::read_to_string(&config).expect("config").replace("batch_size = 4", "batch_size = 16");
    std::fs::write(&config, text).expect("config");
    env.run(&["data", "--config", config.to_str().expect("utf-8")]).expect_code(2);
    let errors = read_jsonl(&env.path("work/data/processed/errors.jsonl"));
    let failed: Vec<&str> = errors.iter().filter_map(|e| e["record"].as_str()).collect();
    assert_eq!(failed, ["r11"], "{errors:?}");
}

#[test]
fn a_stack_overflow_is_named_as_one() {
    let env = Env::new();
    test_hostile(&env, &[("a", "RECURSE"), ("b", "fine")], &["--batch-size", "1"])
        .expect_code(2)
        .stdout_has("a: FAILED: plugin hostile@0.1.0 trapped: stack overflow (most likely): out of bounds memory access in a recursion (hostile::recurse in")
        .stdout_has("b: 1 mention(s)");
}
