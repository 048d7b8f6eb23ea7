//! `medtune data`: the data stage with a summary.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::data;
use crate::plugin::PluginEngine;

use super::EXIT_PARTIAL;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    if let Some(opts) = config.vocab_options() {
        super::vocab::ensure(&opts).context("vocabulary stage")?;
    }
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("data  {spinner} {pos} records through the plugin chain  {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()));
    let report = data::run(&config, engine, |done, swaps| {
        for line in swaps {
            bar.suspend(|| tracing::warn!("{line}"));
        }
        bar.set_position(done as u64);
    })
    .with_context(|| format!("data stage of {}", config_path.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!("data stage: {} records in {secs:.2} s ({:.0} records/s)", report.records, report.records as f64 / secs.max(1e-9));
    for p in &report.plugins {
        println!("  plugin {p}");
    }
    for (id, t) in &report.chain.plugin_time {
        println!("  {id}: {:.1} ms in plugin calls", t.as_secs_f64() * 1e3);
    }
    for (split, n) in &report.splits {
        println!("  {split}: {n} records");
    }
    for (id, n, t) in &report.augmented.per_plugin {
        println!("  {id}: {n} new training records ({:.1} ms in plugin calls)", t.as_secs_f64() * 1e3);
    }
    for path in &report.outputs {
        println!("  wrote {}", path.display());
    }
    if !report.has_errors() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &report.input_errors {
        eprintln!("error: {e}");
    }
    for f in report.chain.failures.iter().chain(&report.augmented.failures) {
        eprintln!("error: {f}");
    }
    eprintln!(
        "{} input error(s), {} record(s) failed in plugins{}; failed records are kept in the output, marked",
        report.input_errors.len(),
        report.chain.failed_records,
        if report.chain.stopped { "; stopped early (on_error = \"stop\")" } else { "" }
    );
    Ok(ExitCode::from(EXIT_PARTIAL))
}
