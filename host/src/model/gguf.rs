//! Loading GGUF files (llama.cpp's format): hyperparameters and tokenizer from the metadata,
//! tensors under their Hugging Face names. llama.cpp stores the rows of q_proj and k_proj
//! permuted for its interleaved RoPE; they are put back in the Hugging Face order here, so
//! the rest of medtune (adapters, exports) sees one layout whatever the file.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, ggml_file::qtensor_from_ggml, gguf_file};
use candle_core::{Device, Tensor};

use super::config::{Config, Family, RopeScaling};
use super::linear::Linear;
use super::llama::{Llama, Weights};
use super::tokenizer::Tokenizer;
use super::{LoadedModel, ModelError};

/// Opens a GGUF file: its metadata, tensor directory and tokenizer, checked; every tensor
/// of the file must find its place in the network.
pub fn load(path: &Path, device: &Device, opts: super::LoadOptions) -> Result<LoadedModel, ModelError> {
    let (config, tokenizer, mut weights) = open(path, device, opts)?;
    let llama = Llama::load(config, &mut weights, device)?;
    let mut left: Vec<&String> =
        weights.content.tensor_infos.keys().filter(|n| !weights.used.contains(*n) && n.as_str() != "rope_freqs.weight").collect();
    left.sort();
    if let Some(name) = left.first() {
        return Err(ModelError::Unsupported {
            path: path.to_owned(),
            field: format!("tensor {name}"),
            value: format!("present ({} tensors without a place)", left.len()),
            why: format!("a {} model has no such weight: it would be ignored", llama.config().family.model_type()),
        });
    }
    Ok(LoadedModel { llama, tokenizer })
}

/// The hyperparameters, tokenizer and weights (by Hugging Face name) of a GGUF file.
pub(crate) fn open(path: &Path, device: &Device, opts: super::LoadOptions) -> Result<(Config, Tokenizer, GgufWeights), ModelError> {
    let mut file = File::open(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::Format { path: path.to_owned(), message: format!("not a readable GGUF file: {e}") })?;
    let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    // llama.cpp writes Mistral as `llama` (with a sliding window when it has one)
    if !["llama", "qwen2"].contains(&arch.as_str()) {
        return Err(ModelError::Architecture { path: path.to_owned(), found: arch });
    }
    if let Some(r) = refused(&arch, &content.metadata) {
        return Err(ModelError::Unsupported { path: path.to_owned(), field: r.field, value: r.value, why: r.why.into() });
    }
    let mut config = config(&arch, &content, path)?;
    config.rope_scaling = rope_scaling(&arch, &content, &mut file, path, config.head_dim())?;
    let tokenizer = Tokenizer::from_gguf(&content.metadata).map_err(|e| match e {
        ModelError::Tokenizer(m) => ModelError::Format { path: path.to_owned(), message: format!("tokenizer metadata: {m}") },
        other => other,
    })?;
    let weights = GgufWeights {
        content,
        file,
        path: path.to_owned(),
        device: device.clone(),
        // llama.cpp permutes the q/k rows of `llama` files only (Qwen2 rotates halves as HF does)
        permuted: arch == "llama",
        config: config.clone(),
        dequantize: opts.dequantize,
        used: HashSet::new(),
    };
    Ok((config, tokenizer, weights))
}

fn config(arch: &str, c: &gguf_file::Content, path: &Path) -> Result<Config, ModelError> {
    let format = |message: String| ModelError::Format { path: path.to_owned(), message };
    let get = |key: &str| c.metadata.get(&format!("{arch}.{key}")).ok_or_else(|| format(format!("missing metadata {arch}.{key}")));
    let int = |key: &str| -> Result<usize, ModelError> {
        get(key)?.to_u32().map(|v| v as usize).map_err(|e| format(format!("{arch}.{key}: {e}")))
    };
    let float = |key: &str, default: f64| -> f64 {
        c.metadata.get(&format!("{arch}.{key}")).and_then(|v| v.to_f32().ok()).map_or(default, f64::from)
    };
    let vocab_size = c
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| format("missing tensor token_embd.weight".into()))?;
    let (hidden_size, heads) = (int("embedding_length")?, int("attention.head_count")?);
    let head_dim = match c.metadata.contains_key(&format!("{arch}.attention.key_length")) {
        true => int("attention.key_length")?,
        false if heads > 0 && hidden_size.is_multiple_of(heads) => hidden_size / heads,
        false => {
            return Err(format(format!("{arch}.embedding_length {hidden_size} is not a multiple of {arch}.attention.head_count {heads}")));
        }
    };
    let sliding_window = match c.metadata.get(&format!("{arch}.attention.sliding_window")) {
        Some(_) => Some(int("attention.sliding_window")?).filter(|w| *w > 0),
        None => None,
    };
    let family = match arch {
        "qwen2" => Family::Qwen2,
        _ if sliding_window.is_some() => Family::Mistral,
        _ => Family::Llama,
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(format(format!("{arch}.attention.key_length {head_dim}: RoPE needs an even head size")));
    }
    Ok(Config {
        family,
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers: int("block_count")?,
        num_attention_heads: heads,
        head_dim,
        num_key_value_heads: int("attention.head_count_kv").or_else(|_| int("attention.head_count"))?,
        vocab_size,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10_000.0),
        max_position_embeddings: int("context_length").unwrap_or(4096),
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        rope_scaling: None,
        sliding_window,
    })
}

/// The RoPE scaling of a GGUF file: `<arch>.rope.scaling.type = "linear"` with its factor, or
/// a `rope_freqs` tensor of one divisor per frequency (how llama.cpp stores Llama 3.1's).
/// Other scaling types are refused by [`refused`].
fn rope_scaling(
    arch: &str,
    c: &gguf_file::Content,
    file: &mut File,
    path: &Path,
    head_dim: usize,
) -> Result<Option<RopeScaling>, ModelError> {
    let format = |message: String| ModelError::Format { path: path.to_owned(), message };
    if c.metadata.get(&format!("{arch}.rope.scaling.type")).and_then(|v| v.to_string().ok()).is_some_and(|t| t == "linear") {
        let factor = c.metadata.get(&format!("{arch}.rope.scaling.factor")).and_then(|v| v.to_f32().ok()).filter(|f| *f > 0.0);
        let factor =
            factor.ok_or_else(|| format(format!("{arch}.rope.scaling.type is linear but {arch}.rope.scaling.factor is missing")))?;
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

/// The `<arch>.` metadata keys medtune reads, or checks in [`refused`]; any other is refused.
const KNOWN_KEYS: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "vocab_size",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",
    "expert_count",
    "expert_used_count",
];

/// The first `<arch>.` metadata key of a GGUF file that changes the computation in a way
/// medtune does not implement: RoPE scaling other than linear (`rope.scaling.type`; Llama
/// 3.1's `rope_freqs` tensor is implemented), RoPE on part of a head (`rope.dimension_count`),
/// values of another width than keys, logit soft-capping, experts, or a key medtune does not
/// know. Tensors without a place in the network are refused by [`load`].
fn refused(arch: &str, metadata: &std::collections::HashMap<String, gguf_file::Value>) -> Option<super::config::Refusal> {
    use super::config::Refusal;
    let shown = |v: &gguf_file::Value| v.to_string().map(|s| format!("{s:?}")).unwrap_or_else(|_| format!("{v:?}"));
    let refusal = |field: &str, value: String, why: &'static str| Some(Refusal { field: field.to_owned(), value, why });
    let mut keys: Vec<&String> = metadata.keys().filter(|k| k.strip_prefix(arch).is_some_and(|r| r.starts_with('.'))).collect();
    keys.sort();
    let get = |key: &str| metadata.get(&format!("{arch}.{key}"));
    if let Some(k) = keys.iter().find(|k| !KNOWN_KEYS.contains(&&k[arch.len() + 1..])) {
        return refusal(k, shown(&metadata[k.as_str()]), "a GGUF key medtune does not know: it may change the computation");
    }
    if let Some(v) = get("rope.scaling.type").filter(|v| v.to_string().is_ok_and(|t| t != "none" && t != "linear")) {
        return refusal(&format!("{arch}.rope.scaling.type"), shown(v), "RoPE scaling other than linear (yarn, ...) is not implemented");
    }
    let number = |v: &gguf_file::Value| v.to_u32().map(u64::from).or_else(|_| v.to_u64()).ok();
    let (embedding, heads) = (get("embedding_length").and_then(number), get("attention.head_count").and_then(number));
    let head = get("attention.key_length").and_then(number).or_else(|| Some(embedding? / heads.filter(|h| *h > 0)?));
    for (key, why) in [
        ("rope.dimension_count", "RoPE on part of each head only is not implemented"),
        ("attention.value_length", "values of another width than keys are not implemented"),
    ] {
        if let Some(v) = get(key).filter(|v| number(v) != head) {
            return refusal(&format!("{arch}.{key}"), format!("{v:?}"), why);
        }
    }
    if let Some(v) = get("expert_count").filter(|v| number(v).is_some_and(|n| n > 0)) {
        return refusal(&format!("{arch}.expert_count"), format!("{v:?}"), "mixtures of experts are not implemented");
    }
    None
}

/// The GGUF name of a Hugging Face tensor name (without `.weight`).
pub(crate) fn gguf_name(hf: &str) -> String {
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
    /// Whether q/k rows are in llama.cpp's order (see [`unpermute_rows`]).
    permuted: bool,
    config: Config,
    dequantize: bool,
    /// The GGUF names the network took.
    used: HashSet<String>,
}

impl GgufWeights {
    /// The tensor of a Hugging Face name (`...q_proj`, `...q_proj.weight`, `...q_proj.bias`).
    fn tensor(&mut self, hf: &str) -> Result<QTensor, ModelError> {
        let (base, kind) = match hf.strip_suffix(".bias") {
            Some(base) => (base, "bias"),
            None => (hf.strip_suffix(".weight").unwrap_or(hf), "weight"),
        };
        let name = format!("{}.{kind}", gguf_name(base));
        if !self.content.tensor_infos.contains_key(&name) {
            return Err(ModelError::Format { path: self.path.clone(), message: format!("missing tensor {name} ({hf})") });
        }
        self.used.insert(name.clone());
        self.content.tensor(&mut self.file, &name, &self.device).map_err(|e| ModelError::Format {
            path: self.path.clone(),
            message: format!("tensor {name} cannot be read (truncated or corrupt file?): {e}"),
        })
    }
}

impl Weights for GgufWeights {
    fn linear(&mut self, name: &str) -> Result<Linear, ModelError> {
        let mut q = self.tensor(name)?;
        let heads = if !self.permuted {
            None
        } else if name.ends_with("q_proj") {
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
        // float tensors are dense layers (a server stores them in its compute dtype)
        if self.dequantize || matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
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

    /// Each metadata key of a GGUF that changes the computation and is not implemented is
    /// refused by name, and so is a key medtune does not know; the same keys at what the
    /// network computes load.
    #[test]
    fn gguf_keys_that_change_the_computation_are_refused_by_name() {
        let check = |arch: &str, pairs: Vec<(&str, Value)>| {
            let mut meta: HashMap<String, Value> = pairs.into_iter().map(|(k, v)| (format!("{arch}.{k}"), v)).collect();
            meta.insert(format!("{arch}.embedding_length"), Value::U32(256));
            meta.insert(format!("{arch}.attention.head_count"), Value::U32(4));
            meta.insert("general.name".into(), Value::String("tiny".into()));
            refused(arch, &meta).map(|r| (r.field, r.value))
        };
        let refused_keys = [
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.dimension_count", Value::U32(32)),
            ("attention.value_length", Value::U32(128)),
            ("final_logit_softcapping", Value::F32(30.0)),
            ("attn_logit_softcapping", Value::F32(50.0)),
            ("expert_count", Value::U32(8)),
            ("attention.sliding_window_pattern", Value::U32(6)),
        ];
        for arch in ["llama", "qwen2"] {
            for (key, value) in refused_keys.clone() {
                let (field, _) = check(arch, vec![(key, value)]).unwrap_or_else(|| panic!("{arch}.{key} must be refused"));
                assert_eq!(field, format!("{arch}.{key}"));
            }
        }
        let fine = vec![
            ("rope.scaling.type", Value::String("linear".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.dimension_count", Value::U32(64)),
            ("attention.value_length", Value::U32(64)),
            ("expert_count", Value::U32(0)),
        ];
        assert_eq!(check("llama", fine), None);
        // an explicit head size: RoPE and values of its width
        let explicit = vec![
            ("attention.key_length", Value::U32(128)),
            ("attention.value_length", Value::U32(128)),
            ("rope.dimension_count", Value::U32(128)),
        ];
        assert_eq!(check("llama", explicit), None);
    }
}
