//! The export stage: the model with its adapter merged, written as ONNX with a KV cache
//! (`crate::export`), its config and tokenizer beside it, then checked on ONNX Runtime
//! against candle's answer probabilities.

use std::path::PathBuf;
use std::time::Instant;

use super::{Context, PipelineError, Progress, Result, StageResult, default_adapter, load_model, merge_adapter, ort_engine};
use crate::config::{Config, Device};
use crate::engine::Engine;
use crate::export::Precision;
use crate::model::Tokenizer;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// The output folder (default: `runs/<name>/onnx`).
    pub out: Option<PathBuf>,
    /// The adapter to merge (default: `runs/<name>/adapter` when it exists).
    pub adapter: Option<PathBuf>,
    /// Export the base model without an adapter.
    pub base: bool,
    /// How the linear layers are stored.
    pub precision: Precision,
}

/// ONNX Runtime's answer beside candle's on one prompt.
#[derive(Debug, Clone)]
pub struct OrtCheck {
    /// ONNX Runtime's yes/no/maybe probabilities.
    pub ort: Vec<f64>,
    /// candle's.
    pub candle: Vec<f64>,
    /// The largest difference.
    pub max_difference: f64,
}

/// What the export stage wrote.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Decoder layers exported.
    pub layers: usize,
    /// Bytes of the `.onnx` file.
    pub bytes: usize,
    /// The adapter merged, if any.
    pub adapter: Option<PathBuf>,
    /// Seconds the export took.
    pub seconds: f64,
    /// The check on ONNX Runtime.
    pub check: OrtCheck,
}

/// How many training prompts calibrate the int8 export's smoothing scales.
const CALIBRATION_PROMPTS: usize = 32;

/// The prompt ONNX Runtime and candle must agree on.
const CHECK_PROMPT: &str = "Context: Aspirin inhibits platelet aggregation.\nQuestion: Is aspirin an antiplatelet drug?\nAnswer:";

/// Exports `config`'s model (on the CPU) as `request` says, and checks the export on ONNX
/// Runtime: it must load without warnings and give candle's answer probabilities within the
/// precision's tolerance.
pub fn export(config: &Config, request: &ExportRequest, progress: &mut dyn Progress) -> Result<ExportOutcome> {
    let mut config = config.clone();
    config.model.device = Device::Cpu;
    let out = request.out.clone().unwrap_or_else(|| config.run_dir().join("onnx"));
    let (_, mut m) = load_model(&config)?;
    let adapter = default_adapter(&config, request.adapter.as_deref(), request.base);
    if let Some(dir) = &adapter {
        merge_adapter(&mut m, dir)?;
    }
    std::fs::create_dir_all(&out).context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let calibration = if request.precision == Precision::Int8 { calibration_prompts(&config, &m.tokenizer)? } else { Vec::new() };
    let path = out.join("model.onnx");
    let e =
        crate::export::export(&m.llama, &path, request.precision, &calibration).context(|| format!("exporting to {}", out.display()))?;
    crate::model::write_config(m.llama.config(), &out.join("config.json")).context(|| format!("writing {}", out.display()))?;
    m.tokenizer.save(&out).context(|| format!("writing {}", out.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    // the check: ONNX Runtime loads it and gives candle's answer probabilities
    let ort = ort_engine(&config.work_dir(), &out)?;
    let ids = m.tokenizer.encode(CHECK_PROMPT).context(|| "tokenizing the check prompt".into())?;
    // the check prompt is PubMedQA's, whatever the task: the graph is checked, not the task
    let labels = crate::prompt::Choices::pubmedqa(&m.tokenizer).context(|| "the answer tokens".into())?.tokens;
    let candle = Engine::Candle(m);
    let a = candle.answer(&ids, &labels, None).map_err(PipelineError::Stopped)?;
    let b = ort.answer(&ids, &labels, None).map_err(PipelineError::Stopped)?;
    let max_difference = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f64, f64::max);
    let tolerance = match request.precision {
        Precision::F32 => 1e-3,
        Precision::F16 => 2e-2,
        Precision::Int8 => 0.15,
    };
    let warnings = crate::export::ort_warnings();
    if !warnings.is_empty() {
        return Err(PipelineError::Stopped(format!("ONNX Runtime warned while loading the graph:\n{}", warnings.join("\n"))));
    }
    if max_difference > tolerance {
        return Err(PipelineError::Stopped(format!(
            "ONNX Runtime and candle disagree by {max_difference:.2e} (tolerance {tolerance:.0e}): yes/no/maybe {:.4}/{:.4}/{:.4} against candle's {:.4}/{:.4}/{:.4}",
            b[0], b[1], b[2], a[0], a[1], a[2]
        )));
    }
    let exported =
        ExportOutcome { path, layers: e.layers, bytes: e.bytes, adapter, seconds, check: OrtCheck { ort: b, candle: a, max_difference } };
    progress.finished(StageResult::Export(&exported));
    Ok(exported)
}

/// The first training prompts, as the trainer builds them: what the int8 export calibrates on.
fn calibration_prompts(config: &Config, tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    let path = config.work_dir().join("data/processed/train.jsonl");
    let (records, _) = crate::data::read_jsonl(&path).context(|| {
        format!(
            "{}: the int8 export calibrates on the training prompts; run the data stage first (`medtune data --config {}`)",
            path.display(),
            config.path.display()
        )
    })?;
    let opts = crate::prompt::PromptOptions::of(config.train.as_ref());
    let choices =
        crate::prompt::Choices::new(&crate::artifacts::TaskLabels::of(config).labels, tokenizer).context(|| "the answer tokens".into())?;
    let prompts: Vec<Vec<u32>> = records
        .iter()
        .filter_map(|r| crate::train::examples::example(r, tokenizer, opts, &choices).ok())
        .map(|e| e.prompt)
        .take(CALIBRATION_PROMPTS)
        .collect();
    if prompts.is_empty() {
        return Err(PipelineError::Stopped(format!("{}: no record makes a prompt to calibrate the int8 export on", path.display())));
    }
    Ok(prompts)
}
