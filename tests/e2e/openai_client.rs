//! `medtune serve` as OpenAI clients see it: the real `openai` Python client (installed from
//! PyPI into target/pydeps on first use) runs tests/e2e/openai_client.py against a real
//! server; and cancellation: a client that goes away, streaming or not, stops its
//! generation, and a request past its deadline is a 504 that stops generating too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, repo};
use crate::serve::{Server, http, json, spawn, wait_healthy};

/// The `openai` client version the conformance script is written against.
const OPENAI: &str = "3.63.0";

/// A folder holding the `openai` package and its dependencies (pip, from PyPI, once).
fn openai_client() -> PathBuf {
    let dir = repo().join(format!("target/pydeps/openai-{OPENAI}"));
    if dir.join("openai").is_dir() {
        return dir;
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts", "--target"])
        .arg(&partial)
        .arg(format!("openai=={OPENAI}"))
        .output()
        .expect("run pip");
    assert!(out.status.success(), "pip install openai=={OPENAI} failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&partial, &dir).expect("move the installed client in place");
    dir
}

fn server(env: &Env, extra: &[&str]) -> Server {
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let config = env.config(&input, "");
    let mut args = vec!["serve", "-c", config.to_str().expect("utf-8"), "--addr", "127.0.0.1:0", "--base"];
    args.extend_from_slice(extra);
    let server = spawn(env, &args);
    wait_healthy(&server.addr);
    server
}

/// A metric's value (the first line that starts with `name`).
fn metric(addr: &str, name: &str) -> f64 {
    let (_, m) = http(addr, "GET", "/metrics", None);
    m.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits until no model call runs (at most 60 s).
fn idle(addr: &str) {
    let t = Instant::now();
    while metric(addr, "medtune_running ") > 0.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "a model call still runs after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_openai_python_client_gets_what_openai_would_give() {
    let client = openai_client();
    let env = Env::new();
    let server = server(&env, &["--max-tokens", "32"]);
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo().join("tests/e2e/openai_client.py"))
        .args([format!("http://{}", server.addr), "test".into()])
        .env("PYTHONPATH", &client)
        .output()
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

const LONG: &str =
    r#"{"model": "test", "messages": [{"role": "user", "content": "Write a long story about a hospital."}], "max_tokens": 96"#;

#[test]
fn a_client_that_goes_away_stops_its_generation() {
    let env = Env::new();
    let server = server(&env, &["--max-tokens", "96"]);
    let addr = server.addr.as_str();
    // the whole answer, for its length (greedy: the same every time)
    let (code, body) = http(addr, "POST", "/v1/chat/completions", Some(&format!("{LONG}}}")));
    assert_eq!(code, 200, "{body}");
    let full = json(&body)["usage"]["completion_tokens"].as_f64().expect("completion tokens");
    assert!(full > 60.0, "the story is too short to tell a stop: {body}");

    // streaming: read the first piece of text, then hang up
    let before = metric(addr, "medtune_tokens_total{kind=\"completion\"}");
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!("{LONG}, \"stream\": true}}");
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    )
    .expect("send");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    while !line.contains("\"content\":\"") || line.contains("\"content\":\"\"") {
        line.clear();
        assert!(reader.read_line(&mut line).expect("read") > 0, "the stream ended early");
    }
    drop(reader);
    s.shutdown(std::net::Shutdown::Both).expect("hang up");
    drop(s);
    idle(addr);
    let streamed = metric(addr, "medtune_tokens_total{kind=\"completion\"}") - before;
    assert!(streamed < full / 2.0, "{streamed} of {full} tokens generated for a client that left after the first");
    assert_eq!(metric(addr, "medtune_abandoned_total{reason=\"client_gone\"}"), 1.0);
    assert_eq!(metric(addr, "medtune_generations_total{finish=\"cancelled\"}"), 1.0, "the generation did not see the client leave");

    // not streaming: send, wait for the generation to start, hang up
    let before = metric(addr, "medtune_tokens_total{kind=\"completion\"}");
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!("{LONG}}}");
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    )
    .expect("send");
    let t = Instant::now();
    while metric(addr, "medtune_running ") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the generation never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.shutdown(std::net::Shutdown::Both).expect("hang up");
    drop(s);
    idle(addr);
    let plain = metric(addr, "medtune_tokens_total{kind=\"completion\"}") - before;
    assert!(plain < full, "{plain} of {full} tokens generated for a client that left");
    assert_eq!(metric(addr, "medtune_abandoned_total{reason=\"client_gone\"}"), 2.0);
    assert_eq!(metric(addr, "medtune_generations_total{finish=\"cancelled\"}"), 2.0, "the generation did not see the client leave");

    // and the server goes on answering
    let (code, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(r#"{"model": "test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#),
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_request_past_its_deadline_is_504_and_stops_generating() {
    let env = Env::new();
    let server = server(&env, &["--max-tokens", "256", "--timeout-ms", "1500"]);
    let addr = server.addr.as_str();
    for stream in [false, true] {
        let before = metric(addr, "medtune_tokens_total{kind=\"completion\"}");
        let body = format!("{}, \"stream\": {stream}}}", LONG.replace("\"max_tokens\": 96", "\"max_tokens\": 256"));
        let (code, got) = http(addr, "POST", "/v1/chat/completions", Some(&body));
        idle(addr);
        let generated = metric(addr, "medtune_tokens_total{kind=\"completion\"}") - before;
        if stream {
            assert_eq!(code, 200, "{got}");
            let events: Vec<&str> = got.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            assert_eq!(events.last(), Some(&"[DONE]"), "{got}");
            let error = json(events[events.len() - 2]);
            assert_eq!(error["error"]["type"], "timeout", "{got}");
        } else {
            assert_eq!(code, 504, "{got}");
            assert!(json(&got)["error"]["message"].as_str().is_some_and(|m| m.contains("limit of 1500 ms")), "{got}");
        }
        assert!(generated < 256.0, "{generated} tokens generated after a 1.5 s deadline");
    }
    assert_eq!(metric(addr, "medtune_abandoned_total{reason=\"timeout\"}"), 2.0);
    assert_eq!(metric(addr, "medtune_generations_total{finish=\"timed_out\"}"), 2.0, "the generations did not stop at the deadline");
    let mut raw = Vec::new();
    let _ = TcpStream::connect(addr).and_then(|mut s| {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        s.read_to_end(&mut raw)
    });
    let m = String::from_utf8_lossy(&raw);
    assert!(m.contains("medtune_request_seconds_bucket{endpoint=\"chat\",le=\"1.5\"}"), "the latency buckets stop below the limit:\n{m}");
}

/// The bounded load test: 64 requests at concurrency 16 on loopback, one long prompt among
/// them and one client that hangs up: no failure (429 only by design), and the short
/// requests, batched beside the long one as it is read in chunks, are not held behind it.
#[test]
fn sixty_four_requests_at_concurrency_sixteen_with_a_long_prompt_and_a_hang_up() {
    let env = Env::new();
    let server = server(&env, &["--max-tokens", "16", "--queue", "16", "--max-body-bytes", "262144"]);
    let addr = server.addr.as_str();
    let long_text = "The patient was admitted with chest pain and shortness of breath. ".repeat(110);
    let long = serde_json::json!({"model": "test", "messages": [{"role": "user", "content": long_text}], "max_tokens": 16}).to_string();
    let short = |i: usize| {
        format!(
            r#"{{"model": "test", "messages": [{{"role": "user", "content": "Name a symptom of disease number {i}."}}], "max_tokens": 8}}"#
        )
    };
    let started = Instant::now();
    let results: Vec<(usize, u16, f64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|c| {
                let (long, short) = (&long, &short);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for r in 0..4 {
                        let i = c * 4 + r;
                        if i == 5 {
                            // the client that hangs up once its request is in
                            let mut s = TcpStream::connect(addr).expect("connect");
                            let body = short(i);
                            write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                                .expect("send");
                            std::thread::sleep(Duration::from_millis(100));
                            drop(s);
                            continue;
                        }
                        let body = if i == 0 { long.clone() } else { short(i) };
                        let t = Instant::now();
                        let (code, got) = http(addr, "POST", "/v1/chat/completions", Some(&body));
                        out.push((i, code, t.elapsed().as_secs_f64(), got));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("client")).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    for (i, code, _, body) in &results {
        assert!(*code == 200 || *code == 429, "request {i}: {code} {body}");
    }
    let long_latency = results.iter().find(|r| r.0 == 0).map(|r| r.2).expect("the long request");
    assert_eq!(results.iter().find(|r| r.0 == 0).map(|r| r.1), Some(200), "the long request failed");
    let mut shorts: Vec<f64> = results.iter().filter(|r| r.0 != 0 && r.1 == 200).map(|r| r.2).collect();
    shorts.sort_by(f64::total_cmp);
    let p95 = shorts[(shorts.len() * 95 / 100).min(shorts.len() - 1)];
    let refused = results.iter().filter(|r| r.1 == 429).count();
    eprintln!(
        "load: {} answered, {refused} refused (429) in {wall:.1} s; short p50 {:.2} s, p95 {p95:.2} s; the long prompt {long_latency:.2} s",
        shorts.len() + 1,
        shorts[shorts.len() / 2]
    );
    assert!(shorts.len() >= 40, "only {} short requests answered", shorts.len());
    assert!(p95 < long_latency, "short requests' p95 {p95:.2} s is not below the long prompt's {long_latency:.2} s");
    idle(addr);
    assert_eq!(metric(addr, "medtune_queue_depth "), 0.0);
}

/// `serve` needs only the sections it uses: a config with no `[data]` serves; the data stage
/// refuses it by name.
#[test]
fn a_config_without_data_serves_and_the_data_stage_names_what_is_missing() {
    let env = Env::new();
    let config = env.write("config.toml", format!("name = \"test\"\nwork_dir = {:?}\n", env.path("work").display().to_string()));
    let config = config.to_str().expect("utf-8");
    let server = spawn(&env, &["serve", "-c", config, "--addr", "127.0.0.1:0", "--base", "--max-tokens", "4"]);
    wait_healthy(&server.addr);
    let (code, body) =
        http(&server.addr, "POST", "/v1/chat/completions", Some(r#"{"model": "test", "messages": [{"role": "user", "content": "Hi"}]}"#));
    assert_eq!(code, 200, "{body}");
    env.run(&["data", "-c", config]).expect_code(1).stderr_has("data.input: this command reads the data: add a [data] section");
}
