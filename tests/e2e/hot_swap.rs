//! Hot swap: a new version dropped into a plugin folder is swapped in between batches;
//! garbage is refused and the running version keeps serving.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use crate::harness::{Env, guest, jsonl};

/// Waits for a stdout line containing `needle`; returns the lines seen up to it.
fn wait_for(lines: &Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {needle:?} within 30 s; saw:\n{}", seen.join("\n")),
        }
    }
}

/// Deploys a file the way operators should: write elsewhere, then rename into the folder.
fn deploy(env: &Env, bytes: &[u8], name: &str) {
    let tmp = env.write(&format!("staging-{name}"), bytes);
    std::fs::rename(tmp, env.path(&format!("plugins/{name}"))).expect("rename into plugin folder");
}

#[test]
fn a_new_version_is_swapped_in_and_garbage_is_refused() {
    let env = Env::new();
    std::fs::create_dir(env.path("plugins")).expect("mkdir");
    std::fs::copy(guest("tagger_v1"), env.path("plugins/tagger.wasm")).expect("copy v1");
    let input = env.write("in.jsonl", jsonl(&[("q1", "first"), ("q2", "second")]));
    let config = env.config(&input, "[plugins]\ndirs = [\"plugins\"]\n\n[[plugins.chain]]\nname = \"tagger\"\nkind = \"normalizer\"\n");
    let config = config.to_str().expect("utf-8");
    let input = input.to_str().expect("utf-8");
    let mut child = env
        .command(&["plugin", "watch", "--config", config, "--input", input, "--max-events", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn medtune plugin watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen = wait_for(&lines, "q2:");
    assert!(seen.iter().any(|l| l.contains("chain tagger@1.0.0")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q2: [V1.0.0]")), "{seen:?}");

    deploy(&env, &std::fs::read(guest("tagger_v2")).expect("v2"), "tagger.wasm");
    let seen = wait_for(&lines, "q2:");
    assert!(seen.iter().any(|l| l.contains("swapped tagger@1.0.0 -> tagger@2.0.0")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q2: [V2.0.0]")), "{seen:?}");

    deploy(&env, b"\0asm\x0d\0\x01\0garbage", "broken.wasm");
    let seen = wait_for(&lines, "q2:");
    assert!(seen.iter().any(|l| l.contains("refused") && l.contains("broken.wasm") && l.contains("the running version stays")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q2: [V2.0.0]")), "{seen:?}");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}
