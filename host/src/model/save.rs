//! Writing a model as a Hugging Face checkpoint folder (`config.json`,
//! `generation_config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`):
//! how `medtune merge` hands a fine-tuned model to other tools. Weights are written dense f32,
//! quantized ones dequantized.

use std::path::Path;

use super::llama::Llama;
use super::tokenizer::Tokenizer;
use super::{CandleContext, ModelError};

/// Writes `model` and `tokenizer` into `dir` (each file atomically).
pub fn save_checkpoint(model: &Llama, tokenizer: &Tokenizer, dir: &Path) -> Result<(), ModelError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| ModelError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        model.tensors().ctx(|| "collecting the weights".into())?.into_iter().collect();
    let weights = dir.join("model.safetensors");
    let tmp = dir.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp).ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &weights).map_err(write_err(&weights))?;
    write_config(model.config(), &dir.join("config.json"))?;
    tokenizer.save(dir)
}

/// Writes a Hugging Face `config.json` for `c`.
pub fn write_config(c: &super::Config, path: &Path) -> Result<(), ModelError> {
    let rope_scaling = c.rope_scaling_json().map_err(|message| ModelError::Format { path: path.to_owned(), message })?;
    if c.family == super::Family::Llama && c.sliding_window.is_some() {
        return Err(ModelError::Format {
            path: path.to_owned(),
            message: "transformers' LLaMA has no sliding window (Mistral has)".into(),
        });
    }
    let mut config = serde_json::json!({
        "architectures": [c.family.architecture()],
        "model_type": c.family.model_type(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "head_dim": c.head_dim(),
        "num_key_value_heads": c.num_key_value_heads,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    match c.family {
        super::Family::Llama => {}
        super::Family::Mistral => config["sliding_window"] = c.sliding_window.into(),
        super::Family::Qwen2 => config["use_sliding_window"] = false.into(),
    }
    crate::atomic::write(path, serde_json::to_string_pretty(&config).unwrap_or_default().as_bytes())
        .map_err(|source| ModelError::Write { path: path.to_owned(), source })
}
