//! Prometheus metrics in the text exposition format: requests and errors by endpoint and
//! status, latency histograms, tokens, and time spent in each plugin.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Latency buckets, seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, ([u64; BUCKETS.len()], u64, f64)>,
    tokens: BTreeMap<&'static str, u64>,
    plugin_seconds: BTreeMap<String, f64>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut m) = self.0.lock() {
            f(&mut m);
        }
    }

    /// One finished request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests.entry((endpoint.to_owned(), status)).or_default() += 1;
            let (buckets, count, sum) = m.latency.entry(endpoint.to_owned()).or_insert(([0; BUCKETS.len()], 0, 0.0));
            for (b, le) in buckets.iter_mut().zip(BUCKETS) {
                if seconds <= le {
                    *b += 1;
                }
            }
            *count += 1;
            *sum += seconds;
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

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
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
            out.push_str("# HELP medtune_request_seconds Request latency.\n# TYPE medtune_request_seconds histogram\n");
            for (e, (buckets, count, sum)) in &m.latency {
                for (b, le) in buckets.iter().zip(BUCKETS) {
                    let _ = writeln!(out, "medtune_request_seconds_bucket{{endpoint=\"{e}\",le=\"{le}\"}} {b}");
                }
                let _ = writeln!(out, "medtune_request_seconds_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "medtune_request_seconds_sum{{endpoint=\"{e}\"}} {sum}");
                let _ = writeln!(out, "medtune_request_seconds_count{{endpoint=\"{e}\"}} {count}");
            }
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
