//! Models with random weights in a known shape (SmolLM2-135M, LLaMA-2-7B, Llama-3-8B, Mistral-7B), for speed
//! benchmarks and device-parity tests where the values do not matter.

use candle_core::{DType, Device, Tensor};

use super::config::{Config, Family, RopeScaling};
use super::linear::Linear;
use super::llama::{Llama, Weights};
use super::{CandleContext, ModelError};

/// The hyperparameters of a known shape: `smollm2` (SmolLM2-135M), `llama2-7b`, `llama3-8b`
/// (Llama 3.1 8B) or `mistral-7b` (Mistral 7B v0.3).
pub fn shape(name: &str) -> Option<Config> {
    match name {
        "smollm2" => Some(Config {
            family: Family::Llama,
            head_dim: 64,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            vocab_size: 49152,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            rope_scaling: None,
            sliding_window: None,
        }),
        "llama2-7b" => Some(Config {
            family: Family::Llama,
            head_dim: 128,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            vocab_size: 32000,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            rope_scaling: None,
            sliding_window: None,
        }),
        "llama3-8b" => Some(Config {
            family: Family::Llama,
            head_dim: 128,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            vocab_size: 128_256,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            max_position_embeddings: 131_072,
            tie_word_embeddings: false,
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            }),
            sliding_window: None,
        }),
        // Llama 3's block shapes, without its RoPE scaling, with its own vocabulary and base
        "mistral-7b" => Some(Config {
            family: Family::Mistral,
            vocab_size: 32_768,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 32_768,
            rope_scaling: None,
            ..shape("llama3-8b")?
        }),
        _ => None,
    }
}

/// A model of a known shape with weights drawn from N(0, 0.02²) (norms at 1), generated on
/// the CPU with a fixed seed and moved to `device`, so every device gets the same weights.
pub fn random(name: &str, device: &Device) -> Result<Llama, ModelError> {
    let config = shape(name).ok_or_else(|| ModelError::Format {
        path: name.into(),
        message: "unknown shape (smollm2, llama2-7b, llama3-8b, mistral-7b)".into(),
    })?;
    let mut w = RandomWeights { config: config.clone(), device: device.clone(), counter: 0 };
    Llama::load(config, &mut w, device)
}

struct RandomWeights {
    config: Config,
    device: Device,
    counter: u64,
}

impl RandomWeights {
    fn shape_of(&self, name: &str) -> (usize, usize) {
        let c = &self.config;
        let kv = c.num_key_value_heads * c.head_dim();
        let last = name.trim_end_matches(".weight").rsplit('.').next().unwrap_or("");
        match last {
            "q_proj" => (c.num_attention_heads * c.head_dim(), c.hidden_size),
            "o_proj" => (c.hidden_size, c.num_attention_heads * c.head_dim()),
            "k_proj" | "v_proj" => (kv, c.hidden_size),
            "gate_proj" | "up_proj" => (c.intermediate_size, c.hidden_size),
            "down_proj" => (c.hidden_size, c.intermediate_size),
            "embed_tokens" | "lm_head" => (c.vocab_size, c.hidden_size),
            _ => (c.hidden_size, 1),
        }
    }

    /// The next tensor's values: N(0, 0.02²)-scaled uniform, from a seed per tensor, so CPU
    /// and GPU models built this way are equal.
    fn values(&mut self, n: usize) -> Vec<f32> {
        self.counter += 1;
        // uniform in [-b, b) has the standard deviation of N(0, 0.02^2) for b = 0.02·√3
        uniform(n, 0.02 * 3f64.sqrt(), self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// `n` values uniform in [-bound, bound) from `seed` (SplitMix64): repeatable on any device.
/// SplitMix64's state after `i` steps is `start + i·γ`, so the values are made in chunks on
/// every core, each chunk starting from its own state, equal to one sequential pass (a 7B
/// model's 6.7 billion weights took about 20 s on one core).
pub fn uniform(n: usize, bound: f64, seed: u64) -> Vec<f32> {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    const CHUNK: usize = 1 << 20;
    let start = seed ^ GAMMA;
    let fill = |out: &mut [f32], first: usize| {
        let mut state = start.wrapping_add((first as u64).wrapping_mul(GAMMA));
        for v in out {
            state = state.wrapping_add(GAMMA);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            *v = ((((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * bound) as f32;
        }
    };
    let mut out = vec![0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads == 1 || n <= CHUNK {
        fill(&mut out, 0);
        return out;
    }
    let per = n.div_ceil(threads).max(CHUNK);
    std::thread::scope(|s| {
        for (i, part) in out.chunks_mut(per).enumerate() {
            s.spawn(move || fill(part, i * per));
        }
    });
    out
}

impl Weights for RandomWeights {
    fn linear(&mut self, name: &str) -> Result<Linear, ModelError> {
        let (r, c) = self.shape_of(name);
        let v = self.values(r * c);
        let t = Tensor::from_vec(v, (r, c), &Device::Cpu).and_then(|t| t.to_device(&self.device)).ctx(|| name.to_owned())?;
        Ok(Linear::Dense(t))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let (r, c) = self.shape_of(name);
        let t = if c == 1 {
            Tensor::ones(r, DType::F32, &self.device)
        } else {
            let v = self.values(r * c);
            Tensor::from_vec(v, (r, c), &Device::Cpu).and_then(|t| t.to_device(&self.device))
        };
        t.ctx(|| name.to_owned())
    }

    fn has(&self, name: &str) -> bool {
        name == "lm_head" && !self.config.tie_word_embeddings
    }
}

#[cfg(test)]
mod tests {
    /// The chunked, multi-threaded draw equals one sequential SplitMix64 pass.
    #[test]
    fn uniform_in_chunks_is_the_sequential_stream() {
        let (n, bound, seed) = (3 * (1 << 20) + 12_345, 0.5, 42);
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15u64;
        let want: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                ((((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * bound) as f32
            })
            .collect();
        assert!(super::uniform(n, bound, seed) == want);
        assert!(super::uniform(1000, bound, seed)[..] == want[..1000]);
    }
}
