//! The model, training, evaluation and export sections of a run's config, with their defaults and
//! range checks (done before any work starts).

use serde::{Deserialize, Serialize};

use super::values::{AnswerLoss, Balance, ContextKeep, Device, Schedule, Select, TrainData};
use crate::data::Split;
use crate::export::Precision;

/// `[model]`: what is fine-tuned, where, and how the frozen base is stored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A `.gguf` file, a Hugging Face checkpoint folder, or `smollm2` (the packaged default).
    #[serde(default = "smollm2")]
    pub path: String,
    /// `cpu` or `cuda` (a build with the `cuda` feature).
    #[serde(default)]
    pub device: Device,
    /// The frozen base: `keep` (as stored: a GGUF's own 4/8-bit blocks, no second rounding;
    /// f32 for dense checkpoints) or `nf4` (NF4 with double quantization, as QLoRA).
    #[serde(default)]
    pub base: BaseFormat,
    /// On CUDA, f32 matrix products on the tensor cores in TF32 (10-bit mantissa inputs, f32
    /// accumulation): several times faster, results within ~1e-3 of the CPU's instead of ~1e-5.
    #[serde(default)]
    pub tf32: bool,
    /// The dtype activations flow in while training: `f32`, or `bf16` (half the activation
    /// memory; on a GPU the products run on bf16 tensor cores). Adapters stay f32.
    #[serde(default)]
    pub compute_dtype: ComputeDtype,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { path: smollm2(), device: Device::Cpu, base: BaseFormat::default(), tf32: false, compute_dtype: ComputeDtype::default() }
    }
}

fn smollm2() -> String {
    "smollm2".into()
}

/// How the frozen base weights are stored while training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseFormat {
    /// As the checkpoint stores them.
    #[default]
    Keep,
    /// NF4 with double quantization.
    Nf4,
}

/// The dtype of activations in training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 activations, f32 adapters, logits and losses.
    Bf16,
}

impl ComputeDtype {
    /// As a candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            ComputeDtype::F32 => candle_core::DType::F32,
            ComputeDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// `[train]`: the QLoRA fine-tune.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training records: `augmented` (the training split plus what the augmenters made) or
    /// `processed` (the training split only).
    #[serde(default)]
    pub data: TrainData,
    /// Passes over the training records.
    #[serde(default = "one")]
    pub epochs: usize,
    /// Stop after this many optimizer steps (the schedule spans them); 0: run every epoch.
    #[serde(default)]
    pub max_steps: usize,
    /// Examples per forward pass.
    #[serde(default = "four")]
    pub batch_size: usize,
    /// Forward passes per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Longest prompt in tokens (the context is cut to fit).
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Peak learning rate.
    #[serde(default = "lr")]
    pub lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Decay after warm-up: `cosine`, `linear` or `constant`.
    #[serde(default)]
    pub schedule: Schedule,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[serde(default = "one_f")]
    pub max_grad_norm: f64,
    /// Label balancing in the loss: `none` or `weights` (inverse class frequency). Balancing by
    /// sampling is the `label-balancer` augmenter's job.
    #[serde(default)]
    pub balance: Balance,
    /// Seed of the adapters' initialization, the data order and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: usize,
    /// Evaluate on the dev split every this many steps for the plot (0: never).
    #[serde(default)]
    pub eval_every: usize,
    /// Which part of a context too long for `max_len` stays: `start` or `end` (where the
    /// results are).
    #[serde(default)]
    pub context_keep: ContextKeep,
    /// Which adapter the run ends with: `last` (the last step's) or `best-dev` (the one with
    /// the best dev macro-F1 among the `eval_every` evaluations).
    #[serde(default)]
    pub select: Select,
    /// Write the disambiguator's expansions after abbreviations in the prompt.
    #[serde(default = "yes")]
    pub expand_abbreviations: bool,
    /// Also train on each training record with its abstract's conclusion (PubMedQA's long
    /// answer) written after the context: PubMedQA's reasoning-free setting, as extra
    /// examples beside the usual ones. Dev and test prompts never hold a conclusion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_conclusions: bool,
    /// The answer's loss: `token` (the cross-entropy of the answer token over the whole
    /// vocabulary) or `choice` (over the three answer tokens only: the choice evaluation
    /// makes).
    #[serde(default, skip_serializing_if = "AnswerLoss::is_token")]
    pub loss: AnswerLoss,
    /// Also train the model to write the abstract's conclusion (PubMedQA's long answer) after
    /// its answer: the mean cross-entropy of those tokens, times this weight, is added to the
    /// answer's loss (0: off). The conclusion is a target, never an input: the prompts are
    /// the ones dev and test see.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conclusion_weight: f64,
    /// The memory mode: keep only each block's input in forward and run the block again in
    /// backward (as gradient checkpointing), trading about one more forward pass for most of
    /// the activations' memory.
    #[serde(default)]
    pub recompute: bool,
    /// A `generate` task packs its examples into rows of `max_len` tokens (each example with
    /// its own positions and attending only to itself) instead of padding each to the longest
    /// of its batch; `batch_size` then counts rows. Unset: on for `generate`; a `choice` task
    /// (one answer per row) refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<bool>,
    /// Data parallelism: this many GPUs, one process each, every optimizer step's
    /// micro-batches shared among them (`grad_accum` must be a multiple) and the adapters'
    /// gradients summed over NCCL. Unset: one process on GPU 0, no NCCL. Not part of the run's
    /// fingerprint: a checkpoint resumes on any number of GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<usize>,
    /// LoRA.
    #[serde(default)]
    pub lora: LoraSection,
}

/// `[train.lora]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank.
    #[serde(default = "rank")]
    pub r: usize,
    /// Scale numerator (`alpha / r`).
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Dropout on the adapters' input.
    #[serde(default = "dropout")]
    pub dropout: f32,
    /// Target modules (default: all linear layers).
    #[serde(default = "targets")]
    pub targets: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self { r: rank(), alpha: alpha(), dropout: dropout(), targets: targets() }
    }
}

/// `[eval]`: scoring on a held-out split through the chain's metric plugins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The split: `test` (the official 500) or `dev`.
    #[serde(default = "test")]
    pub split: Split,
    /// Score only the first N questions (0: all).
    #[serde(default)]
    pub limit: usize,
    /// Questions whose concepts appear in at most this many training records are tagged
    /// `rare-concept` for the metrics.
    #[serde(default = "one")]
    pub rare_max_count: usize,
    /// Reference figures shown beside ours in the report (e.g. the Hugging Face baseline).
    #[serde(default)]
    pub baseline: std::collections::BTreeMap<String, f64>,
    /// The longest answer a `generate` task's evaluation writes, in tokens (greedy decoding).
    #[serde(default = "max_new_tokens")]
    pub max_new_tokens: usize,
}

fn max_new_tokens() -> usize {
    96
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { split: test(), limit: 0, rare_max_count: 1, baseline: Default::default(), max_new_tokens: max_new_tokens() }
    }
}

/// `[export]`: the ONNX export stage of `medtune run`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The linear layers: `f32`, `f16` (stored) or `int8` (dynamic quantization).
    #[serde(default)]
    pub precision: Precision,
}

pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn four() -> usize {
    4
}
fn max_len() -> usize {
    512
}
fn lr() -> f64 {
    2e-4
}
fn checkpoint_every() -> usize {
    50
}
fn rank() -> usize {
    16
}
fn alpha() -> f64 {
    32.0
}
fn dropout() -> f32 {
    0.05
}
fn targets() -> Vec<String> {
    LORA_TARGETS.map(String::from).to_vec()
}
fn test() -> Split {
    Split::Test
}

/// Range checks: (field, message) of the first problem.
pub(super) fn check(model: &ModelConfig, train: Option<&TrainConfig>, eval: Option<&EvalConfig>) -> Result<(), (String, String)> {
    let bad = |f: &str, m: String| Err((f.to_owned(), m));
    if let Some(t) = train {
        for (field, v) in
            [("train.epochs", t.epochs), ("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum), ("train.lora.r", t.lora.r)]
        {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if t.max_len < 16 {
            return bad("train.max_len", format!("{} is too short for a prompt (at least 16)", t.max_len));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("train.lr", format!("{} must be positive", t.lr));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0 && t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return bad("train.weight_decay/max_grad_norm", "must be zero or positive".into());
        }
        if !(t.lora.alpha.is_finite() && t.lora.alpha > 0.0) {
            return bad("train.lora.alpha", format!("{} must be positive", t.lora.alpha));
        }
        if !(0.0..1.0).contains(&t.lora.dropout) {
            return bad("train.lora.dropout", format!("{} must be in [0, 1)", t.lora.dropout));
        }
        if !(t.conclusion_weight.is_finite() && t.conclusion_weight >= 0.0) {
            return bad("train.conclusion_weight", format!("{} must be zero or positive", t.conclusion_weight));
        }
        if let Some(n) = t.gpus {
            if n == 0 {
                return bad("train.gpus", "must be at least 1".into());
            }
            if model.device != Device::Cuda {
                return bad("train.gpus", format!("{n} GPUs need model.device = \"cuda\" (it is \"{}\")", model.device));
            }
            if t.grad_accum % n != 0 {
                return bad(
                    "train.gpus",
                    format!(
                        "train.grad_accum = {} is not a multiple of {n}: each GPU takes grad_accum / gpus of a step's micro-batches, so that the step is the one a single GPU takes",
                        t.grad_accum
                    ),
                );
            }
        }
        if t.select == Select::BestDev && t.eval_every == 0 {
            return bad("train.select", "best-dev needs train.eval_every > 0".into());
        }
        if t.lora.targets.is_empty() {
            return bad("train.lora.targets", "names no module".into());
        }
        if let Some(bad_t) = t.lora.targets.iter().find(|m| !LORA_TARGETS.contains(&m.as_str())) {
            return bad("train.lora.targets", format!("unknown module {bad_t:?} (known: {})", LORA_TARGETS.join(", ")));
        }
    }
    if let Some(e) = eval
        && e.split == Split::Train
    {
        return bad("eval.split", "\"train\" is not held out: use \"test\" or \"dev\"".into());
    }
    Ok(())
}
