//! Generation speed: prompt tokens/s (one forward pass over the prompt) and generated
//! tokens/s (greedy decoding with the KV cache), median of runs.
//!
//! `cargo bench -p medtune --bench generation_speed -- MODEL [PROMPT_TOKENS] [NEW_TOKENS]`
//! where MODEL is a `.gguf` (`f32:FILE.gguf` dequantizes it), a Hugging Face folder, or `random:smollm2` (SmolLM2-135M's shape
//! with random f32 weights: speed does not depend on the values). With `--features cuda` it
//! runs on the GPU. host/benches/hf_generation_speed.py measures transformers the same way.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use medtune::model::{self, Cache, Llama};

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn device() -> Device {
    #[cfg(feature = "cuda")]
    return Device::new_cuda(0).expect("CUDA device 0");
    #[cfg(not(feature = "cuda"))]
    Device::Cpu
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let spec = args.first().cloned().unwrap_or_else(|| "random:smollm2".into());
    let prompt_len: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let new_tokens: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let device = device();
    let llama: Llama = match spec.strip_prefix("random:") {
        Some(shape) => model::random(shape, &device).expect("random model"),
        None => {
            // `f32:PATH` dequantizes a GGUF to f32 (what transformers computes with)
            let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let (path, dequantize) = match spec.strip_prefix("f32:") {
                Some(p) => (p, true),
                None => (spec.as_str(), false),
            };
            model::load_with(&repo.join(path), &device, model::LoadOptions { dequantize }).expect("load").llama
        }
    };
    let ids: Vec<u32> = (0..prompt_len as u32).map(|i| 100 + (i * 7919) % 30_000).collect();
    #[cfg(feature = "cuda")]
    if let Some(shape) = spec.strip_prefix("random:").filter(|s| *s == "smollm2") {
        // the same weights on the CPU: the GPU's logits must match (the `cuda_matches_cpu`
        // unit test, run here too because the GPU machine has no cargo)
        let cpu = model::random(shape, &Device::Cpu).expect("cpu model");
        let probe = &ids[..ids.len().min(32)];
        let logits = |m: &Llama, d: &Device| -> Vec<f32> {
            let x = Tensor::new(probe, d).and_then(|t| t.unsqueeze(0)).expect("x");
            m.forward(&x, &mut Cache::new(m)).and_then(|l| l.flatten_all()).and_then(|l| l.to_vec1::<f32>()).expect("logits")
        };
        let (c, g) = (logits(&cpu, &Device::Cpu), logits(&llama, &device));
        let diff = c.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = c.iter().map(|a| a.abs()).fold(0.0f32, f32::max);
        println!("cuda vs cpu, {shape}, {} tokens: max |Δlogit| = {diff:.2e} (logits up to {scale:.2})", probe.len());
        assert!(diff < 1e-3 * scale.max(1.0), "GPU and CPU disagree");
    }
    let input = Tensor::new(ids.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("input");
    let sync = |t: &Tensor| t.to_device(&Device::Cpu).expect("sync");
    // warm-up
    sync(&llama.forward(&input, &mut Cache::new(&llama)).expect("forward"));
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut cache = Cache::new(&llama);
        let t = Instant::now();
        let logits = llama.forward(&input, &mut cache).expect("prompt");
        sync(&logits);
        prefill.push(prompt_len as f64 / t.elapsed().as_secs_f64());
        let mut next = 100u32;
        let t = Instant::now();
        for _ in 0..new_tokens {
            let step = Tensor::new(&[next], &device).and_then(|x| x.unsqueeze(0)).expect("step");
            let logits = llama.forward(&step, &mut cache).expect("decode");
            next = logits.flatten_all().and_then(|l| l.argmax(0)).and_then(|a| a.to_scalar::<u32>()).expect("argmax");
        }
        decode.push(new_tokens as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "medtune {spec} on {:?}: prompt {prompt_len} tokens {:.0} tokens/s, generation {new_tokens} tokens {:.1} tokens/s",
        device.location(),
        median(prefill),
        median(decode)
    );
}
