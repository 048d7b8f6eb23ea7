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
        self.hidden_size / self.num_attention_heads
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
            rope_scaling: None,
            // Qwen2 writes a window it does not use unless `use_sliding_window` says so
            sliding_window: c.sliding_window.filter(|_| c.use_sliding_window != Some(false)),
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
        if let Some(t) = value.get("model_type").and_then(|t| t.as_str()).filter(|t| !MODEL_TYPES.contains(t)) {
            return Err(super::ModelError::Architecture { path: path.to_owned(), found: t.to_owned() });
        }
        let unsupported =
            |r: Refusal| super::ModelError::Unsupported { path: path.to_owned(), field: r.field, value: r.value, why: r.why.into() };
        if let Some(r) = refused(&value) {
            return Err(unsupported(r));
        }
        let scaling = rope_scaling(&value).map_err(unsupported)?;
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
        Ok(Config { rope_scaling: scaling, ..hf.into() })
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

/// The `model_type`s medtune computes exactly: LLaMA (Llama 2 and 3.x, SmolLM2, ...) and
/// Mistral (LLaMA with a sliding window).
const MODEL_TYPES: [&str; 2] = ["llama", "mistral"];

/// The architecture classes of [`MODEL_TYPES`].
const ARCHITECTURES: [&str; 2] = ["LlamaForCausalLM", "MistralForCausalLM"];

/// A field medtune does not implement, with its value and what it would change.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub field: String,
    pub value: String,
    pub why: &'static str,
}

/// The first field of a Hugging Face `config.json` that changes the computation in a way
/// medtune does not implement: RoPE scaling of a kind other than `linear` and `llama3`
/// (see [`rope_scaling`]), biases, a head size
/// other than `hidden_size / num_attention_heads`, another activation, logit soft-capping,
/// mixtures of experts, another architecture class.
pub(crate) fn refused(c: &serde_json::Value) -> Option<Refusal> {
    use serde_json::Value;
    let set = |key: &str| c.get(key).filter(|v| !v.is_null() && *v != &Value::Bool(false));
    let refusal = |field: &str, v: &Value, why: &'static str| Some(Refusal { field: field.to_owned(), value: v.to_string(), why });
    if let Some(v) =
        c.get("architectures").filter(|v| v.as_array().is_some_and(|a| a.iter().any(|x| !ARCHITECTURES.iter().any(|k| x == k))))
    {
        return refusal("architectures", v, "only LlamaForCausalLM and MistralForCausalLM are implemented");
    }
    if let Err(r) = rope_scaling(c) {
        return Some(r);
    }
    if let Some(v) = c.get("sliding_window").filter(|v| !v.is_null() && v.as_u64().is_none_or(|w| w == 0)) {
        return refusal("sliding_window", v, "a sliding window must be a positive number of tokens");
    }
    for (key, why) in [
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
            (r#", "rope_scaling": {"type": "linear", "factor": 2.0, "beta": 1}"#, "rope_scaling", "beta"),
            (r#", "rope_scaling": {"type": "dynamic", "factor": 2.0}"#, "rope_scaling", "dynamic"),
            (r#", "rope_scaling": {"type": "linear", "factor": -2.0}"#, "rope_scaling", "-2.0"),
            (r#", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}"#, "rope_parameters", "yarn"),
            (r#", "sliding_window": 0"#, "sliding_window", "0"),
            (r#", "sliding_window": "4k""#, "sliding_window", "4k"),
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
        let err = read(r#", "architectures": ["GemmaForCausalLM"]"#).expect_err("refused").to_string();
        assert!(err.contains("architectures = [\"GemmaForCausalLM\"]"), "{err}");
        // Mistral: LLaMA with a sliding window; a window Qwen2-style configs switch off is none
        let mistral = format!(
            "{{{}, \"sliding_window\": 4096}}",
            LLAMA.replace("\"llama\"", "\"mistral\"").replace("LlamaForCausalLM", "MistralForCausalLM")
        );
        let ok = Config::from_hf_json(&mistral, std::path::Path::new("m/config.json")).expect("mistral");
        assert_eq!(ok.sliding_window, Some(4096));
        let off = read(r#", "sliding_window": 4096, "use_sliding_window": false"#).expect("window switched off");
        assert_eq!(off.sliding_window, None);
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
