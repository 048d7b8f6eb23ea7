//! Writing a model as a Hugging Face checkpoint folder (`config.json`, `model.safetensors`,
//! `tokenizer.json`): how `medtune merge` hands a fine-tuned model to other tools. Weights
//! are written dense f32, quantized ones dequantized.

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
    let path = dir.join("tokenizer.json");
    let tmp = dir.join(".tokenizer.json.tmp");
    tokenizer.save(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(write_err(&path))
}

/// Writes a Hugging Face `config.json` for `c`.
pub fn write_config(c: &super::Config, path: &Path) -> Result<(), ModelError> {
    let rope_scaling = c.rope_scaling_json().map_err(|message| ModelError::Format { path: path.to_owned(), message })?;
    // a sliding window is Mistral's (transformers' LLaMA has none)
    let (architecture, model_type) =
        if c.sliding_window.is_some() { ("MistralForCausalLM", "mistral") } else { ("LlamaForCausalLM", "llama") };
    let config = serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "sliding_window": c.sliding_window,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
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
    crate::atomic::write(path, serde_json::to_string_pretty(&config).unwrap_or_default().as_bytes())
        .map_err(|source| ModelError::Write { path: path.to_owned(), source })
}
