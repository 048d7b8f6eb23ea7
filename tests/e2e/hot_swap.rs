//! Hot swap: a new version dropped into a plugin folder is swapped in between batches, and so
//! is an older one (rollback); garbage is refused and moved aside so the next start does not
//! meet it; two files of one plugin are an error; changed settings and granted files reload.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use crate::harness::{Env, guest, jsonl};

/// A running `medtune plugin watch` and its stdout lines.
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(env: &Env, config: &Path, input: &Path, max_events: usize) -> Self {
        let (config, input) = (config.to_str().expect("utf-8"), input.to_str().expect("utf-8"));
        let mut child = env
            .command(&["plugin", "watch", "--config", config, "--input", input, "--max-events", &max_events.to_string()])
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
        Watch { child, lines }
    }

    /// Waits for a stdout line containing `needle`; returns the lines seen up to it.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
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

    fn finish(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}

/// Writes a file the way operators should: elsewhere first, then renamed into place.
fn deploy(env: &Env, bytes: &[u8], rel: &str) {
    let tmp = env.write(&format!("staging-{}", rel.replace('/', "-")), bytes);
    std::fs::rename(tmp, env.path(rel)).expect("rename into place");
}

fn tagger(version: u8) -> Vec<u8> {
    std::fs::read(guest(&format!("tagger_v{version}"))).expect("tagger guest")
}

/// `plugin watch` that loads the chain, shows it once and stops.
fn watch_once(env: &Env, config: &Path, input: &Path) -> crate::harness::Run {
    let (config, input) = (config.to_str().expect("utf-8"), input.to_str().expect("utf-8"));
    env.run(&["plugin", "watch", "--config", config, "--input", input, "--max-events", "0"])
}

const CHAIN: &str = "[plugins]\ndirs = [\"plugins\"]\n\n[[plugins.chain]]\nname = \"tagger\"\nkind = \"normalizer\"\n";

#[test]
fn new_and_older_versions_are_swapped_in_and_a_refused_file_is_moved_aside() {
    let env = Env::new();
    env.write("plugins/tagger.wasm", tagger(1));
    let input = env.write("in.jsonl", jsonl(&[("q1", "first"), ("q2", "second")]));
    let config = env.config(&input, CHAIN);
    let watch = Watch::start(&env, &config, &input, 3);
    let seen = watch.wait_for("q2:");
    assert!(seen.iter().any(|l| l.contains("chain tagger@1.0.0")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q2: [V1.0.0]")), "{seen:?}");

    deploy(&env, &tagger(2), "plugins/tagger.wasm");
    let seen = watch.wait_for("q2:");
    let swap = seen.iter().find(|l| l.starts_with("swapped")).unwrap_or_else(|| panic!("{seen:?}"));
    // old and new named with their hashes
    assert!(swap.contains("tagger@1.0.0#") && swap.contains("-> tagger@2.0.0#") && swap.contains("its file changed"), "{swap}");
    assert!(seen.iter().any(|l| l.contains("q2: [V2.0.0]")), "{seen:?}");

    // rollback: the version the host started with comes back
    deploy(&env, &tagger(1), "plugins/tagger.wasm");
    let seen = watch.wait_for("q2:");
    assert!(
        seen.iter().any(|l| l.contains("swapped tagger@2.0.0#") && l.contains("-> tagger@1.0.0#") && l.contains("a rollback")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("q2: [V1.0.0]")), "{seen:?}");

    deploy(&env, b"\0asm\x0d\0\x01\0garbage", "plugins/broken.wasm");
    let seen = watch.wait_for("q2:");
    let refusal = seen.iter().find(|l| l.contains("refused") && l.contains("broken.wasm")).unwrap_or_else(|| panic!("{seen:?}"));
    assert!(refusal.contains(".refused/broken.wasm") && refusal.contains("the running version stays"), "{refusal}");
    assert!(seen.iter().any(|l| l.contains("q2: [V1.0.0]")), "{seen:?}");
    watch.finish();
    assert!(!env.path("plugins/broken.wasm").exists(), "the refused file left the folder");
    let reason = std::fs::read_to_string(env.path("plugins/.refused/broken.wasm.reason")).expect("reason beside it");
    assert!(reason.contains("not a valid WebAssembly component"), "{reason}");

    // the next start does not meet it; a bad file present at start is skipped with a warning
    env.write("plugins/junk.wasm", b"not wasm at all");
    let run = watch_once(&env, &config, &input);
    run.expect_code(0).stdout_has("q2: [V1.0.0]").stderr_has("skipping plugin file").stderr_has("junk.wasm");
}

#[test]
fn two_files_of_one_plugin_are_an_error_unless_the_version_picks_one() {
    let env = Env::new();
    env.write("plugins/tagger.wasm", tagger(1));
    env.write("plugins/tagger-new.wasm", tagger(2));
    let input = env.write("in.jsonl", jsonl(&[("q1", "first")]));
    let once = |version: Option<&str>| {
        let chain = match version {
            Some(v) => format!("{CHAIN}version = \"{v}\"\n"),
            None => CHAIN.to_owned(),
        };
        let config = env.config(&input, &chain);
        watch_once(&env, &config, &input)
    };
    once(None)
        .expect_code(1)
        .stderr_has("2 files hold plugin tagger")
        .stderr_has("tagger.wasm (1.0.0)")
        .stderr_has("tagger-new.wasm (2.0.0)");
    once(Some("=2.0.0")).expect_code(0).stdout_has("q1: [V2.0.0]").stderr_has("tagger.wasm: version 1.0.0 is outside");
    once(Some("^1")).expect_code(0).stdout_has("q1: [V1.0.0]");
    once(Some(">=3")).expect_code(1).stderr_has("no plugin tagger of an allowed version").stderr_has("passed over");
    once(Some("one point oh")).expect_code(1).stderr_has("plugins.chain[0] (tagger).version").stderr_has("not a version requirement");
}

#[test]
fn changed_settings_and_granted_files_reload_the_plugin() {
    let env = Env::new();
    env.write("plugins/tagger.wasm", tagger(1));
    env.write("tags/prefix.txt", "P");
    let input = env.write("in.jsonl", jsonl(&[("q1", "first")]));
    let granted = format!("{CHAIN}settings = {{ prefix_file = \"/tags/prefix.txt\" }}\ngrants = {{ \"/tags\" = \"tags\" }}\n");
    let config = env.config(&input, &granted);
    let watch = Watch::start(&env, &config, &input, 3);
    let seen = watch.wait_for("q1:");
    assert!(seen.iter().any(|l| l.contains("q1: [P1.0.0]")), "{seen:?}");

    deploy(&env, b"Q", "tags/prefix.txt");
    let seen = watch.wait_for("q1:");
    assert!(seen.iter().any(|l| l.contains("swapped tagger@1.0.0#") && l.contains("files changed in its granted folder")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q1: [Q1.0.0]")), "{seen:?}");

    let text = std::fs::read_to_string(&config).expect("config").replace(&granted, &format!("{CHAIN}settings = {{ prefix = \"R\" }}\n"));
    deploy(&env, text.as_bytes(), "config.toml");
    let seen = watch.wait_for("q1:");
    assert!(seen.iter().any(|l| l.contains("swapped") && l.contains("its settings changed in")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("q1: [R1.0.0]")), "{seen:?}");

    // what only a start can apply is refused, not ignored
    let text = std::fs::read_to_string(&config).expect("config").replace("dirs = [\"plugins\"]", "dirs = [\"plugins\", \"tags\"]");
    deploy(&env, text.as_bytes(), "config.toml");
    let seen = watch.wait_for("q1:");
    assert!(
        seen.iter()
            .any(|l| l.contains("refused") && l.contains("plugins.dirs, plugins.precedence or plugins.watch changed: restart to apply")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("q1: [R1.0.0]")), "{seen:?}");
    watch.finish();
}

/// The demo runs as its README says, on the binary under test, and writes nothing into the
/// repository.
#[test]
fn the_hot_swap_demo_runs_without_touching_the_repository() {
    let repo = crate::harness::repo();
    let status = || {
        let out = std::process::Command::new("git")
            .args(["status", "--porcelain", "--ignored", "--untracked-files=all", "--", "examples", "plugins/sdk", "plugins/medtext"])
            .current_dir(&repo)
            .output()
            .expect("git status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = status();
    let out = std::process::Command::new("bash")
        .arg(repo.join("examples/hot-swap/demo.sh"))
        .env("MEDTUNE", crate::harness::binary())
        // its own: the walkthrough test builds the same crate (version 0.1.0) into target/wasm
        .env("CARGO_TARGET_DIR", repo.join("target/hot-swap-demo"))
        .output()
        .expect("run demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "-> drug-class-normalizer@0.2.0#",
        "(its file changed, a rollback)",
        "moved to",
        "== in the folder now: .refused drug-class-normalizer.wasm",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert_eq!(status(), before, "the demo wrote into the repository");
}

/// A new augmenter dropped in while `medtune data` is augmenting takes over at the next batch:
/// the derived records name the version that made each one.
#[test]
fn an_augmenter_swapped_mid_data_makes_the_rest_of_the_records() {
    let env = Env::new();
    env.write("plugins/stamper.wasm", std::fs::read(guest("stamper_v1")).expect("stamper v1"));
    let records: Vec<(String, String)> = (0..40).map(|i| (format!("q{i:02}"), format!("question {i}"))).collect();
    let records: Vec<(&str, &str)> = records.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let input = env.write("in.jsonl", jsonl(&records));
    // about 150 ms a record: the augmentation lasts some seconds
    let config = env.config(
        &input,
        "[plugins]\ndirs = [\"plugins\"]\n\n[[plugins.chain]]\nname = \"stamper\"\nkind = \"augmenter\"\nsettings = { spin = 150000000 }\n",
    );
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("batch_size = 4", "batch_size = 1\ndev_fraction = 0.0\ntest_fraction = 0.0");
    std::fs::write(&config, text).expect("config");
    let child = env
        .command(&["data", "--config", config.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn medtune data");
    std::thread::sleep(Duration::from_millis(2500));
    deploy(&env, &std::fs::read(guest("stamper_v2")).expect("stamper v2"), "plugins/stamper.wasm");
    let out = child.wait_with_output().expect("wait");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("swapped stamper@1.0.0#") && log.contains("-> stamper@2.0.0#"), "{log}");
    let made = crate::harness::read_jsonl(&env.path("work/data/augmented/train.jsonl"));
    let notes: Vec<&str> = made.iter().filter_map(|r| r["augmentation"]["note"].as_str()).collect();
    let first_v2 = notes.iter().position(|n| *n == "stamped by 2.0.0").unwrap_or_else(|| panic!("no record by 2.0.0: {notes:?}\n{log}"));
    assert!(first_v2 > 0, "the swap came before augmentation began: {notes:?}");
    assert!(
        notes[..first_v2].iter().all(|n| *n == "stamped by 1.0.0") && notes[first_v2..].iter().all(|n| *n == "stamped by 2.0.0"),
        "{notes:?}"
    );
    let stamps: Vec<&str> = made.iter().filter_map(|r| r["augmentation"]["plugin"].as_str()).collect();
    assert!(stamps[0].starts_with("stamper@1.0.0#") && stamps[stamps.len() - 1].starts_with("stamper@2.0.0#"), "{stamps:?}");
}

#[test]
fn plugin_watch_shows_what_every_kind_makes() {
    let env = Env::new();
    env.write("plugins/tagger.wasm", tagger(1));
    let input = env.write("in.jsonl", jsonl(&[("q1", "first")]));
    let chain = format!(
        "{CHAIN}\n[[plugins.chain]]\nname = \"entity-mask\"\nkind = \"augmenter\"\nsettings = {{ rate = 1.0 }}\n\n[[plugins.chain]]\nname = \"classification-metrics\"\nkind = \"metric\"\n"
    );
    let config = env.config(&input, &chain);
    watch_once(&env, &config, &input)
        .expect_code(0)
        .stdout_has("q1: [V1.0.0] derived [q1#entity-mask#0 by entity-mask@0.1.0#")
        .stdout_has("classification-metrics@0.1.0: accuracy = 1.0000");
}
