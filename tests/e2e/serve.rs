//! `medtune serve`: a real server on loopback (the real SmolLM2 on the CPU, the test
//! plugin chain): every endpoint, bad input answered with the right 4xx and a JSON error, a
//! bounded load test, the queue limit, the time limit, a plugin swapped while requests are
//! in flight, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, guest};

/// One HTTP/1.1 exchange (`Connection: close`): status and body (chunked bodies decoded).
pub(crate) fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &Env, config: &str, extra: &[&str]) -> Server {
    let mut args = vec!["serve", "-c", config, "--addr", "127.0.0.1:0", "--base"];
    args.extend_from_slice(extra);
    spawn(env, &args)
}

/// `medtune` with `args` (a `serve` command line), once it prints its address.
pub(crate) fn spawn(env: &Env, args: &[&str]) -> Server {
    let mut child = env.command(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn medtune serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the address");
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_owned();
    Server { child, addr }
}

pub(crate) fn wait_healthy(addr: &str) -> Vec<u16> {
    let mut seen = Vec::new();
    let t = Instant::now();
    loop {
        let (code, body) = http(addr, "GET", "/health", None);
        seen.push(code);
        if code == 200 {
            assert_eq!(json(&body)["status"], "ok");
            return seen;
        }
        assert_eq!(code, 503, "{body}");
        assert!(t.elapsed() < Duration::from_secs(60), "not healthy within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_answers_limits_and_swaps_plugins_while_serving() {
    let env = Env::new();
    std::fs::create_dir(env.path("plugins")).expect("mkdir");
    std::fs::copy(guest("tagger_v1"), env.path("plugins/tagger.wasm")).expect("copy v1");
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let vocab = crate::harness::repo().join("tests/fixtures/vocab");
    let config = env.config(
        &input,
        &format!(
            "[plugins]\ndirs = [\"plugins\"]\n\n[[plugins.chain]]\nname = \"tagger\"\nkind = \"normalizer\"\n\n[[plugins.chain]]\nname = \"abbreviation-disambiguator\"\nkind = \"disambiguator\"\ngrants = {{ \"/vocab\" = {:?} }}\n",
            vocab.display().to_string()
        ),
    );
    let config = config.to_str().expect("utf-8");
    let server = start(&env, config, &["--queue", "4", "--max-tokens", "32"]);
    let addr = server.addr.as_str();
    let health = wait_healthy(addr);
    assert_eq!(*health.last().expect("seen"), 200);

    // endpoints
    let (code, body) = http(addr, "GET", "/v1/models", None);
    assert_eq!((code, json(&body)["data"][0]["id"].as_str()), (200, Some("test")));
    let ask = r#"{"question": "Does aspirin reduce the risk of MI after surgery?", "context": "Aspirin given before surgery reduced myocardial infarction (MI) rates."}"#;
    let (code, body) = http(addr, "POST", "/v1/answer", Some(ask));
    assert_eq!(code, 200, "{body}");
    let a = json(&body);
    assert!(["yes", "no", "maybe"].contains(&a["answer"].as_str().unwrap_or("")), "{a}");
    let p: f64 = ["yes", "no", "maybe"].iter().map(|k| a["probabilities"][k].as_f64().expect("probability")).sum();
    assert!((p - 1.0).abs() < 1e-4, "{a}");
    assert!(a["plugins"].as_array().is_some_and(|p| p.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with("tagger@1.0.0")))), "{a}");
    assert!(a["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 10), "{a}");
    assert!(
        a["expansions"].as_array().is_some_and(|e| e.iter().any(|x| x["abbreviation"] == "MI")),
        "the disambiguator's expansion is missing: {a}"
    );
    let chat = r#"{"model": "test", "messages": [{"role": "user", "content": "What is aspirin?"}], "max_tokens": 8}"#;
    let (code, body) = http(addr, "POST", "/v1/chat/completions", Some(chat));
    assert_eq!(code, 200, "{body}");
    let c = json(&body);
    assert_eq!(c["object"], "chat.completion");
    assert!(c["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)), "{c}");
    let stream = r#"{"model": "test", "messages": [{"role": "user", "content": "What is aspirin?"}], "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true}}"#;
    let (code, body) = http(addr, "POST", "/v1/chat/completions", Some(stream));
    assert_eq!(code, 200, "{body}");
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let last = json(events[events.len() - 2]);
    assert!(last["usage"]["total_tokens"].as_u64().is_some(), "no usage in the last chunk: {body}");
    let text: String =
        events[..events.len() - 1].iter().filter_map(|e| json(e)["choices"][0]["delta"]["content"].as_str().map(String::from)).collect();
    assert_eq!(text, c["choices"][0]["message"]["content"].as_str().expect("content"), "the stream and the plain answer differ");

    // bad input: the right 4xx, a JSON error, and the server keeps serving
    let big = format!(r#"{{"question": "{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/v1/answer", "{not json".into(), 400, "JSON"),
        ("POST", "/v1/answer", r#"{"question": 42}"#.into(), 422, "question"),
        ("POST", "/v1/answer", r#"{"question": "  "}"#.into(), 400, "question is empty"),
        ("POST", "/v1/chat/completions", r#"{"model": "test", "messages": []}"#.into(), 400, "messages is empty"),
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model": "test", "messages": [{"role": "user", "content": ""}]}"#.into(),
            400,
            "messages[0].content is empty",
        ),
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}"#.into(),
            404,
            "unknown model",
        ),
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model": "test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}"#.into(),
            400,
            "max_tokens 1000",
        ),
        ("POST", "/v1/answer", big, 413, "length limit"),
        ("GET", "/v2/nothing", String::new(), 404, "no endpoint"),
        ("GET", "/v1/chat/completions", String::new(), 405, "takes POST"),
        ("POST", "/metrics", String::new(), 405, "takes GET"),
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model": "test", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5}"#.into(),
            400,
            "unknown field \"temprature\"",
        ),
    ];
    for (method, path, body, want, needle) in cases {
        let (code, got) = http(addr, method, path, Some(&body));
        assert_eq!(code, want, "{path} {}: {got}", &body[..body.len().min(60)]);
        let e = json(&got);
        assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains(needle)), "{path}: {e}");
    }

    // a bounded load test: 24 questions at concurrency 4 (the queue admits 4), none failing
    let started = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..6)
                        .map(|_| {
                            let t = Instant::now();
                            let (code, body) = http(addr, "POST", "/v1/answer", Some(ask));
                            assert_eq!(code, 200, "{body}");
                            t.elapsed().as_secs_f64()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("client")).collect()
    });
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "load: 24 requests at concurrency 4 in {:.1} s; p50 {:.0} ms, p95 {:.0} ms",
        started.elapsed().as_secs_f64(),
        latencies[11] * 1e3,
        latencies[22] * 1e3
    );

    // a plugin swapped while requests are in flight: no request fails, later ones use v2
    let swapped = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut versions = Vec::new();
            for _ in 0..40 {
                let (code, body) = http(addr, "POST", "/v1/answer", Some(ask));
                assert_eq!(code, 200, "{body}");
                let plugins = json(&body)["plugins"].to_string();
                versions.push(if plugins.contains("tagger@2.0.0") { 2 } else { 1 });
                if versions.last() == Some(&2) && versions.len() > 3 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            versions
        });
        std::thread::sleep(Duration::from_millis(300));
        let staging = env.write("staging.wasm", std::fs::read(guest("tagger_v2")).expect("v2"));
        std::fs::rename(staging, env.path("plugins/tagger.wasm")).expect("deploy v2");
        client.join().expect("client")
    });
    assert_eq!(swapped.first(), Some(&1), "{swapped:?}");
    assert_eq!(swapped.last(), Some(&2), "v2 never served: {swapped:?}");

    // metrics
    let (code, m) = http(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for needle in [
        "medtune_requests_total{endpoint=\"answer\",status=\"200\"}",
        "medtune_request_seconds_bucket{endpoint=\"answer\"",
        "medtune_tokens_total{kind=\"completion\"}",
        "medtune_errors_total{endpoint=\"chat\"}",
        "medtune_plugin_seconds_total{plugin=\"tagger@",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }

    // SIGTERM: a clean stop
    let mut server = server;
    let pid = server.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let t = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "still running 20 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The queue limit (429) and the time limit (504), each answered as JSON.
#[test]
fn a_full_queue_is_429_and_a_slow_request_is_504() {
    let env = Env::new();
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let config = env.config(&input, "");
    let config = config.to_str().expect("utf-8");
    // The time limit is far above what one request needs even on a loaded 2-core CI machine:
    // this half is about the queue, not the clock.
    let server = start(&env, config, &["--queue", "1", "--max-tokens", "64", "--timeout-ms", "600000"]);
    let addr = server.addr.as_str();
    wait_healthy(addr);
    let long = r#"{"model": "test", "messages": [{"role": "user", "content": "Write a long story about a hospital."}], "max_tokens": 64}"#;
    let codes: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| http(addr, "POST", "/v1/chat/completions", Some(long)))).collect();
        hs.into_iter()
            .map(|h| {
                let (code, body) = h.join().expect("client");
                if code == 429 {
                    assert!(json(&body)["error"]["message"].as_str().is_some_and(|m| m.contains("queue is full")), "{body}");
                }
                code
            })
            .collect()
    });
    assert!(codes.contains(&200) && codes.contains(&429), "{codes:?}");
    drop(server);
    let server = start(&env, config, &["--timeout-ms", "1"]);
    wait_healthy(&server.addr);
    let (code, body) = http(&server.addr, "POST", "/v1/chat/completions", Some(long));
    assert_eq!(code, 504, "{body}");
    assert!(json(&body)["error"]["message"].as_str().is_some_and(|m| m.contains("limit of 1 ms")), "{body}");
}

/// `medtune export` then `serve --engine ort`: ONNX Runtime answers with candle's
/// probabilities, through the same plugin chain.
#[test]
fn the_ort_engine_serves_what_candle_serves() {
    let env = Env::new();
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let config = env.config(&input, "");
    let config = config.to_str().expect("utf-8");
    let onnx = env.path("onnx");
    env.run(&["export", "-c", config, "--base", "--out", onnx.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("checked on ONNX Runtime");
    let ask = r#"{"question": "Does aspirin reduce the risk of heart attack?", "context": "Aspirin reduced myocardial infarction rates in the trial."}"#;
    let mut probs = Vec::new();
    for engine in [vec!["--engine", "candle"], vec!["--engine", "ort", "--onnx", onnx.to_str().expect("utf-8")]] {
        let server = start(&env, config, &engine);
        wait_healthy(&server.addr);
        let (code, body) = http(&server.addr, "POST", "/v1/answer", Some(ask));
        assert_eq!(code, 200, "{body}");
        let a = json(&body);
        assert_eq!(a["engine"], engine[1]);
        probs.push(["yes", "no", "maybe"].map(|k| a["probabilities"][k].as_f64().expect("p")));
    }
    for i in 0..3 {
        assert!((probs[0][i] - probs[1][i]).abs() < 1e-3, "candle {:?} vs ort {:?}", probs[0], probs[1]);
    }
}

/// A client that never finishes its headers is cut off after `--header-timeout-ms`; the
/// others are served meanwhile.
#[test]
fn a_connection_that_stalls_in_its_headers_is_closed() {
    let env = Env::new();
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let config = env.config(&input, "");
    let server = start(&env, config.to_str().expect("utf-8"), &["--header-timeout-ms", "300"]);
    wait_healthy(&server.addr);
    let mut slow = TcpStream::connect(&server.addr).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").expect("half the headers");
    slow.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let t = Instant::now();
    let (code, _) = http(&server.addr, "GET", "/health", None);
    assert_eq!(code, 200, "another client is served while one stalls");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(10), "the stalled connection stayed open {waited:?}");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "a request without its end of headers was answered");
}

/// A plugin that times out on three requests in a row is taken out of the chain: the next
/// requests are answered at once, with a note that names it.
#[test]
fn a_plugin_that_keeps_timing_out_is_taken_out_of_the_chain() {
    let env = Env::new();
    let input = env.write("in.jsonl", crate::harness::jsonl(&[("q1", "first")]));
    let chain = format!(
        "[[plugins.chain]]\nname = \"hostile\"\nkind = \"normalizer\"\npath = {:?}\ntimeout_ms = 400\n",
        guest("hostile").display().to_string()
    );
    let config = env.config(&input, &chain);
    let server = start(&env, config.to_str().expect("utf-8"), &[]);
    wait_healthy(&server.addr);
    let ask = |text: &str| {
        let body = serde_json::json!({"model": "test", "messages": [{"role": "user", "content": text}], "max_tokens": 1}).to_string();
        let t = Instant::now();
        let (code, got) = http(&server.addr, "POST", "/v1/chat/completions", Some(&body));
        assert_eq!(code, 200, "{got}");
        (json(&got)["medtune"]["plugin_failures"].to_string(), t.elapsed())
    };
    for _ in 0..3 {
        let (failures, _) = ask("LOOP forever");
        assert!(failures.contains("timed out"), "{failures}");
    }
    let (failures, took) = ask("LOOP forever");
    assert!(failures.contains("taken out of the chain"), "{failures}");
    assert!(!failures.contains("timed out after"), "the benched plugin was called: {failures}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}
