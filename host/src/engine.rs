//! What answers questions: the model on candle, or its ONNX export on ONNX Runtime. Both give
//! yes/no/maybe probabilities after a prompt and generate text with the same decoding loop.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::export::{OrtCache, OrtDevice, OrtModel};
use crate::model::{Config, GenerateOptions, Generation, LoadedModel, Lora, ModelError, TokenLogprob, Tokenizer, generate, generate_with};

/// Which engine a command runs (`--engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// The model on candle.
    #[default]
    Candle,
    /// Its ONNX export on ONNX Runtime.
    Ort,
}

crate::config::display_as_value_name!(EngineKind);

/// An inference engine.
pub enum Engine {
    /// candle (CPU or CUDA).
    Candle(LoadedModel),
    /// ONNX Runtime (CPU) over an exported folder.
    Ort {
        /// The session.
        model: OrtModel,
        /// The tokenizer saved beside it.
        tokenizer: Tokenizer,
        /// The hyperparameters saved beside it.
        config: Config,
    },
}

impl Engine {
    /// Loads an export folder (`model.onnx`, `config.json`, `tokenizer.json`) on ONNX Runtime.
    pub fn ort(dir: &Path, library: &Path, threads: usize) -> Result<Self, String> {
        Self::ort_on(dir, library, threads, OrtDevice::Cpu)
    }

    /// [`Engine::ort`] on `device` (a GPU through the library's CUDA provider).
    pub fn ort_on(dir: &Path, library: &Path, threads: usize, device: OrtDevice) -> Result<Self, String> {
        let config = Config::from_hf_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json")).map_err(|e| e.to_string())?;
        let model = OrtModel::load_on(library, &dir.join("model.onnx"), &config, threads, device)
            .map_err(|e| format!("{}: {e}", dir.join("model.onnx").display()))?;
        Ok(Engine::Ort { model, tokenizer, config })
    }

    /// `candle` or `ort`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Candle(_) => "candle",
            Engine::Ort { .. } => "ort",
        }
    }

    /// The longest sequence the model takes.
    pub fn max_positions(&self) -> usize {
        match self {
            Engine::Candle(m) => m.llama.config().max_sequence(),
            Engine::Ort { config, .. } => config.max_sequence(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        match self {
            Engine::Candle(m) => &m.tokenizer,
            Engine::Ort { tokenizer, .. } => tokenizer,
        }
    }

    /// Probabilities of the answer tokens after `ids`, renormalized over them; with `lora`'s
    /// updates (candle) when given.
    pub fn answer(&self, ids: &[u32], label_tokens: &[u32], lora: Option<&Lora>) -> Result<Vec<f64>, String> {
        let logits: Vec<f32> = match self {
            Engine::Candle(m) => return candle_answer(m, ids, label_tokens, lora).map_err(|e| e.to_string()),
            Engine::Ort { .. } if lora.is_some() => return Err("an ONNX export takes no unmerged adapter".into()),
            Engine::Ort { model, .. } => model.forward(ids, &mut OrtCache::default()).map_err(|e| e.to_string())?,
        };
        let picked: Vec<f64> = label_tokens.iter().map(|&t| f64::from(logits[t as usize])).collect();
        let max = picked.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = picked.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        Ok(exp.iter().map(|e| e / sum).collect())
    }

    /// yes/no/maybe probabilities as the first word after `prompt` (any capitalization, with or
    /// without a leading space), as `medtune ask` reports them.
    pub fn ask(&self, prompt: &str) -> Result<[(String, f64); 3], ModelError> {
        match self {
            Engine::Candle(m) => crate::model::answer_probabilities(&m.llama, &m.tokenizer, prompt),
            Engine::Ort { model, tokenizer, .. } => {
                let ids = tokenizer.encode(prompt)?;
                let logits = model.forward(&ids, &mut OrtCache::default()).map_err(ort_error)?;
                let last = Tensor::from_slice(&logits, logits.len(), &Device::Cpu)
                    .map_err(|e| ModelError::Candle { context: "ORT logits".into(), source: e })?;
                crate::model::answer_probabilities_from(&last, tokenizer)
            }
        }
    }

    /// Generates a continuation of `prompt`.
    pub fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str, &[TokenLogprob]),
    ) -> Result<Generation, ModelError> {
        match self {
            Engine::Candle(m) => generate(&m.llama, &m.tokenizer, prompt, opts, on_text),
            Engine::Ort { model, tokenizer, config } => {
                let mut cache = OrtCache::default();
                let step = |ids: &[u32]| -> Result<Tensor, ModelError> {
                    let last = model.forward(ids, &mut cache).map_err(ort_error)?;
                    Tensor::from_slice(&last, last.len(), &Device::Cpu)
                        .map_err(|e| ModelError::Candle { context: "ORT logits".into(), source: e })
                };
                generate_with(tokenizer, prompt, opts, config.max_sequence(), step, on_text)
            }
        }
    }
}

fn ort_error(e: crate::export::ExportError) -> ModelError {
    ModelError::Format { path: "model.onnx".into(), message: e.to_string() }
}

/// The answer probabilities after `ids` on candle: the last position's logits of the answer
/// tokens, softmaxed (as evaluation scores a batch of one).
fn candle_answer(m: &LoadedModel, ids: &[u32], label_tokens: &[u32], lora: Option<&Lora>) -> candle_core::Result<Vec<f64>> {
    let Some(last) = ids.len().checked_sub(1) else { candle_core::bail!("an empty prompt has no answer") };
    let device = m.llama.device();
    let input = Tensor::new(ids, device)?.unsqueeze(0)?;
    let at = Tensor::new(&[last as u32], device)?;
    let labels = Tensor::new(label_tokens, device)?;
    let logits = match lora {
        Some(l) => m.llama.logits_at_unmerged(&input, &at, l)?,
        None => m.llama.logits_at(&input, &at, None)?,
    };
    let logits = logits.index_select(&labels, 1)?;
    let p = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
    Ok(p[0].iter().map(|&x| f64::from(x)).collect())
}
