//! The architecture's hyperparameters: a plain `Config` with no options, made from GGUF
//! metadata or a Hugging Face `config.json`.

use serde::Deserialize;

/// The architectures medtune computes: LLaMA and the descendants that differ from it only in
/// what [`Config`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// LLaMA 2 and 3.x, SmolLM2, and every `LlamaForCausalLM`.
    Llama,
    /// Mistral: LLaMA with a sliding window and an explicit head size.
    Mistral,
    /// Qwen2 and Qwen2.5: LLaMA with biases on the q, k and v projections.
    Qwen2,
}

impl Family {
    /// Every family, in the order errors list them.
    pub const ALL: [Family; 3] = [Family::Llama, Family::Mistral, Family::Qwen2];

    /// The `model_type` of its `config.json` (and GGUF's `general.architecture`).
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }

    /// The transformers class of its `architectures`.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// Whether q, k and v carry biases (o and the MLP never do).
    pub fn qkv_bias(self) -> bool {
        self == Family::Qwen2
    }

    /// The family of a `model_type`.
    pub fn of_model_type(t: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == t)
    }
}

/// LLaMA-family hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which architecture: what the family adds to LLaMA (q/k/v biases).
    pub family: Family,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Size of one attention head (`hidden_size / num_attention_heads` unless the model says
    /// otherwise, as Mistral NeMo's 128 with 32 heads of a 5,120-wide stream).
    pub head_dim: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Whether the output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// How RoPE's frequencies are scaled for long contexts (Llama 3.1 onwards), if they are.
    pub rope_scaling: Option<RopeScaling>,
    /// Mistral's sliding window: a token attends to at most this many tokens (itself
    /// included). Sequences longer than the window are refused, so within it attention is
    /// the plain causal one.
    pub sliding_window: Option<usize>,
}

/// RoPE scaling: how each rotation frequency of the default RoPE is changed.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (transformers' `linear`).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a smooth blend between
    /// (transformers' `llama3`).
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f32,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are low.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are high.
        high_freq_factor: f32,
        /// The context length the model was first trained at.
        original_max_position_embeddings: f32,
    },
    /// One divisor per frequency (llama.cpp's `rope_freqs` tensor, its form of Llama 3.1's).
    Divisors(Vec<f32>),
}

impl Config {
    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The longest sequence medtune runs the model on: its positions, and its sliding window.
    pub fn max_sequence(&self) -> usize {
        self.sliding_window.map_or(self.max_position_embeddings, |w| w.min(self.max_position_embeddings))
    }

    /// RoPE's rotation frequencies, `head_dim / 2` of them, scaled as the config says:
    /// computed in f32 as transformers computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let plain = (0..d / 2).map(|i| 1.0 / (self.rope_theta as f32).powf(2.0 * i as f32 / d as f32));
        match &self.rope_scaling {
            None => plain.collect(),
            Some(RopeScaling::Linear { factor }) => plain.map(|f| f / factor).collect(),
            Some(RopeScaling::Divisors(d)) => plain.zip(d).map(|(f, d)| f / d).collect(),
            Some(RopeScaling::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old }) => {
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < old / high {
                            f
                        } else if wavelen > old / low {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// The scaling as `config.json` writes it (`rope_scaling`), for checkpoints medtune saves.
    pub fn rope_scaling_json(&self) -> Result<serde_json::Value, String> {
        Ok(match &self.rope_scaling {
            None => serde_json::Value::Null,
            Some(RopeScaling::Linear { factor }) => serde_json::json!({"rope_type": "linear", "factor": factor}),
            Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                serde_json::json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": *original_max_position_embeddings as u64,
                })
            }
            Some(RopeScaling::Divisors(_)) => {
                return Err("per-frequency RoPE divisors (a GGUF rope_freqs tensor) have no config.json form".into());
            }
        })
    }
}

/// `config.json` of a Hugging Face checkpoint (what [`refused`] lets through).
#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    4096
}

impl Config {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &std::path::Path) -> Result<Self, super::ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| super::ModelError::Read { path: path.to_owned(), source })?;
        Self::from_hf_json(&text, path)
    }

    /// A Hugging Face `config.json`'s text (`path` names it in errors): a model of a
    /// [`Family`] whose every field that changes the computation medtune implements; anything
    /// else, and any key medtune does not know, is refused by name and value.
    pub fn from_hf_json(text: &str, path: &std::path::Path) -> Result<Self, super::ModelError> {
        let format = |message: String| super::ModelError::Format { path: path.to_owned(), message };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        let family = match value.get("model_type") {
            Some(t) => t.as_str().and_then(Family::of_model_type).ok_or_else(|| super::ModelError::Architecture {
                path: path.to_owned(),
                found: t.as_str().unwrap_or_default().to_owned(),
            })?,
            // a config without model_type: its architecture class, else LLaMA
            None => value
                .pointer("/architectures/0")
                .and_then(|a| Family::ALL.into_iter().find(|f| a == f.architecture()))
                .unwrap_or(Family::Llama),
        };
        let unsupported =
            |r: Refusal| super::ModelError::Unsupported { path: path.to_owned(), field: r.field, value: r.value, why: r.why.into() };
        if let Some(r) = refused(&value, family) {
            return Err(unsupported(r));
        }
        let scaling = rope_scaling(&value).map_err(unsupported)?;
        // transformers 5 keeps the RoPE base in `rope_parameters` (checked above to be the default kind)
        if let Some(theta) = value.pointer("/rope_parameters/rope_theta").cloned() {
            value["rope_theta"] = theta;
        }
        let hf: HfConfig = serde_json::from_value(value).map_err(|e| format(e.to_string()))?;
        let kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if hf.num_attention_heads == 0 || kv_heads == 0 || !hf.num_attention_heads.is_multiple_of(kv_heads) {
            return Err(format(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv_heads}",
                hf.num_attention_heads
            )));
        }
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None if hf.hidden_size.is_multiple_of(hf.num_attention_heads) => hf.hidden_size / hf.num_attention_heads,
            None => {
                return Err(format(format!(
                    "hidden_size {} is not a multiple of num_attention_heads {} and no head_dim is given",
                    hf.hidden_size, hf.num_attention_heads
                )));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(format(format!("head_dim {head_dim}: RoPE needs an even head size")));
        }
        Ok(Config {
            family,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            head_dim,
            num_key_value_heads: kv_heads,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            rope_scaling: scaling,
            // Qwen2 writes a window it does not use unless `use_sliding_window` says so
            sliding_window: hf.sliding_window.filter(|_| hf.use_sliding_window != Some(false)),
        })
    }
}

/// The RoPE scaling of a `config.json`: transformers 4's `rope_scaling` or 5's
/// `rope_parameters`, of type `default`, `linear` or `llama3` with exactly that type's
/// keys; any other type, a missing or extra key, or a factor that is not a positive number is
/// refused.
fn rope_scaling(c: &serde_json::Value) -> Result<Option<RopeScaling>, Refusal> {
    // the first of the two that is set: a `"rope_scaling": null` beside `rope_parameters` says nothing
    let Some((field, v)) = [("rope_scaling", c.get("rope_scaling")), ("rope_parameters", c.get("rope_parameters"))]
        .into_iter()
        .find_map(|(k, v)| Some((k, v.filter(|v| !v.is_null())?)))
    else {
        return Ok(None);
    };
    let Some(map) = v.as_object() else {
        return Err(Refusal { field: field.into(), value: v.to_string(), why: "RoPE scaling must be an object" });
    };
    let refuse = |why: &'static str| Refusal { field: field.to_owned(), value: v.to_string(), why };
    let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
    let keys: &[&str] = match kind {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" => &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        _ => return Err(refuse("RoPE scaling other than linear and llama3 (yarn, dynamic, longrope, ...) is not implemented")),
    };
    if map.keys().any(|k| !["rope_type", "type", "rope_theta"].contains(&k.as_str()) && !keys.contains(&k.as_str())) {
        return Err(refuse("a RoPE scaling key medtune does not implement"));
    }
    let number = |k: &str| map.get(k).and_then(serde_json::Value::as_f64).filter(|x| *x > 0.0).map(|x| x as f32);
    let mut values = Vec::with_capacity(keys.len());
    for k in keys {
        values.push(number(k).ok_or_else(|| refuse("a RoPE scaling key is missing or not a positive number"))?);
    }
    Ok(match values[..] {
        [] => None,
        [factor] => Some(RopeScaling::Linear { factor }),
        [factor, low, high, old] if high > low => {
            Some(RopeScaling::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old })
        }
        _ => return Err(refuse("llama3 RoPE scaling needs high_freq_factor above low_freq_factor")),
    })
}

/// A field medtune does not implement, with its value and what it would change.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub field: String,
    pub value: String,
    pub why: &'static str,
}

/// The `config.json` keys medtune reads ([`HfConfig`], the RoPE scaling, the refused ones
/// below) or knows to leave the forward pass alone (metadata, token ids, generation defaults,
/// initialization); any other key is refused, since it may change the computation.
const KNOWN_KEYS: &[&str] = &[
    // read, or checked by `refused`
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "max_position_embeddings",
    "tie_word_embeddings",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "hidden_act",
    "hidden_activation",
    "attention_bias",
    "mlp_bias",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "num_experts",
    "num_local_experts",
    "attention_dropout",
    "quantization_config",
    "auto_map",
    "pretraining_tp",
    "rope_interleaved",
    "use_mrope",
    // no part of the forward pass
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "initializer_range",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_bfloat16",
    "torchscript",
    "_attn_implementation",
    "_commit_hash",
    "id2label",
    "label2id",
    "tokenizer_class",
    "finetuning_task",
    "task_specific_params",
    "problem_type",
    "prefix",
    "max_length",
    "min_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
    "repetition_penalty",
    "length_penalty",
    "bad_words_ids",
    "num_return_sequences",
    "_from_model_config",
    "is_llama_config",
    "transformers.js_config",
    "unsloth_version",
    "unsloth_fixed",
];

/// The first field of a Hugging Face `config.json` of `family` that changes the computation
/// in a way medtune does not implement: another architecture class, RoPE scaling of a kind
/// other than `linear` and `llama3` (see [`rope_scaling`]), biases LLaMA has not, per-layer
/// sliding windows, another activation, logit soft-capping, mixtures of experts, attention
/// dropout, a pre-quantized checkpoint, remote code, or a key medtune does not know.
pub(crate) fn refused(c: &serde_json::Value, family: Family) -> Option<Refusal> {
    use serde_json::Value;
    let set = |key: &str| c.get(key).filter(|v| !v.is_null() && *v != &Value::Bool(false));
    let refusal = |field: &str, v: &Value, why: &'static str| Some(Refusal { field: field.to_owned(), value: v.to_string(), why });
    if let Some(v) = c.get("architectures").filter(|v| v.as_array().is_none_or(|a| a.iter().any(|x| x != family.architecture()))) {
        return refusal(
            "architectures",
            v,
            "only LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM are implemented, each with its own model_type",
        );
    }
    if let Some(key) = c.as_object().and_then(|o| o.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str()))) {
        return refusal(key, &c[key], "a config.json key medtune does not know: it may change the computation");
    }
    if let Err(r) = rope_scaling(c) {
        return Some(r);
    }
    if let Some(v) = c.get("sliding_window").filter(|v| !v.is_null() && v.as_u64().is_none_or(|w| w == 0)) {
        return refusal("sliding_window", v, "a sliding window must be a positive number of tokens");
    }
    // Qwen2's window covers only the layers from max_window_layers on
    if family == Family::Qwen2
        && let Some(v) = set("use_sliding_window")
    {
        return refusal("use_sliding_window", v, "Qwen2's sliding window on some layers only is not implemented");
    }
    if let Some(v) = c.get("layer_types").filter(|v| v.as_array().is_none_or(|a| a.iter().any(|t| t != "full_attention"))) {
        return refusal("layer_types", v, "layers of another kind than full attention (sliding, linear) are not implemented");
    }
    for (key, why) in [
        ("attention_bias", "biases on q, k, v and o are not implemented (Qwen2's on q, k and v are)"),
        ("mlp_bias", "biases on the MLP are not implemented"),
        ("attn_logit_softcapping", "logit soft-capping is not implemented"),
        ("final_logit_softcapping", "logit soft-capping is not implemented"),
        (
            "quantization_config",
            "pre-quantized checkpoints (GPTQ, AWQ, bitsandbytes, FP8) are not implemented: use the unquantized folder or a GGUF",
        ),
        ("auto_map", "a model with its own Python code is not implemented"),
        ("rope_interleaved", "RoPE on interleaved pairs is not implemented (Hugging Face rotates halves)"),
        ("use_mrope", "multimodal RoPE is not implemented"),
    ] {
        if let Some(v) = set(key) {
            return refusal(key, v, why);
        }
    }
    if let Some(v) = c.get("attention_dropout").filter(|v| v.as_f64().is_none_or(|p| p != 0.0)) {
        return refusal("attention_dropout", v, "dropout of the attention probabilities is not implemented");
    }
    for key in ["num_experts", "num_local_experts"] {
        if let Some(v) = c.get(key).filter(|v| v.as_u64().is_some_and(|n| n > 0)) {
            return refusal(key, v, "mixtures of experts are not implemented");
        }
    }
    for key in ["hidden_act", "hidden_activation"] {
        if let Some(v) = c.get(key).filter(|v| *v != "silu") {
            return refusal(key, v, "only SiLU (SwiGLU) is implemented");
        }
    }
    if let Some(v) = c.get("head_dim").filter(|v| !v.is_null() && v.as_u64().is_none_or(|d| d == 0)) {
        return refusal("head_dim", v, "a head size must be a positive number");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#""model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 100, "hidden_act": "silu""#;

    fn read(extra: &str) -> Result<Config, crate::model::ModelError> {
        Config::from_hf_json(&format!("{{{LLAMA}{extra}}}"), std::path::Path::new("m/config.json"))
    }

    /// Each field that changes the computation and is not implemented is refused by name and
    /// value, with the file; the ones implemented, or set to what LLaMA computes, load.
    #[test]
    fn fields_that_change_the_computation_are_honoured_or_refused_by_name() {
        for (extra, field, value) in [
            (r#", "rope_scaling": {"rope_type": "llama3", "factor": 32.0}"#, "rope_scaling", "llama3"),
            (r#", "rope_scaling": {"type": "linear", "factor": 2.0, "beta": 1}"#, "rope_scaling", "beta"),
            (r#", "rope_scaling": {"type": "dynamic", "factor": 2.0}"#, "rope_scaling", "dynamic"),
            (r#", "rope_scaling": {"type": "linear", "factor": -2.0}"#, "rope_scaling", "-2.0"),
            (r#", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}"#, "rope_parameters", "yarn"),
            (r#", "sliding_window": 0"#, "sliding_window", "0"),
            (r#", "sliding_window": "4k""#, "sliding_window", "4k"),
            (r#", "attention_bias": true"#, "attention_bias", "true"),
            (r#", "mlp_bias": true"#, "mlp_bias", "true"),
            (r#", "head_dim": 0"#, "head_dim", "0"),
            (r#", "logits_scaling": 8.0"#, "logits_scaling", "8.0"),
            (r#", "quantization_config": {"quant_method": "awq"}"#, "quantization_config", "awq"),
            (r#", "auto_map": {"AutoModelForCausalLM": "m.M"}"#, "auto_map", "m.M"),
            (r#", "attention_dropout": 0.1"#, "attention_dropout", "0.1"),
            (r#", "rope_interleaved": true"#, "rope_interleaved", "true"),
            (r#", "layer_types": ["full_attention", "sliding_attention"]"#, "layer_types", "sliding_attention"),
            (r#", "final_logit_softcapping": 30.0"#, "final_logit_softcapping", "30.0"),
            (r#", "attn_logit_softcapping": 50.0"#, "attn_logit_softcapping", "50.0"),
            (r#", "num_local_experts": 8"#, "num_local_experts", "8"),
            (r#", "hidden_activation": "gelu_pytorch_tanh""#, "hidden_activation", "gelu_pytorch_tanh"),
        ] {
            let err = read(extra).err().unwrap_or_else(|| panic!("{field} must be refused")).to_string();
            assert!(err.starts_with("m/config.json: ") && err.contains(&format!("{field} = ")) && err.contains(value), "{err}");
        }
        for arch in ["GemmaForCausalLM", "MistralForCausalLM"] {
            let err = read(&format!(r#", "architectures": ["{arch}"]"#)).expect_err("refused").to_string();
            assert!(err.contains(&format!("architectures = [\"{arch}\"]")), "{err}");
        }
        // Mistral: LLaMA with a sliding window; a window Qwen2-style configs switch off is none
        let mistral = format!(
            "{{{}, \"sliding_window\": 4096}}",
            LLAMA.replace("\"llama\"", "\"mistral\"").replace("LlamaForCausalLM", "MistralForCausalLM")
        );
        let ok = Config::from_hf_json(&mistral, std::path::Path::new("m/config.json")).expect("mistral");
        assert_eq!(ok.sliding_window, Some(4096));
        let off = read(r#", "sliding_window": 4096, "use_sliding_window": false"#).expect("window switched off");
        assert_eq!(off.sliding_window, None);
        let err = Config::from_hf_json(&format!("{{{}}}", LLAMA.replace("\"llama\"", "\"gemma3\"")), std::path::Path::new("m/config.json"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("unsupported architecture \"gemma3\""), "{err}");
        // Qwen2: biases on q, k and v; its window only on some layers is refused
        let qwen2 = LLAMA.replace("\"llama\"", "\"qwen2\"").replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        let qwen2 = |extra: &str| Config::from_hf_json(&format!("{{{qwen2}{extra}}}"), std::path::Path::new("m/config.json"));
        let ok = qwen2(r#", "use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 21"#).expect("qwen2");
        assert_eq!((ok.family, ok.family.qkv_bias(), ok.sliding_window), (Family::Qwen2, true, None));
        let err = qwen2(r#", "use_sliding_window": true, "sliding_window": 32768"#).expect_err("refused").to_string();
        assert!(err.contains("use_sliding_window = true"), "{err}");
        // an explicit head size (Mistral NeMo's 128 beside 5,120 / 32 = 160)
        let ok = read(r#", "head_dim": 32"#).expect("explicit head_dim");
        assert_eq!((ok.head_dim(), ok.hidden_size / ok.num_attention_heads), (32, 16));
        let err = read(r#", "head_dim": 7"#).expect_err("odd").to_string();
        assert!(err.contains("head_dim 7"), "{err}");
        // what LLaMA computes anyway
        let ok = read(r#", "rope_scaling": null, "attention_bias": false, "mlp_bias": false, "head_dim": 16, "sliding_window": null, "rope_theta": 5e5,
            "rope_interleaved": false, "is_llama_config": true, "pretraining_tp": 1, "attention_dropout": 0.0"#)
            .expect("plain llama");
        assert_eq!((ok.head_dim(), ok.rope_theta), (16, 5e5));
        // transformers 5 writes the RoPE base into rope_parameters
        let ok = read(r#", "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}"#).expect("default rope");
        assert_eq!((ok.rope_theta, ok.rope_scaling), (5e5, None));
        // the scalings implemented
        let ok = read(r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#).expect("linear");
        assert_eq!(ok.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        let llama31 = r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}"#;
        let ok = read(llama31).expect("llama3");
        assert!(matches!(ok.rope_scaling, Some(RopeScaling::Llama3 { factor: 8.0, .. })));
        let five = read(&llama31.replace("rope_scaling", "rope_parameters").replace("\"factor\"", "\"rope_theta\": 5e5, \"factor\""))
            .expect("transformers 5");
        assert_eq!((five.rope_theta, five.rope_scaling), (5e5, ok.rope_scaling.clone()));
        let both = format!(r#", "rope_scaling": null{}"#, llama31.replace("rope_scaling", "rope_parameters"));
        assert_eq!(read(&both).expect("null beside rope_parameters").rope_scaling, ok.rope_scaling);
    }

    /// Llama 3.1 8B's RoPE (theta 500000, head size 128, llama3 scaling by 8 from 8192): the
    /// high frequencies stay, the low ones are divided by 8, the ones between are blended;
    /// linear divides them all; per-frequency divisors reproduce either.
    #[test]
    fn rope_frequencies_are_scaled_as_the_config_says() {
        let mut c = Config {
            family: Family::Llama,
            head_dim: 128,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 1,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            vocab_size: 10,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            max_position_embeddings: 131_072,
            tie_word_embeddings: false,
            rope_scaling: None,
            sliding_window: None,
        };
        let plain = c.inv_freq();
        assert_eq!((plain.len(), plain[0]), (64, 1.0));
        assert!((plain[63] / 500_000f32.powf(-126.0 / 128.0) - 1.0).abs() < 1e-5);
        c.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        });
        let scaled = c.inv_freq();
        let wavelen = |f: f32| 2.0 * std::f32::consts::PI / f;
        for (p, s) in plain.iter().zip(&scaled) {
            if wavelen(*p) < 2048.0 {
                assert_eq!(p, s, "high frequencies stay");
            } else if wavelen(*p) > 8192.0 {
                assert_eq!(p / 8.0, *s, "low frequencies are divided by the factor");
            } else {
                let smooth = (8192.0 / wavelen(*p) - 1.0) / 3.0;
                assert!(*s < *p && *s > p / 8.0 && (s - ((1.0 - smooth) * p / 8.0 + smooth * p)).abs() <= 1e-9, "{p} -> {s}");
            }
        }
        let (high, low) = (plain.iter().filter(|f| wavelen(**f) < 2048.0).count(), plain.iter().filter(|f| wavelen(**f) > 8192.0).count());
        assert_eq!((high, low), (29, 29), "both sides and {} blended", 64 - high - low);
        c.rope_scaling = Some(RopeScaling::Divisors(plain.iter().zip(&scaled).map(|(p, s)| p / s).collect()));
        let again = c.inv_freq();
        assert!(again.iter().zip(&scaled).all(|(a, s)| (a / s - 1.0).abs() < 1e-6));
        c.rope_scaling = Some(RopeScaling::Linear { factor: 4.0 });
        assert!(c.inv_freq().iter().zip(&plain).all(|(a, p)| *a == p / 4.0));
    }
}
