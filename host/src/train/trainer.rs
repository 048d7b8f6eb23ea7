//! The training loop of `medtune train`: examples from the data stage's output, micro-batches
//! with gradient accumulation, clipping, AdamW on the schedule, a metrics row per step,
//! checkpoints, and an exact resume (the data order and dropout masks are functions of the
//! seed and the step, so a resumed run takes the steps an uninterrupted one would).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::config::{AnswerLoss, Balance, Config, Select, TrainConfig};
use crate::data::{pyrandom::PyRandom, read_jsonl};
use crate::model::{LoadedModel, ModelError};

use super::batch::{Batch, LossOptions, sequence_len};
use super::checkpoint;
use super::examples::{Example, conclusion_ids, example, with_conclusion};
use super::lora::{LoraConfig, LoraSet};
use super::optim::{AdamW, clip, learning_rate};
use super::parallel::DataParallel;
use crate::prompt::{Choices, PromptOptions};

/// Why training could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config has no `[train]` section.
    #[error("{0}: no [train] section")]
    NoTrainSection(PathBuf),
    /// The training data is missing or unusable.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A step failed (out of memory names the batch and sequence length).
    #[error("step {step} (micro-batch of {batch} x {seq} tokens): {message}")]
    Step { step: usize, batch: usize, seq: usize, message: String },
    /// Setting up or saving failed.
    #[error("{context}: {message}")]
    Other { context: String, message: String },
    /// A resume that cannot continue.
    #[error("cannot resume: {0}")]
    Resume(String),
}

fn other(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> TrainError {
    let context = context.into();
    move |e| TrainError::Other { context, message: e.to_string() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Other { context: format!("writing {}", path.display()), message: e.to_string() }
}

/// One row of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepRow {
    /// Optimizer steps done.
    pub step: usize,
    /// Fraction of epochs done.
    pub epoch: f64,
    /// Mean loss of the step's examples.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens (prompt + answer) of the step.
    pub tokens: usize,
    /// Tokens per second of the step.
    pub tokens_per_s: f64,
    /// Peak memory so far, MiB (process RSS on the CPU, device memory in use on a GPU).
    pub memory_mib: f64,
    /// Dev-split accuracy, when evaluated at this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_accuracy: Option<f64>,
    /// Dev-split macro-F1, when evaluated at this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_macro_f1: Option<f64>,
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// Continue from the last checkpoint.
    pub resume: bool,
    /// Stop after this many steps, as if interrupted (the schedule still spans the whole run).
    pub stop_after: Option<usize>,
}

/// What a training run did.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Steps done (in total, resumed ones included).
    pub steps: usize,
    /// Steps the run has in total.
    pub total_steps: usize,
    /// The step resumed from.
    pub resumed_from: Option<usize>,
    /// Training examples used.
    pub examples: usize,
    /// The rows they were packed into (`train.packing`); `None` when not packed.
    pub packed_rows: Option<usize>,
    /// Records skipped, with the reason.
    pub skipped: Vec<String>,
    /// The final adapter (PEFT layout), when the run finished.
    pub adapter: Option<PathBuf>,
    /// Tokens per second over this invocation.
    pub tokens_per_s: f64,
    /// Last step's loss.
    pub last_loss: f64,
    /// Peak memory, MiB.
    pub memory_mib: f64,
    /// The step whose adapters the run ends with.
    pub selected_step: usize,
}

/// The training file of `config`, its examples and the records skipped (with why).
fn training_examples(
    config: &Config,
    t: &TrainConfig,
    m: &LoadedModel,
    choices: &Choices,
) -> Result<(PathBuf, Vec<Example>, Vec<String>), TrainError> {
    let longest = m.llama.config().max_sequence();
    if t.max_len > longest {
        return Err(TrainError::Input {
            path: config.path.clone(),
            message: format!(
                "train.max_len = {} is longer than the model takes ({longest} tokens: its positions, or its sliding window)",
                t.max_len
            ),
        });
    }
    let path = config.work_dir().join(format!("data/{}/train.jsonl", t.data));
    crate::artifacts::DataManifest::of(config).map_err(|message| TrainError::Input { path: path.clone(), message })?;
    let (records, mut skipped) = read_jsonl(&path).map_err(|e| TrainError::Input {
        path: path.clone(),
        message: format!(
            "cannot read the training records ({e}); run the data stage first (`medtune data --config {}`)",
            config.path.display()
        ),
    })?;
    let opts = PromptOptions::of(Some(t));
    let mut examples = Vec::with_capacity(records.len());
    if config.task.kind == crate::config::TaskKind::Generate {
        for r in &records {
            match super::examples::chat_example(r, &m.tokenizer, t.max_len, t.context_keep == crate::config::ContextKeep::End) {
                Ok(e) => examples.push(e),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        if examples.is_empty() {
            return Err(TrainError::Input { path, message: "no usable training record (each needs an answer to learn)".into() });
        }
        return Ok((path, examples, skipped));
    }
    let mut conclusions = 0;
    for r in &records {
        let made = example(r, &m.tokenizer, opts, choices).and_then(|mut e| {
            if t.conclusion_weight > 0.0
                && let Some(ids) = conclusion_ids(r, &m.tokenizer)
            {
                e.conclusion = ids?;
                conclusions += 1;
            }
            Ok(e)
        });
        match made {
            Ok(e) => examples.push(e),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if examples.is_empty() {
        return Err(TrainError::Input {
            path,
            message: format!("no usable training record (each needs an answer among the labels: {})", choices.labels.join(", ")),
        });
    }
    if t.conclusion_weight > 0.0 && conclusions == 0 {
        return Err(TrainError::Input {
            path,
            message: "train.conclusion_weight is set, but no training record has a long answer (PubMedQA's LONG_ANSWER, a JSONL record's long_answer)".into(),
        });
    }
    if t.with_conclusions {
        let before = examples.len();
        for r in &records {
            match with_conclusion(r, &m.tokenizer, opts, choices) {
                Some(Ok(e)) => examples.push(e),
                Some(Err(e)) => skipped.push(e.to_string()),
                None => {}
            }
        }
        if examples.len() == before {
            return Err(TrainError::Input {
                path,
                message: "train.with_conclusions is set, but no training record has a long answer (PubMedQA's LONG_ANSWER, a JSONL record's long_answer)".into(),
            });
        }
    }
    Ok((path, examples, skipped))
}

/// The fingerprint of what determines the training trajectory: the training config (but not
/// the number of GPUs, which gives the same steps), the data and the model section (path,
/// device, base format).
pub fn fingerprint(t: &TrainConfig, data_hash: &str, model: &crate::config::ModelConfig) -> String {
    let t = TrainConfig { gpus: None, ..t.clone() };
    let text =
        format!("{}|{data_hash}|{}", serde_json::to_string(&t).unwrap_or_default(), serde_json::to_string(model).unwrap_or_default());
    crate::hash::sha256_hex(text.as_bytes())[..16].to_owned()
}

/// Trains the adapters of `config` on `m`; writes `runs/<name>/` (metrics.jsonl,
/// checkpoints/, adapter/). `progress` sees each step's row and the total step count. With
/// `dp`, this process is one rank of a data-parallel run: it takes its share of each step's
/// micro-batches, and only rank 0 evaluates, reports and writes files.
pub fn train(
    config: &Config,
    m: &LoadedModel,
    opts: TrainOptions,
    dp: Option<&DataParallel>,
    mut progress: impl FnMut(&StepRow, usize),
) -> Result<TrainOutcome, TrainError> {
    let t = config.train.as_ref().ok_or_else(|| TrainError::NoTrainSection(config.path.clone()))?;
    let leads = dp.is_none_or(DataParallel::leads);
    let device = m.llama.device().clone();
    keep_freed_memory(&device)?;
    let choices = Choices::new(&crate::artifacts::TaskLabels::of(config).labels, &m.tokenizer)?;
    let (data_path, examples, skipped) = training_examples(config, t, m, &choices)?;
    let example_count = examples.len();
    // a packed row is one example for the data order and the batches
    let packing = config.task.kind == crate::config::TaskKind::Generate && t.packing != Some(false);
    let examples = if packing { super::pack::pack(examples, t.max_len) } else { examples };
    let tokens = choices.tokens.clone();
    let pad = m.tokenizer.token_id("<|endoftext|>").or_else(|| m.tokenizer.token_id("</s>")).unwrap_or(0);
    let class_weights = class_weights(&examples, t.balance, tokens.len());
    let loss_opts = LossOptions { choice: t.loss == AnswerLoss::Choice, conclusion_weight: t.conclusion_weight };
    let dev = if t.eval_every > 0 && leads { dev_examples(config, t, m, &choices)? } else { Vec::new() };
    let run = config.run_dir();
    let ckpt_root = run.join("checkpoints");
    let metrics_path = run.join("metrics.jsonl");
    let lora_config = LoraConfig { r: t.lora.r, alpha: t.lora.alpha, dropout: t.lora.dropout, targets: t.lora.targets.clone() };
    let mut lora = LoraSet::new(lora_config, m.llama.config(), t.seed, &device).map_err(other("creating the LoRA adapters"))?;
    let mut opt = AdamW::new(lora.vars(), t.weight_decay).map_err(other("creating the optimizer"))?;
    let print = fingerprint(t, &crate::hash::file_sha256(&data_path), &config.model);

    let mut start = 0;
    let mut resumed_from = None;
    let mut rows: Vec<StepRow> = Vec::new();
    if opts.resume {
        let ckpt = checkpoint::latest(&ckpt_root).ok_or_else(|| TrainError::Resume(format!("no checkpoint in {}", ckpt_root.display())))?;
        checkpoint::restore(&ckpt, &mut lora, &mut opt, &print).map_err(TrainError::Resume)?;
        start = ckpt.step;
        resumed_from = Some(start);
        rows = read_rows(&metrics_path).into_iter().filter(|r| r.step <= start).collect();
    } else if run.exists() && leads {
        for stale in [ckpt_root.clone(), run.join("adapter"), run.join("best")] {
            if stale.exists() {
                std::fs::remove_dir_all(&stale).map_err(io(&stale))?;
            }
        }
    }
    let mut log = if leads {
        std::fs::create_dir_all(&run).map_err(io(&run))?;
        write_rows(&metrics_path, &rows)?;
        Some(std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(io(&metrics_path))?)
    } else {
        None
    };

    let per_step = t.batch_size * t.grad_accum;
    let steps_per_epoch = examples.len().div_ceil(per_step);
    let total = if t.max_steps > 0 { t.max_steps } else { t.epochs * steps_per_epoch };
    let order = Order::new(examples.len(), t.seed);
    let began = Instant::now();
    let mut run_tokens = 0;
    let mut peak = 0.0f64;
    let mut last_loss = f64::NAN;
    let mut step = start;
    let mut best: Option<Best> = if opts.resume { read_best(&run) } else { None };
    while step < total {
        let t0 = Instant::now();
        let vars = lora.vars();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let (mut loss_sum, mut step_tokens) = (0.0, 0);
        for micro in (0..t.grad_accum).filter(|&k| dp.is_none_or(|d| d.takes(k))) {
            let first = (step * t.grad_accum + micro) * t.batch_size;
            let picked: Vec<&Example> = (first..first + t.batch_size).map(|k| &examples[order.at(k)]).collect();
            let seq = picked.iter().map(|e| sequence_len(e, loss_opts)).max().unwrap_or(0);
            let fail = |e: candle_core::Error| step_error(step, t.batch_size, seq, e);
            lora.set_dropout_seed(t.seed ^ ((step * t.grad_accum + micro) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let batch = Batch::new(&picked, &tokens, &class_weights, pad, loss_opts, &device).map_err(fail)?;
            let scale = t.grad_accum as f64;
            let (loss, store) = if t.recompute {
                m.llama.backward_recomputed(&batch.ids, batch.positions.as_ref(), &lora, &vars, |h| {
                    batch.loss_of(&m.llama, h).and_then(|l| l / scale)
                })
            } else {
                let loss = m
                    .llama
                    .hidden_train(&batch.ids, batch.positions.as_ref(), &lora)
                    .and_then(|h| batch.loss_of(&m.llama, &h))
                    .and_then(|l| l / scale)
                    .map_err(fail)?;
                loss.backward().map(|store| (loss, store))
            }
            .map_err(fail)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(fail)?) * scale;
            for (slot, var) in grads.iter_mut().zip(&vars) {
                if let Some(g) = store.get(var.as_tensor()) {
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g).map_err(fail)?,
                        None => g.clone(),
                    });
                }
            }
            step_tokens += batch.tokens;
        }
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()
            .map_err(other("gathering gradients"))?;
        if let Some(d) = dp {
            let mut totals = [loss_sum, step_tokens as f64];
            d.sum(&mut grads, &mut totals).map_err(other(format!("step {}: summing the gradients of {} GPUs", step + 1, d.world)))?;
            (loss_sum, step_tokens) = (totals[0], totals[1].round() as usize);
        }
        let norm = clip(&mut grads, t.max_grad_norm).map_err(other("clipping gradients"))?;
        let lr = learning_rate(step, total, t.warmup_steps, t.lr, t.schedule);
        opt.update(&grads, lr).map_err(other("optimizer step"))?;
        step += 1;
        let secs = t0.elapsed().as_secs_f64();
        run_tokens += step_tokens;
        peak = peak.max(memory_mib(&device));
        last_loss = loss_sum / t.grad_accum as f64;
        let mut row = StepRow {
            step,
            epoch: (step * per_step) as f64 / examples.len() as f64,
            loss: last_loss,
            lr,
            grad_norm: norm,
            tokens: step_tokens,
            tokens_per_s: step_tokens as f64 / secs.max(1e-9),
            memory_mib: peak,
            eval_accuracy: None,
            eval_macro_f1: None,
        };
        if !leads {
            if opts.stop_after.is_some_and(|n| step >= n) && step < total {
                break;
            }
            continue;
        }
        if t.eval_every > 0 && (step % t.eval_every == 0 || step == total) {
            let (acc, f1) = dev_scores(&dev, t, m, &mut lora, &tokens, pad)?;
            (row.eval_accuracy, row.eval_macro_f1) = (Some(acc), Some(f1));
            if t.select == Select::BestDev && best.as_ref().is_none_or(|b| (f1, acc) > (b.macro_f1, b.accuracy)) {
                let b = Best { step, macro_f1: f1, accuracy: acc };
                save_best(&run, &lora, &b)?;
                best = Some(b);
            }
        }
        let line = serde_json::to_string(&row).unwrap_or_default();
        if let Some(log) = log.as_mut() {
            writeln!(log, "{line}").map_err(io(&metrics_path))?;
        }
        rows.push(row.clone());
        progress(&row, total);
        if (t.checkpoint_every > 0 && step % t.checkpoint_every == 0) || step == total {
            checkpoint::save(&ckpt_root, step, &lora, &opt, &print).map_err(io(&ckpt_root))?;
        }
        if opts.stop_after.is_some_and(|n| step >= n) && step < total {
            break;
        }
    }
    let mut selected_step = step;
    let adapter = if step >= total && leads {
        let dir = run.join("adapter");
        let tmp = run.join(".adapter.tmp");
        if let Some(b) = best.as_ref().filter(|_| t.select == Select::BestDev) {
            lora.load_peft(&run.join("best")).map_err(other("loading the best dev adapter"))?;
            selected_step = b.step;
        }
        lora.save_peft(&tmp).map_err(io(&tmp))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Some(dir)
    } else {
        None
    };
    if leads {
        let loss: Vec<(usize, f64)> = rows.iter().map(|r| (r.step, r.loss)).collect();
        let acc: Vec<(usize, f64)> = rows.iter().filter_map(|r| r.eval_accuracy.map(|a| (r.step, a))).collect();
        let svg = super::plot::loss_chart(&format!("{}: training loss and dev accuracy", config.name), &loss, &acc);
        let plot = run.join("loss.svg");
        crate::atomic::write(&plot, svg.as_bytes()).map_err(io(&plot))?;
    }
    let secs = began.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        steps: step,
        total_steps: total,
        resumed_from,
        examples: example_count,
        packed_rows: packing.then_some(examples.len()),
        skipped,
        adapter,
        tokens_per_s: run_tokens as f64 / secs.max(1e-9),
        last_loss,
        memory_mib: peak,
        selected_step,
    })
}

/// The adapters with the best dev macro-F1 so far (ties: accuracy).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Best {
    step: usize,
    macro_f1: f64,
    accuracy: f64,
}

fn save_best(run: &Path, lora: &LoraSet, best: &Best) -> Result<(), TrainError> {
    let (dir, tmp) = (run.join("best"), run.join(".best.tmp"));
    lora.save_peft(&tmp).map_err(io(&tmp))?;
    crate::artifacts::write(&tmp.join("best.json"), best).map_err(std::io::Error::other).map_err(io(&tmp))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))
}

fn read_best(run: &Path) -> Option<Best> {
    crate::artifacts::read_if_any(&run.join("best/best.json"))
}

/// Whether `config`'s run folder holds a checkpoint written under the same training config,
/// data and model, that is, one a resume continues exactly.
pub fn resumable(config: &Config) -> bool {
    let Some(t) = config.train.as_ref() else { return false };
    let Some(ckpt) = checkpoint::latest(&config.run_dir().join("checkpoints")) else { return false };
    let data = config.work_dir().join(format!("data/{}/train.jsonl", t.data));
    checkpoint::state(&ckpt).is_ok_and(|s| s.fingerprint == fingerprint(t, &crate::hash::file_sha256(&data), &config.model))
}

/// The data order: epoch `e` is a shuffle of the examples seeded by `seed + e`.
struct Order {
    n: usize,
    seed: u64,
    cache: std::cell::RefCell<(usize, Vec<usize>)>,
}

impl Order {
    fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, cache: std::cell::RefCell::new((usize::MAX, Vec::new())) }
    }

    /// The example at stream position `k`.
    fn at(&self, k: usize) -> usize {
        let (epoch, pos) = (k / self.n, k % self.n);
        let mut cache = self.cache.borrow_mut();
        if cache.0 != epoch {
            let mut idx: Vec<usize> = (0..self.n).collect();
            PyRandom::new(self.seed.wrapping_add(epoch as u64)).shuffle(&mut idx);
            *cache = (epoch, idx);
        }
        cache.1[pos]
    }
}

/// Inverse class frequency (`n / (labels · count)`) for `weights`, else 1.
fn class_weights(examples: &[Example], balance: Balance, labels: usize) -> Vec<f64> {
    if balance != Balance::Weights {
        return vec![1.0; labels];
    }
    let mut counts = vec![0usize; labels];
    examples.iter().for_each(|e| counts[e.label] += 1);
    counts.iter().map(|&c| examples.len() as f64 / (labels as f64 * c.max(1) as f64)).collect()
}

fn step_error(step: usize, batch: usize, seq: usize, e: candle_core::Error) -> TrainError {
    // the first line: candle appends a backtrace to some errors
    let text = e.to_string().lines().next().unwrap_or_default().to_owned();
    let message = if text.to_lowercase().contains("out of memory") {
        format!("out of memory: {text}; lower train.batch_size (raise train.grad_accum to keep the global batch) or train.max_len")
    } else {
        text
    };
    TrainError::Step { step: step + 1, batch, seq, message }
}

/// The dev split's examples (read once, before training, when `eval_every` asks for them).
fn dev_examples(config: &Config, t: &TrainConfig, m: &LoadedModel, choices: &Choices) -> Result<Vec<Example>, TrainError> {
    let path = config.work_dir().join("data/processed/dev.jsonl");
    let (records, _) = read_jsonl(&path).map_err(|e| TrainError::Input { path: path.clone(), message: e.to_string() })?;
    let examples: Vec<Example> =
        records.iter().filter_map(|r| example(r, &m.tokenizer, PromptOptions::of(Some(t)), choices).ok()).collect();
    if examples.is_empty() {
        return Err(TrainError::Input { path, message: "no dev question to evaluate (train.eval_every needs the dev split)".into() });
    }
    Ok(examples)
}

/// Accuracy and macro-F1 on the dev split (the plot's eval curve, and `select = "best-dev"`);
/// the F1 is averaged over the labels that are gold or predicted (sklearn's default).
fn dev_scores(
    examples: &[Example],
    t: &TrainConfig,
    m: &LoadedModel,
    lora: &mut LoraSet,
    tokens: &[u32],
    pad: u32,
) -> Result<(f64, f64), TrainError> {
    lora.training = false;
    let probs = super::eval::score(&m.llama, Some(lora as &dyn crate::model::Adapters), examples, tokens, t.batch_size, pad);
    lora.training = true;
    let probs = probs.map_err(other("dev evaluation"))?;
    let pairs: Vec<(usize, usize)> = examples.iter().zip(&probs).map(|(e, p)| (e.label, super::eval::best(p))).collect();
    let right = pairs.iter().filter(|(g, p)| g == p).count();
    let present: std::collections::BTreeSet<usize> = pairs.iter().flat_map(|&(g, p)| [g, p]).collect();
    let f1 = present.iter().map(|&l| {
        let tp = pairs.iter().filter(|&&(g, p)| g == l && p == l).count() as f64;
        let (pred, gold) = (pairs.iter().filter(|(_, p)| *p == l).count() as f64, pairs.iter().filter(|(g, _)| *g == l).count() as f64);
        if tp == 0.0 { 0.0 } else { 2.0 * tp / (pred + gold) }
    });
    Ok((right as f64 / examples.len() as f64, f1.sum::<f64>() / present.len().max(1) as f64))
}

/// Peak memory so far in MiB: the process's peak RSS on the CPU, device memory in use on a GPU.
pub fn memory_mib(device: &Device) -> f64 {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        if let Ok((free, total)) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info() {
            return (total - free) as f64 / (1024.0 * 1024.0);
        }
    }
    let _ = device;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Makes the CUDA memory pool keep the memory that tensors free from now on, as PyTorch's
/// caching allocator does, after handing back what it holds unused now (what loading the
/// model left). cudarc allocates with cuMemAllocAsync from the device's default pool, whose
/// release threshold is 0: at every synchronization (each step reads its loss back) the pool
/// hands its free memory back to the driver, and the next step maps it again. Off CUDA it does
/// nothing. The memory in use ([`memory_mib`]) then stays at its peak between steps.
pub fn keep_freed_memory(device: &Device) -> Result<(), TrainError> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda_backend::cudarc::driver::{result, sys};
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
        let mut keep: u64 = u64::MAX;
        // SAFETY: as in `allocated_peak_mib`: the pool of candle's device, and the attribute
        // is a cuuint64_t.
        unsafe {
            let pool = result::device::get_mem_pool(d.cuda_stream().context().cu_device())
                .map_err(|e| TrainError::Other { context: "the CUDA memory pool".into(), message: e.to_string() })?;
            device.synchronize().map_err(other("the CUDA memory pool"))?;
            result::mem_pool::trim_to(pool, 0)
                .map_err(|e| TrainError::Other { context: "the CUDA memory pool's trim".into(), message: e.to_string() })?;
            result::mem_pool::set_attribute(pool, attr, (&mut keep as *mut u64).cast())
                .map_err(|e| TrainError::Other { context: "the CUDA memory pool's release threshold".into(), message: e.to_string() })?;
        }
    }
    let _ = device;
    Ok(())
}

/// The CUDA memory pool's high-water mark of allocated bytes since the last call with
/// `reset`, in MiB: what PyTorch's `max_memory_allocated` counts (tensors; not the CUDA
/// context, nor the pool's cached free blocks, which [`memory_mib`] includes). `None` off CUDA.
pub fn allocated_peak_mib(device: &Device, reset: bool) -> Option<f64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda_backend::cudarc::driver::{result, sys};
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let mut bytes: u64 = 0;
        // SAFETY: the device is the one candle's context was made for, and the attribute is
        // a cuuint64_t; cudarc allocates from this (the current) pool with cuMemAllocAsync.
        unsafe {
            let pool = result::device::get_mem_pool(d.cuda_stream().context().cu_device()).ok()?;
            if reset {
                // the high-water mark can only be reset to zero: it then restarts from what is in use
                result::mem_pool::set_attribute(pool, attr, (&mut bytes as *mut u64).cast()).ok()?;
            }
            result::mem_pool::get_attribute(pool, attr, (&mut bytes as *mut u64).cast()).ok()?;
        }
        return Some(bytes as f64 / (1024.0 * 1024.0));
    }
    let _ = (device, reset);
    None
}

/// The rows of a metrics file (unreadable lines skipped).
pub fn read_rows(path: &Path) -> Vec<StepRow> {
    std::fs::read_to_string(path).map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()).unwrap_or_default()
}

fn write_rows(path: &Path, rows: &[StepRow]) -> Result<(), TrainError> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r).unwrap_or_default());
        text.push('\n');
    }
    crate::atomic::write(path, text.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_of_gpus_leaves_the_fingerprint_alone() {
        let t: TrainConfig = toml::from_str("seed = 3").expect("a [train] section");
        let model = crate::config::ModelConfig::default();
        let on_two = TrainConfig { gpus: Some(2), ..t.clone() };
        assert_eq!(fingerprint(&t, "data", &model), fingerprint(&on_two, "data", &model), "a checkpoint of 2 GPUs would not resume on 1");
        let reseeded = TrainConfig { seed: 4, ..t.clone() };
        assert_ne!(fingerprint(&t, "data", &model), fingerprint(&reseeded, "data", &model));
    }
}
