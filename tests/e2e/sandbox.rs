//! The sandbox against hostile guests: time and memory limits, no ambient access,
//! output validation; the host goes on after each.

use std::time::Instant;

use crate::harness::{Env, guest, jsonl};

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
