//! `medtune run`: the whole pipeline of one config — vocabulary, data stage, training,
//! evaluation, ONNX export, report — skipping each stage whose inputs are unchanged, resuming an
//! interrupted training, and ending with a summary.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::config::{Config, OnError};
use crate::pipeline::{self, Stages};

use super::train::{eval_cmd, train_cmd, EvalArgs, TrainArgs};
use super::EXIT_PARTIAL;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let mut stages = Stages::load(&config);
    let mut summary: Vec<(&str, String, f64)> = Vec::new();
    let mut status = ExitCode::SUCCESS;
    let save = |stages: &mut Stages, stage: &str, fp: &str, done: bool| {
        stages.set(&config, stage, fp, done).with_context(|| format!("writing {}", config.run_dir().join("stages.json").display()))
    };

    // data
    let t = Instant::now();
    let data_fp = pipeline::data_fingerprint(&config);
    let processed = config.work_dir().join("data/processed/train.jsonl");
    if stages.done_with("data", &data_fp) && processed.is_file() {
        summary.push(("data", "unchanged, skipped".into(), 0.0));
    } else {
        let code = super::data::run(config_path)?;
        if code != ExitCode::SUCCESS {
            status = ExitCode::from(EXIT_PARTIAL);
            if config.data.on_error == OnError::Stop {
                anyhow::bail!("the data stage stopped on a failed record (on_error = \"stop\"); later stages did not run");
            }
            eprintln!("the data stage reported errors (above); the records that went through go on");
        }
        save(&mut stages, "data", &data_fp, code == ExitCode::SUCCESS)?;
        summary.push(("data", "ran".into(), t.elapsed().as_secs_f64()));
    }

    if config.train.is_some() {
        let t = Instant::now();
        let model = config.model_path().with_context(|| format!("{}: model.path", config.path.display()))?;
        let train_fp = pipeline::train_fingerprint(&config, &data_fp, &model);
        let adapter = config.run_dir().join("adapter/adapter_model.safetensors");
        if stages.done_with("train", &train_fp) && adapter.is_file() {
            summary.push(("train", "unchanged, skipped".into(), 0.0));
        } else {
            // an interrupted training (same config, data and model) continues from its checkpoint
            let resume = crate::train::resumable(&config);
            save(&mut stages, "train", &train_fp, false)?;
            let code = train_cmd(TrainArgs { config: config_path.to_owned(), resume, stop_after: None, gpus: None, rank: None })?;
            if code != ExitCode::SUCCESS {
                status = ExitCode::from(EXIT_PARTIAL);
            }
            save(&mut stages, "train", &train_fp, true)?;
            summary.push(("train", if resume { "resumed from its last checkpoint".into() } else { "ran".into() }, t.elapsed().as_secs_f64()));
        }
        if config.eval.is_some() {
            let t = Instant::now();
            let eval_fp = pipeline::eval_fingerprint(&config, &train_fp);
            if stages.done_with("eval", &eval_fp) && config.run_dir().join("eval/scores.json").is_file() {
                summary.push(("eval", "unchanged, skipped".into(), 0.0));
            } else {
                if eval_cmd(EvalArgs { config: config_path.to_owned(), adapter: None, base: false })? != ExitCode::SUCCESS {
                    status = ExitCode::from(EXIT_PARTIAL);
                }
                save(&mut stages, "eval", &eval_fp, true)?;
                summary.push(("eval", "ran".into(), t.elapsed().as_secs_f64()));
            }
        }
        if let Some(e) = &config.export {
            let t = Instant::now();
            let export_fp = pipeline::export_fingerprint(&config, &train_fp);
            if stages.done_with("export", &export_fp) && config.run_dir().join("onnx/model.onnx").is_file() {
                summary.push(("export", "unchanged, skipped".into(), 0.0));
            } else {
                super::export::export_cmd(super::export::ExportArgs { config: config_path.to_owned(), out: None, adapter: None, base: false, precision: e.precision.clone() })?;
                save(&mut stages, "export", &export_fp, true)?;
                summary.push(("export", "ran".into(), t.elapsed().as_secs_f64()));
            }
        }
        let t = Instant::now();
        let report = crate::report::write(&config).with_context(|| format!("writing the report of {}", config.name))?;
        summary.push(("report", format!("{}", report.display()), t.elapsed().as_secs_f64()));
    }

    println!("run {}:", config.name);
    for (stage, what, secs) in &summary {
        println!("  {stage:<7} {what}{}", if *secs > 0.0 { format!(" ({secs:.1} s)") } else { String::new() });
    }
    Ok(status)
}
