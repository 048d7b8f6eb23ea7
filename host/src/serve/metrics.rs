//! Prometheus metrics in the text exposition format: requests and errors by endpoint and
//! status, requests abandoned (client gone, deadline), queue depth and running model calls,
//! latency, time to first token and per-token histograms whose buckets reach the request
//! time limit, tokens, and time spent in each plugin.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::model::{Finish, Generation};

/// Latency buckets, seconds, below the time limit (which is the last bucket).
const BUCKETS: [f64; 16] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// One histogram: counts per bucket, count, sum.
#[derive(Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], x: f64) {
        self.buckets.resize(bounds.len(), 0);
        for (b, &le) in self.buckets.iter_mut().zip(bounds) {
            if x <= le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += x;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, le) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {b}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    first_token: Histogram,
    per_token: Histogram,
    abandoned: BTreeMap<&'static str, u64>,
    generations: BTreeMap<&'static str, u64>,
    tokens: BTreeMap<&'static str, u64>,
    plugin_seconds: BTreeMap<String, f64>,
}

/// The server's counters.
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Histogram bounds, seconds: [`BUCKETS`] below the time limit, then the limit.
    bounds: Vec<f64>,
    /// Per-token latency bounds, seconds.
    token_bounds: Vec<f64>,
}

impl Metrics {
    /// Counters for a server whose requests may take up to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let limit = timeout.as_secs_f64();
        let mut bounds: Vec<f64> = BUCKETS.iter().copied().filter(|&b| b < limit).collect();
        bounds.push(limit);
        let token_bounds = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Self { inner: Mutex::default(), bounds, token_bounds }
    }

    /// A request given up before its answer: `client_gone` or `timeout`.
    pub fn abandoned(&self, reason: &'static str) {
        self.with(|m| *m.abandoned.entry(reason).or_default() += 1);
    }

    /// Seconds from a generation's start to its first piece of text.
    pub fn first_token(&self, seconds: f64) {
        let bounds = &self.bounds;
        self.with(|m| m.first_token.observe(bounds, seconds));
    }

    /// A finished generation: why it ended, its tokens and its time per generated token.
    pub fn generation(&self, g: &Generation) {
        let bounds = &self.token_bounds;
        let finish = match g.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
            Finish::TimedOut => "timed_out",
        };
        self.with(|m| {
            *m.generations.entry(finish).or_default() += 1;
            *m.tokens.entry("prompt").or_default() += g.prompt_tokens as u64;
            *m.tokens.entry("completion").or_default() += g.generated_tokens as u64;
            if g.generated_tokens > 0 {
                m.per_token.observe(bounds, g.generate_secs / g.generated_tokens as f64);
            }
        });
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut m) = self.inner.lock() {
            f(&mut m);
        }
    }

    /// One finished request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let bounds = &self.bounds;
        self.with(|m| {
            *m.requests.entry((endpoint.to_owned(), status)).or_default() += 1;
            m.latency.entry(endpoint.to_owned()).or_default().observe(bounds, seconds);
        });
    }

    /// Tokens read (`prompt`) or generated (`completion`).
    pub fn tokens(&self, kind: &'static str, n: usize) {
        self.with(|m| *m.tokens.entry(kind).or_default() += n as u64);
    }

    /// Time spent in a plugin.
    pub fn plugin(&self, id: &str, seconds: f64) {
        self.with(|m| *m.plugin_seconds.entry(id.to_owned()).or_default() += seconds);
    }

    /// The exposition text, with the gauges the server reads at the time: requests admitted
    /// and waiting (`queued`), model calls running.
    pub fn render(&self, queued: usize, running: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP medtune_queue_depth Requests admitted and waiting for the model.\n# TYPE medtune_queue_depth gauge\nmedtune_queue_depth {queued}"
        );
        let _ = writeln!(out, "# HELP medtune_running Model calls running.\n# TYPE medtune_running gauge\nmedtune_running {running}");
        self.with(|m| {
            out.push_str("# HELP medtune_requests_total Requests by endpoint and status.\n# TYPE medtune_requests_total counter\n");
            for ((e, s), n) in &m.requests {
                let _ = writeln!(out, "medtune_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}");
            }
            out.push_str(
                "# HELP medtune_errors_total Requests answered with an error status, by endpoint.\n# TYPE medtune_errors_total counter\n",
            );
            let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
            for ((e, s), n) in &m.requests {
                if *s >= 400 {
                    *errors.entry(e).or_default() += n;
                }
            }
            for (e, n) in errors {
                let _ = writeln!(out, "medtune_errors_total{{endpoint=\"{e}\"}} {n}");
            }
            out.push_str("# HELP medtune_abandoned_total Requests given up before their answer, by reason.\n# TYPE medtune_abandoned_total counter\n");
            for (r, n) in &m.abandoned {
                let _ = writeln!(out, "medtune_abandoned_total{{reason=\"{r}\"}} {n}");
            }
            out.push_str("# HELP medtune_generations_total Generations by how they ended.\n# TYPE medtune_generations_total counter\n");
            for (f, n) in &m.generations {
                let _ = writeln!(out, "medtune_generations_total{{finish=\"{f}\"}} {n}");
            }
            out.push_str("# HELP medtune_request_seconds Request latency.\n# TYPE medtune_request_seconds histogram\n");
            for (e, h) in &m.latency {
                h.render(&mut out, "medtune_request_seconds", &format!("endpoint=\"{e}\""), &self.bounds);
            }
            out.push_str("# HELP medtune_first_token_seconds Time to the first piece of streamed text.\n# TYPE medtune_first_token_seconds histogram\n");
            m.first_token.render(&mut out, "medtune_first_token_seconds", "", &self.bounds);
            out.push_str("# HELP medtune_token_seconds Time per generated token, per generation.\n# TYPE medtune_token_seconds histogram\n");
            m.per_token.render(&mut out, "medtune_token_seconds", "", &self.token_bounds);
            out.push_str("# HELP medtune_tokens_total Tokens read and generated.\n# TYPE medtune_tokens_total counter\n");
            for (k, n) in &m.tokens {
                let _ = writeln!(out, "medtune_tokens_total{{kind=\"{k}\"}} {n}");
            }
            out.push_str("# HELP medtune_plugin_seconds_total Time spent in each plugin.\n# TYPE medtune_plugin_seconds_total counter\n");
            for (p, s) in &m.plugin_seconds {
                let _ = writeln!(out, "medtune_plugin_seconds_total{{plugin=\"{p}\"}} {s}");
            }
        });
        out
    }
}
