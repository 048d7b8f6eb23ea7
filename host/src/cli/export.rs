//! `medtune export`: the config's model with its adapter merged, as an ONNX folder
//! (`model.onnx`, `config.json`, `tokenizer.json`), checked against candle on ONNX Runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::engine::Engine;
use crate::export::Precision;

/// `medtune export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run's TOML config.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The output folder (default: runs/<name>/onnx).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The adapter to merge (default: runs/<name>/adapter when it exists).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Export the base model without an adapter.
    #[arg(long, conflicts_with = "adapter")]
    pub base: bool,
    /// The linear layers: `f32`, `f16` (stored f16, computed f32: half the file) or `int8`
    /// (dynamic quantization, smoothed on training prompts: int8 weights, faster on CPUs,
    /// approximate).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "int8"])]
    pub precision: String,
}

pub fn export_cmd(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config)?;
    config.model.device = "cpu".into();
    let out = args.out.clone().unwrap_or_else(|| config.run_dir().join("onnx"));
    let (_, mut m) = super::train::load_model(&config)?;
    let adapter = super::train::default_adapter(&config, args.adapter.as_deref(), args.base);
    if let Some(dir) = &adapter {
        super::train::merge_adapter(&mut m, dir)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = std::time::Instant::now();
    let precision = match args.precision.as_str() {
        "f16" => Precision::F16,
        "int8" => Precision::Int8,
        _ => Precision::F32,
    };
    let calibration = if precision == Precision::Int8 { calibration_prompts(&config, &m.tokenizer)? } else { Vec::new() };
    let e = crate::export::export(&m.llama, &out.join("model.onnx"), precision, &calibration).with_context(|| format!("exporting to {}", out.display()))?;
    crate::model::write_config(m.llama.config(), &out.join("config.json"))?;
    m.tokenizer.save(&out.join("tokenizer.json"))?;
    println!(
        "exported {} layers{} to {} ({:.1} MB, {:.1} s)",
        e.layers,
        adapter.as_ref().map(|a| format!(" with adapter {}", a.display())).unwrap_or_default(),
        out.join("model.onnx").display(),
        e.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    // the check: ONNX Runtime loads it and gives candle's answer probabilities and logits
    let ort = super::model::ort_engine(&config.work_dir(), &out)?;
    let prompt = "Context: Aspirin inhibits platelet aggregation.\nQuestion: Is aspirin an antiplatelet drug?\nAnswer:";
    let ids = m.tokenizer.encode(prompt)?;
    let labels = crate::train::examples::label_tokens(&m.tokenizer)?;
    let candle = Engine::Candle(m);
    let (a, b) = (candle.answer(&ids, &labels).map_err(anyhow::Error::msg)?, ort.answer(&ids, &labels).map_err(anyhow::Error::msg)?);
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f64, f64::max);
    println!("  checked on ONNX Runtime: yes/no/maybe {:.4}/{:.4}/{:.4} (candle {:.4}/{:.4}/{:.4}), max difference {diff:.1e}", b[0], b[1], b[2], a[0], a[1], a[2]);
    let tolerance = match precision {
        Precision::F32 => 1e-3,
        Precision::F16 => 2e-2,
        Precision::Int8 => 0.15,
    };
    let warnings = crate::export::ort_warnings();
    anyhow::ensure!(warnings.is_empty(), "ONNX Runtime warned while loading the graph:\n{}", warnings.join("\n"));
    anyhow::ensure!(diff <= tolerance, "ONNX Runtime and candle disagree by {diff:.2e} (tolerance {tolerance:.0e})");
    Ok(ExitCode::SUCCESS)
}

/// How many training prompts calibrate the int8 export's smoothing scales.
const CALIBRATION_PROMPTS: usize = 32;

/// The first training prompts, as the trainer builds them: what the int8 export calibrates on.
fn calibration_prompts(config: &Config, tokenizer: &crate::model::Tokenizer) -> anyhow::Result<Vec<Vec<u32>>> {
    let path = config.work_dir().join("data/processed/train.jsonl");
    let (records, _) = crate::data::read_jsonl(&path).with_context(|| {
        format!("{}: the int8 export calibrates on the training prompts; run the data stage first (`medtune data --config {}`)", path.display(), config.path.display())
    })?;
    let opts = crate::train::examples::PromptOptions::of(config.train.as_ref());
    let prompts: Vec<Vec<u32>> =
        records.iter().filter_map(|r| crate::train::examples::example(r, tokenizer, opts).ok()).map(|e| e.prompt).take(CALIBRATION_PROMPTS).collect();
    anyhow::ensure!(!prompts.is_empty(), "{}: no record makes a prompt to calibrate the int8 export on", path.display());
    Ok(prompts)
}
