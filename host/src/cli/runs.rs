//! `medtune runs list` and `medtune runs compare A B`: the runs of a work folder with their
//! figures, and two runs side by side with what differed in their configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use medtune::artifacts::{EvalScores, RunManifest, read_if_any};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The runs in a work folder, with their figures.
    List {
        /// The work folder (a config's `work_dir`).
        #[arg(long, default_value = "work")]
        work: PathBuf,
    },
    /// Two runs side by side: figures, and the config keys that differ.
    Compare {
        /// A run name (in --work) or a run folder.
        a: String,
        /// Another run.
        b: String,
        /// The work folder.
        #[arg(long, default_value = "work")]
        work: PathBuf,
    },
}

/// A run's figures by name (missing ones are absent).
fn figures(dir: &Path) -> BTreeMap<String, f64> {
    let manifest: Option<RunManifest> = read_if_any(&dir.join("manifest.json"));
    let scores: Option<EvalScores> = read_if_any(&dir.join("eval/scores.json"));
    let mut out = BTreeMap::new();
    for k in ["accuracy", "macro_f1", "rare_concept_accuracy", "f1/yes", "f1/no", "f1/maybe"] {
        if let Some(v) = scores.as_ref().and_then(|s| s.score(k)) {
            out.insert(k.to_owned(), v);
        }
    }
    if let Some(o) = manifest.map(|m| m.outcome) {
        let figures = [
            ("steps", o.steps as f64),
            ("tokens_per_s", o.tokens_per_s),
            ("peak_memory_mib", o.peak_memory_mib),
            ("seconds", o.seconds),
            ("examples", o.examples as f64),
        ];
        out.extend(figures.map(|(k, v)| (k.to_owned(), v)));
    }
    if let Some(last) = medtune::train::read_rows(&dir.join("metrics.jsonl")).last() {
        out.insert("last_loss".into(), last.loss);
    }
    out
}

fn fmt(v: Option<&f64>) -> String {
    v.map_or("–".into(), |x| if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x:.4}") })
}

/// The config's keys flattened (`train.lora.r = 16`).
fn flat_config(dir: &Path) -> BTreeMap<String, String> {
    let text = read_if_any::<RunManifest>(&dir.join("manifest.json")).map(|m| m.config.text).unwrap_or_default();
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::from_str::<toml::Value>(&text) {
        flatten("", &v, &mut out);
    }
    out
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            t.iter().for_each(|(k, v)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out))
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            a.iter().enumerate().for_each(|(i, v)| flatten(&format!("{prefix}[{i}]"), v, out))
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

fn run_dir(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(name);
    let dir = if p.join("manifest.json").is_file() { p } else { work.join("runs").join(name) };
    anyhow::ensure!(
        dir.join("manifest.json").is_file(),
        "{}: no run there (no manifest.json); `medtune runs list --work {}` shows the runs",
        dir.display(),
        work.display()
    );
    Ok(dir)
}

pub fn run(cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List { work } => {
            let root = work.join("runs");
            let mut names: Vec<String> = std::fs::read_dir(&root)
                .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("manifest.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            println!("{:<28} {:>7} {:>9} {:>9} {:>10}  adapter", "run", "steps", "accuracy", "macro-F1", "tokens/s");
            for n in &names {
                let dir = root.join(n);
                let f = figures(&dir);
                let adapter = if dir.join("adapter/adapter_model.safetensors").is_file() { "yes" } else { "no (unfinished)" };
                println!(
                    "{n:<28} {:>7} {:>9} {:>9} {:>10}  {adapter}",
                    fmt(f.get("steps")),
                    fmt(f.get("accuracy")),
                    fmt(f.get("macro_f1")),
                    fmt(f.get("tokens_per_s").map(|t| t.round()).as_ref())
                );
            }
            if names.is_empty() {
                println!("(no runs in {})", root.display());
            }
        }
        RunsCommand::Compare { a, b, work } => {
            let (da, db) = (run_dir(&work, &a)?, run_dir(&work, &b)?);
            let (fa, fb) = (figures(&da), figures(&db));
            println!("{:<24} {:>14} {:>14} {:>12}", "figure", a, b, "difference");
            let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
            for k in keys {
                let diff = match (fa.get(k), fb.get(k)) {
                    (Some(x), Some(y)) => format!("{:+.4}", y - x),
                    _ => "–".into(),
                };
                println!("{k:<24} {:>14} {:>14} {diff:>12}", fmt(fa.get(k)), fmt(fb.get(k)));
            }
            let (ca, cb) = (flat_config(&da), flat_config(&db));
            let keys: std::collections::BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
            let differing: Vec<&&String> = keys.iter().filter(|k| ca.get(**k) != cb.get(**k) && **k != "name").collect();
            println!("\nconfig differences ({}):", differing.len());
            for k in differing {
                println!("  {k}: {} -> {}", ca.get(*k).map_or("(unset)", String::as_str), cb.get(*k).map_or("(unset)", String::as_str));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
