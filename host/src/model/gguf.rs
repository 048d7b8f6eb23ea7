//! Loading GGUF files (llama.cpp's format): hyperparameters and tokenizer from the metadata,
//! tensors under their Hugging Face names. llama.cpp stores the rows of q_proj and k_proj
//! permuted for its interleaved RoPE; they are put back in the Hugging Face order here, so
//! the rest of medtune (adapters, exports) sees one layout whatever the file.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{QMatMul, QTensor, ggml_file::qtensor_from_ggml, gguf_file};
use candle_core::{Device, Tensor};

use super::config::{Config, RopeScaling};
use super::linear::Linear;
use super::llama::{Llama, Weights};
use super::tokenizer::Tokenizer;
use super::{LoadedModel, ModelError};

/// Opens a GGUF file: its metadata, tensor directory and tokenizer, checked.
pub fn load(path: &Path, device: &Device, opts: super::LoadOptions) -> Result<LoadedModel, ModelError> {
    let (config, tokenizer, mut weights) = open(path, device, opts)?;
    let llama = Llama::load(config, &mut weights, device)?;
    Ok(LoadedModel { llama, tokenizer })
}

/// The hyperparameters, tokenizer and weights (by Hugging Face name) of a GGUF file.
pub(crate) fn open(path: &Path, device: &Device, opts: super::LoadOptions) -> Result<(Config, Tokenizer, GgufWeights), ModelError> {
    let mut file = File::open(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::Format { path: path.to_owned(), message: format!("not a readable GGUF file: {e}") })?;
    let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if arch != "llama" {
        return Err(ModelError::Architecture { path: path.to_owned(), found: arch });
    }
    let mut config = config(&content, path)?;
    if let Some(r) = refused(&content.metadata, content.tensor_infos.keys().map(String::as_str), config.head_dim()) {
        return Err(ModelError::Unsupported { path: path.to_owned(), field: r.field, value: r.value, why: r.why.into() });
    }
    config.rope_scaling = rope_scaling(&content, &mut file, path, config.head_dim())?;
    let tokenizer = Tokenizer::from_gguf(&content.metadata).map_err(|e| match e {
        ModelError::Tokenizer(m) => ModelError::Format { path: path.to_owned(), message: format!("tokenizer metadata: {m}") },
        other => other,
    })?;
    let weights =
        GgufWeights { content, file, path: path.to_owned(), device: device.clone(), config: config.clone(), dequantize: opts.dequantize };
    Ok((config, tokenizer, weights))
}

fn config(c: &gguf_file::Content, path: &Path) -> Result<Config, ModelError> {
    let get = |key: &str| {
        c.metadata.get(key).ok_or_else(|| ModelError::Format { path: path.to_owned(), message: format!("missing metadata {key}") })
    };
    let int = |key: &str| -> Result<usize, ModelError> {
        get(key)?.to_u32().map(|v| v as usize).map_err(|e| ModelError::Format { path: path.to_owned(), message: format!("{key}: {e}") })
    };
    let float = |key: &str, default: f64| -> f64 { c.metadata.get(key).and_then(|v| v.to_f32().ok()).map_or(default, f64::from) };
    let vocab_size = c
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| ModelError::Format { path: path.to_owned(), message: "missing tensor token_embd.weight".into() })?;
    Ok(Config {
        hidden_size: int("llama.embedding_length")?,
        intermediate_size: int("llama.feed_forward_length")?,
        num_hidden_layers: int("llama.block_count")?,
        num_attention_heads: int("llama.attention.head_count")?,
        num_key_value_heads: int("llama.attention.head_count_kv").or_else(|_| int("llama.attention.head_count"))?,
        vocab_size,
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("llama.rope.freq_base", 10_000.0),
        max_position_embeddings: int("llama.context_length").unwrap_or(4096),
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        rope_scaling: None,
        sliding_window: match c.metadata.get("llama.attention.sliding_window") {
            Some(_) => Some(int("llama.attention.sliding_window")?).filter(|w| *w > 0),
            None => None,
        },
    })
}

/// The RoPE scaling of a GGUF file: `llama.rope.scaling.type = "linear"` with its factor, or
/// a `rope_freqs` tensor of one divisor per frequency (how llama.cpp stores Llama 3.1's).
/// Other scaling types are refused by [`refused`].
fn rope_scaling(c: &gguf_file::Content, file: &mut File, path: &Path, head_dim: usize) -> Result<Option<RopeScaling>, ModelError> {
    let format = |message: String| ModelError::Format { path: path.to_owned(), message };
    if c.metadata.get("llama.rope.scaling.type").and_then(|v| v.to_string().ok()).is_some_and(|t| t == "linear") {
        let factor = c.metadata.get("llama.rope.scaling.factor").and_then(|v| v.to_f32().ok()).filter(|f| *f > 0.0);
        let factor = factor.ok_or_else(|| format("llama.rope.scaling.type is linear but llama.rope.scaling.factor is missing".into()))?;
        return Ok(Some(RopeScaling::Linear { factor }));
    }
    if !c.tensor_infos.contains_key("rope_freqs.weight") {
        return Ok(None);
    }
    let divisors = c
        .tensor(file, "rope_freqs.weight", &Device::Cpu)
        .and_then(|t| t.dequantize(&Device::Cpu))
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| format(format!("tensor rope_freqs.weight: {e}")))?;
    if divisors.len() != head_dim / 2 || divisors.iter().any(|d| !(d.is_finite() && *d > 0.0)) {
        return Err(format(format!(
            "tensor rope_freqs.weight has {} values, not head size / 2 = {} positive ones",
            divisors.len(),
            head_dim / 2
        )));
    }
    Ok(Some(RopeScaling::Divisors(divisors)))
}

/// The first metadata key or tensor of a `llama` GGUF file that changes the computation in a
/// way medtune does not implement: RoPE scaling other than linear (`rope.scaling.type`; Llama
/// 3.1's `rope_freqs` tensor is implemented), a RoPE or key/value width other than the head size (`head_dim`),
/// logit soft-capping, experts, biases.
fn refused<'a>(
    metadata: &std::collections::HashMap<String, gguf_file::Value>,
    mut tensors: impl Iterator<Item = &'a str>,
    head_dim: usize,
) -> Option<super::config::Refusal> {
    use super::config::Refusal;
    let shown = |v: &gguf_file::Value| v.to_string().map(|s| format!("{s:?}")).unwrap_or_else(|_| format!("{v:?}"));
    let refusal = |field: &str, value: String, why: &'static str| Some(Refusal { field: field.to_owned(), value, why });
    if let Some(v) = metadata.get("llama.rope.scaling.type").filter(|v| v.to_string().is_ok_and(|t| t != "none" && t != "linear")) {
        return refusal("llama.rope.scaling.type", shown(v), "RoPE scaling other than linear (yarn, ...) is not implemented");
    }
    let number = |v: &gguf_file::Value| v.to_u32().map(u64::from).or_else(|_| v.to_u64()).ok();
    for key in ["llama.rope.dimension_count", "llama.attention.key_length", "llama.attention.value_length"] {
        if let Some(v) = metadata.get(key).filter(|v| number(v) != Some(head_dim as u64)) {
            return refusal(key, format!("{v:?}"), "a head size other than embedding_length / head_count is not implemented");
        }
    }
    for (key, why) in [
        ("llama.attn_logit_softcapping", "logit soft-capping is not implemented"),
        ("llama.final_logit_softcapping", "logit soft-capping is not implemented"),
    ] {
        if let Some(v) = metadata.get(key) {
            return refusal(key, format!("{v:?}"), why);
        }
    }
    if let Some(v) = metadata.get("llama.expert_count").filter(|v| number(v).is_some_and(|n| n > 0)) {
        return refusal("llama.expert_count", format!("{v:?}"), "mixtures of experts are not implemented");
    }
    let bias = tensors.find(|t| t.ends_with(".bias"))?;
    refusal(&format!("tensor {bias}"), "present".into(), "biases are not implemented")
}

/// The GGUF name of a Hugging Face tensor name (without `.weight`).
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens" => return "token_embd".into(),
        "model.norm" => return "output_norm".into(),
        "lm_head" => return "output".into(),
        _ => {}
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else { return hf.into() };
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let part = match part {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        other => other,
    };
    format!("blk.{layer}.{part}")
}

pub(crate) struct GgufWeights {
    content: gguf_file::Content,
    file: File,
    path: PathBuf,
    device: Device,
    config: Config,
    dequantize: bool,
}

impl GgufWeights {
    fn tensor(&mut self, hf: &str) -> Result<QTensor, ModelError> {
        let base = hf.strip_suffix(".weight").unwrap_or(hf);
        let name = format!("{}.weight", gguf_name(base));
        if !self.content.tensor_infos.contains_key(&name) {
            return Err(ModelError::Format { path: self.path.clone(), message: format!("missing tensor {name} ({hf})") });
        }
        self.content.tensor(&mut self.file, &name, &self.device).map_err(|e| ModelError::Format {
            path: self.path.clone(),
            message: format!("tensor {name} cannot be read (truncated or corrupt file?): {e}"),
        })
    }
}

impl Weights for GgufWeights {
    fn linear(&mut self, name: &str) -> Result<Linear, ModelError> {
        let mut q = self.tensor(name)?;
        let heads = if name.ends_with("q_proj") {
            Some(self.config.num_attention_heads)
        } else if name.ends_with("k_proj") {
            Some(self.config.num_key_value_heads)
        } else {
            None
        };
        if let Some(n_head) = heads {
            q = unpermute_rows(&q, n_head, &self.device).map_err(|e| ModelError::Format {
                path: self.path.clone(),
                message: format!("{name}: cannot restore the Hugging Face row order: {e}"),
            })?;
        }
        let err = |e: candle_core::Error| ModelError::Format { path: self.path.clone(), message: format!("{name}: {e}") };
        if self.dequantize {
            return Ok(Linear::Dense(q.dequantize(&self.device).map_err(err)?));
        }
        Ok(Linear::Quantized(QMatMul::from_qtensor(q).map_err(err)?))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let q = self.tensor(name)?;
        q.dequantize(&self.device).map_err(|e| ModelError::Format { path: self.path.clone(), message: format!("{name}: {e}") })
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(&format!("{}.weight", gguf_name(name)))
    }
}

/// Undoes llama.cpp's row permutation of q/k: GGUF row `h*d + 2j + i` is Hugging Face row
/// `h*d + i*d/2 + j` (head `h`, half `i`, pair `j`). Rows are whole quantization blocks, so the
/// bytes move without requantizing.
fn unpermute_rows(q: &QTensor, n_head: usize, device: &Device) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let (rows, cols) = (dims[0], dims[1]);
    let dtype = q.dtype();
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = q.data()?;
    if rows % n_head != 0 || !(rows / n_head).is_multiple_of(2) || data.len() != rows * row_bytes {
        candle_core::bail!("shape {dims:?} does not split into {n_head} heads");
    }
    let d = rows / n_head;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..d / 2 {
                let hf = h * d + i * (d / 2) + j;
                let gg = h * d + 2 * j + i;
                out[hf * row_bytes..(hf + 1) * row_bytes].copy_from_slice(&data[gg * row_bytes..(gg + 1) * row_bytes]);
            }
        }
    }
    qtensor_from_ggml(dtype, &out, dims, device)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value;

    use super::refused;

    /// Each metadata key or tensor of a `llama` GGUF that changes the computation and is not
    /// implemented is refused by name; the same keys at what LLaMA computes load.
    #[test]
    fn gguf_keys_that_change_the_computation_are_refused_by_name() {
        let plain = ["token_embd.weight", "blk.0.attn_q.weight"];
        let check = |pairs: Vec<(&str, Value)>, tensors: &[&str]| {
            let meta: HashMap<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            refused(&meta, tensors.iter().copied(), 64).map(|r| (r.field, r.value))
        };
        let refused_keys = [
            ("llama.rope.scaling.type", Value::String("yarn".into())),
            ("llama.rope.dimension_count", Value::U32(32)),
            ("llama.attention.key_length", Value::U32(128)),
            ("llama.final_logit_softcapping", Value::F32(30.0)),
            ("llama.expert_count", Value::U32(8)),
        ];
        for (key, value) in refused_keys {
            let (field, _) = check(vec![(key, value)], &plain).unwrap_or_else(|| panic!("{key} must be refused"));
            assert_eq!(field, key);
        }
        assert_eq!(check(vec![], &["blk.0.attn_q.bias"]).map(|r| r.0), Some("tensor blk.0.attn_q.bias".to_owned()));
        assert_eq!(check(vec![("llama.rope.scaling.type", Value::String("linear".into()))], &["rope_freqs.weight"]), None);
        let fine = vec![
            ("llama.rope.scaling.type", Value::String("none".into())),
            ("llama.rope.dimension_count", Value::U32(64)),
            ("llama.attention.key_length", Value::U32(64)),
            ("llama.expert_count", Value::U32(0)),
        ];
        assert_eq!(check(fine, &plain), None);
    }
}
