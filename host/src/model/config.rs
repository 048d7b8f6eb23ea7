//! The architecture's hyperparameters: a plain `Config` with no options, made from GGUF
//! metadata or a Hugging Face `config.json`.

use serde::Deserialize;

/// LLaMA hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
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
}

impl Config {
    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `config.json` of a Hugging Face LLaMA checkpoint (what [`refused`] lets through).
#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
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

impl From<HfConfig> for Config {
    fn from(c: HfConfig) -> Self {
        Config {
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            vocab_size: c.vocab_size,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta,
            max_position_embeddings: c.max_position_embeddings,
            tie_word_embeddings: c.tie_word_embeddings,
        }
    }
}

impl Config {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &std::path::Path) -> Result<Self, super::ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| super::ModelError::Read { path: path.to_owned(), source })?;
        Self::from_hf_json(&text, path)
    }

    /// A Hugging Face `config.json`'s text (`path` names it in errors): a LLaMA whose every
    /// field that changes the computation medtune implements; anything else is refused by
    /// name and value.
    pub fn from_hf_json(text: &str, path: &std::path::Path) -> Result<Self, super::ModelError> {
        let format = |message: String| super::ModelError::Format { path: path.to_owned(), message };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        if let Some(t) = value.get("model_type").and_then(|t| t.as_str()).filter(|t| *t != "llama") {
            return Err(super::ModelError::Architecture { path: path.to_owned(), found: t.to_owned() });
        }
        if let Some(r) = refused(&value) {
            return Err(super::ModelError::Unsupported { path: path.to_owned(), field: r.field, value: r.value, why: r.why.into() });
        }
        // transformers 5 keeps the RoPE base in `rope_parameters` (checked above to be the default kind)
        if let Some(theta) = value.pointer("/rope_parameters/rope_theta").cloned() {
            value["rope_theta"] = theta;
        }
        let hf: HfConfig = serde_json::from_value(value).map_err(|e| format(e.to_string()))?;
        if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
            return Err(format(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                hf.hidden_size, hf.num_attention_heads
            )));
        }
        Ok(hf.into())
    }
}

/// A field medtune does not implement, with its value and what it would change.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub field: String,
    pub value: String,
    pub why: &'static str,
}

/// The first field of a Hugging Face `config.json` that changes the computation in a way
/// medtune does not implement: RoPE scaling of any kind (transformers 4's `rope_scaling`, 5's
/// `rope_parameters` other than the default), sliding-window attention, biases, a head size
/// other than `hidden_size / num_attention_heads`, another activation, logit soft-capping,
/// mixtures of experts, another architecture class.
pub(crate) fn refused(c: &serde_json::Value) -> Option<Refusal> {
    use serde_json::Value;
    let set = |key: &str| c.get(key).filter(|v| !v.is_null() && *v != &Value::Bool(false));
    let refusal = |field: &str, v: &Value, why: &'static str| Some(Refusal { field: field.to_owned(), value: v.to_string(), why });
    if let Some(v) = c.get("architectures").filter(|v| v.as_array().is_some_and(|a| a.iter().any(|x| x != "LlamaForCausalLM"))) {
        return refusal("architectures", v, "only LlamaForCausalLM is implemented");
    }
    if let Some(v) = set("rope_scaling") {
        return refusal("rope_scaling", v, "RoPE scaling is not implemented");
    }
    if let Some(v) = c.get("rope_parameters").filter(|p| p.get("rope_type").is_some_and(|t| t != "default")) {
        return refusal("rope_parameters", v, "RoPE scaling is not implemented");
    }
    for (key, why) in [
        ("sliding_window", "sliding-window attention is not implemented"),
        ("use_sliding_window", "sliding-window attention is not implemented"),
        ("attention_bias", "biases on q, k, v and o are not implemented"),
        ("mlp_bias", "biases on the MLP are not implemented"),
        ("attn_logit_softcapping", "logit soft-capping is not implemented"),
        ("final_logit_softcapping", "logit soft-capping is not implemented"),
    ] {
        if let Some(v) = set(key) {
            return refusal(key, v, why);
        }
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
    let (hidden, heads) = (c.get("hidden_size").and_then(Value::as_u64), c.get("num_attention_heads").and_then(Value::as_u64));
    if let (Some(v), Some(h), Some(n)) = (c.get("head_dim").filter(|v| !v.is_null()), hidden, heads)
        && n > 0
        && v.as_u64() != Some(h / n)
    {
        return refusal("head_dim", v, "a head size other than hidden_size / num_attention_heads is not implemented");
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
            (r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#, "rope_scaling", "linear"),
            (r#", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}"#, "rope_parameters", "yarn"),
            (r#", "sliding_window": 4096"#, "sliding_window", "4096"),
            (r#", "use_sliding_window": true"#, "use_sliding_window", "true"),
            (r#", "attention_bias": true"#, "attention_bias", "true"),
            (r#", "mlp_bias": true"#, "mlp_bias", "true"),
            (r#", "head_dim": 32"#, "head_dim", "32"),
            (r#", "final_logit_softcapping": 30.0"#, "final_logit_softcapping", "30.0"),
            (r#", "attn_logit_softcapping": 50.0"#, "attn_logit_softcapping", "50.0"),
            (r#", "num_local_experts": 8"#, "num_local_experts", "8"),
            (r#", "hidden_activation": "gelu_pytorch_tanh""#, "hidden_activation", "gelu_pytorch_tanh"),
        ] {
            let err = read(extra).err().unwrap_or_else(|| panic!("{field} must be refused")).to_string();
            assert!(err.starts_with("m/config.json: ") && err.contains(&format!("{field} = ")) && err.contains(value), "{err}");
        }
        let err = read(r#", "architectures": ["MistralForCausalLM"]"#).expect_err("refused").to_string();
        assert!(err.contains("architectures = [\"MistralForCausalLM\"]"), "{err}");
        let err = Config::from_hf_json(&format!("{{{}}}", LLAMA.replace("\"llama\"", "\"qwen2\"")), std::path::Path::new("m/config.json"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("unsupported architecture \"qwen2\""), "{err}");
        // what LLaMA computes anyway
        let ok = read(r#", "rope_scaling": null, "attention_bias": false, "mlp_bias": false, "head_dim": 16, "sliding_window": null, "rope_theta": 5e5"#)
            .expect("plain llama");
        assert_eq!((ok.head_dim(), ok.rope_theta), (16, 5e5));
        // transformers 5 writes the RoPE base into rope_parameters
        let ok = read(r#", "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}"#).expect("default rope");
        assert_eq!(ok.rope_theta, 5e5);
    }
}
