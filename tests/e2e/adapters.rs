//! `medtune serve` with several adapters over one base model (the real SmolLM2, two real PEFT
//! adapters from tests/fixtures): each answers as its own model, requests of different
//! adapters share a batch and get what they get alone, and a watched adapters folder adds,
//! replaces and removes models while requests keep being answered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Env, repo};
use crate::serve::{http, json, spawn, wait_healthy};

const PROMPT: &str = "<|im_start|>user\nIs aspirin an anticoagulant?<|im_end|>\n<|im_start|>assistant\n";

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn config(env: &Env) -> String {
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    env.config(&input, "").to_str().expect("utf-8").to_owned()
}

/// A greedy completion of `PROMPT` by `model`: status, text, and the first token's
/// log-probability (or the body, on an error).
fn complete(addr: &str, model: &str) -> (u16, String, f64) {
    let body = serde_json::json!({"model": model, "prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logprobs": 1}).to_string();
    let (code, body) = http(addr, "POST", "/v1/completions", Some(&body));
    if code != 200 {
        return (code, body, f64::NAN);
    }
    let v = json(&body);
    assert_eq!(v["model"], model, "{v}");
    let text = v["choices"][0]["text"].as_str().expect("text").to_owned();
    (code, text, v["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().expect("logprob"))
}

fn models(addr: &str) -> Vec<String> {
    let (code, body) = http(addr, "GET", "/v1/models", None);
    assert_eq!(code, 200, "{body}");
    json(&body)["data"].as_array().expect("data").iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

fn copy_adapter(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

/// Waits up to 30 s for `ok` to hold.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(30), "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn named_adapters_answer_as_their_own_models_and_share_a_batch() {
    let env = Env::new();
    let config = config(&env);
    let (peft, trained) = (fixture("peft_smollm2"), fixture("medtune_adapter"));
    let (peft_arg, trained_arg) = (format!("peft={}", peft.display()), format!("trained={}", trained.display()));
    let server =
        spawn(&env, &["serve", "-c", &config, "--addr", "127.0.0.1:0", "--base", "--adapter", &peft_arg, "--adapter", &trained_arg]);
    let addr = server.addr.as_str();
    wait_healthy(addr);
    assert_eq!(models(addr), ["test", "peft", "trained"]);

    // one at a time: three different models
    let alone: Vec<(u16, String, f64)> = ["test", "peft", "trained"].iter().map(|m| complete(addr, m)).collect();
    for (m, (code, text, _)) in ["test", "peft", "trained"].iter().zip(&alone) {
        assert_eq!(*code, 200, "{m}: {text}");
    }
    let lp: Vec<f64> = alone.iter().map(|a| a.2).collect();
    eprintln!("first-token log-probabilities alone (test, peft, trained): {lp:?}");
    assert!((lp[0] - lp[1]).abs() > 0.1 && (lp[0] - lp[2]).abs() > 0.1 && (lp[1] - lp[2]).abs() > 0.1, "{lp:?}");

    // together: the three in flight at once, twice over, share steps and get the same text;
    // the log-probabilities move a little (a step of 4 rows or more multiplies the dense
    // copies, one row the quantized kernels, which round activations), but each stays
    // nearest its own model's
    let together: Vec<(u16, String, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            ["test", "peft", "trained", "test", "peft", "trained"].iter().map(|m| s.spawn(move || complete(addr, m))).collect();
        handles.into_iter().map(|h| h.join().expect("client")).collect()
    });
    for (i, got) in together.iter().enumerate() {
        let want = &alone[i % 3];
        assert_eq!((got.0, &got.1), (want.0, &want.1), "request {i} batched with other adapters");
        let nearest = (0..3).min_by(|&a, &b| (got.2 - lp[a]).abs().total_cmp(&(got.2 - lp[b]).abs()));
        assert_eq!(nearest, Some(i % 3), "request {i}: logprob {} nearest another model's (alone: {lp:?})", got.2);
    }

    // an unknown model: 404 in OpenAI's shape, listing those served
    let (code, body) = http(addr, "POST", "/v1/completions", Some(r#"{"model": "nope", "prompt": "x", "max_tokens": 1}"#));
    assert_eq!(code, 404, "{body}");
    let e = json(&body);
    assert_eq!(e["error"]["type"], "model_not_found", "{e}");
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("\"peft\"") && m.contains("\"trained\"")), "{e}");

    // /v1/answer takes the model too
    let ask = |model: &str| {
        let body = serde_json::json!({"model": model, "question": "Does aspirin reduce the risk of heart attack?"}).to_string();
        let (code, body) = http(addr, "POST", "/v1/answer", Some(&body));
        assert_eq!(code, 200, "{body}");
        let a = json(&body);
        assert_eq!(a["model"], model);
        a["probabilities"]["yes"].as_f64().expect("p")
    };
    assert!((ask("test") - ask("trained")).abs() > 1e-4, "the adapter does not change /v1/answer");
}

#[test]
fn a_watched_adapters_folder_adds_replaces_and_removes_models_while_serving() {
    let env = Env::new();
    let config = config(&env);
    let (peft, trained) = (fixture("peft_smollm2"), fixture("medtune_adapter"));
    let dir = env.path("adapters");
    copy_adapter(&peft, &dir.join("a"));
    std::fs::create_dir_all(dir.join("broken")).expect("mkdir");
    std::fs::write(dir.join("broken/adapter_config.json"), "{not json").expect("write");
    let server = spawn(&env, &["serve", "-c", &config, "--addr", "127.0.0.1:0", "--base", "--adapters-dir", dir.to_str().expect("utf-8")]);
    let addr = server.addr.as_str();
    wait_healthy(addr);
    assert_eq!(models(addr), ["test", "a"], "the broken adapter is left out, the good one served");
    let (code, _, peft_lp) = complete(addr, "a");
    assert_eq!(code, 200);

    // clients keep asking for "a" while the folder changes: none may fail
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut failed = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, text, _) = complete(addr, "a");
                if code != 200 {
                    failed.push(format!("{code} {text}"));
                }
            }
            failed
        });
        // added
        copy_adapter(&trained, &dir.join("b"));
        eventually("b added", || models(addr).contains(&"b".to_owned()));
        let (code, _, trained_lp) = complete(addr, "b");
        assert_eq!(code, 200);
        assert!((trained_lp - peft_lp).abs() > 1e-3);
        // replaced: "a" now answers as the trained adapter does
        let staged = env.path("staged");
        copy_adapter(&trained, &staged);
        std::fs::remove_dir_all(dir.join("a")).expect("rm");
        std::fs::rename(&staged, dir.join("a")).expect("rename");
        eventually("a replaced", || {
            let (code, _, lp) = complete(addr, "a");
            code == 200 && (lp - trained_lp).abs() < 1e-4
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().expect("client")
    });
    // the replacement may leave "a" missing for an instant (removed, then renamed in): a
    // request in that gap is a 404, never a failure of one in flight
    assert!(failures.iter().all(|f| f.starts_with("404")), "{failures:?}");

    // removed
    std::fs::remove_dir_all(dir.join("b")).expect("rm");
    eventually("b removed", || !models(addr).contains(&"b".to_owned()));
    assert_eq!(complete(addr, "b").0, 404);
}

/// What cannot be served is refused by name before listening.
#[test]
fn adapters_the_server_cannot_serve_are_refused_by_name() {
    let env = Env::new();
    let config = config(&env);
    let peft = format!("peft={}", fixture("peft_smollm2").display());
    env.run(&["serve", "-c", &config, "--engine", "ort", "--adapter", &peft]).expect_code(1).stderr_has("need --engine candle");
    env.run(&["serve", "-c", &config, "--adapters-dir", "missing"]).expect_code(1).stderr_has("missing does not exist");
    env.run(&["serve", "-c", &config, "--base", "--adapter", "some/dir"]).expect_code(1).stderr_has("none with --base");
    // an adapter that does not load: the server reports it as failed, naming it
    let server = spawn(&env, &["serve", "-c", &config, "--addr", "127.0.0.1:0", "--base", "--adapter", "gone=nowhere"]);
    let t = Instant::now();
    loop {
        let (code, body) = http(&server.addr, "GET", "/health", None);
        assert_eq!(code, 503, "{body}");
        if json(&body)["status"] == "failed" {
            assert!(json(&body)["error"].as_str().is_some_and(|e| e.contains("--adapter gone=nowhere")), "{body}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no failure reported");
        std::thread::sleep(Duration::from_millis(50));
    }
}
