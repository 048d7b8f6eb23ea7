//! The batching engine's decode speed: tokens/s of B sequences stepped together
//! (`Llama::forward_segments`, one step of `medtune serve`'s batching thread), for B = 1 and
//! B = 16, each sequence after a prompt of its own, and the time of a prompt's first step
//! (its first 256 tokens from an empty cache); medians of runs.
//!
//! `cargo bench -p medtune [--features cuda] --bench batch_speed -- MODEL [PROMPT] [STEPS] [--bf16]`
//! where MODEL is a `.gguf`, a Hugging Face folder or `random:SHAPE` (`smollm2`, `llama2-7b`,
//! `llama3-8b`, `mistral-7b`: random weights, speed does not depend on the values). `--bf16`
//! computes in bf16 with the dense weights stored in bf16 (as `serve` does on a GPU); the
//! server's copies for batched steps are kept as it keeps them. With `--features cuda` it
//! runs on GPU 0.

use std::time::Instant;

use candle_core::{DType, Device};
use medtune::model::{self, Llama, Segment, SeqCache};

const RUNS: usize = 3;

fn device() -> Device {
    #[cfg(feature = "cuda")]
    return Device::new_cuda(0).expect("CUDA device 0");
    #[cfg(not(feature = "cuda"))]
    Device::Cpu
}

fn main() {
    model::keep_freed_memory();
    let bf16 = std::env::args().any(|a| a == "--bf16");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let spec = args.first().cloned().unwrap_or_else(|| "random:smollm2".into());
    let prompt: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let steps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let device = device();
    let mut llama: Llama = match spec.strip_prefix("random:") {
        Some(shape) => model::random(shape, &device).expect("random model"),
        None => model::load(std::path::Path::new(&spec), &device).expect("load").llama,
    };
    if bf16 {
        llama.set_compute_dtype(DType::BF16);
    }
    llama.store_dense_in_compute_dtype().expect("weights in the compute dtype");
    llama.keep_dense_copies().expect("copies for batched steps");
    let vocab = llama.config().vocab_size as u32;
    let ids: Vec<u32> = (0..prompt as u32).map(|i| 100 + (i * 7919) % (vocab - 200)).collect();
    for batch in [1usize, 16] {
        let (mut rates, mut firsts) = (Vec::new(), Vec::new());
        for run in 0..=RUNS {
            let mut caches: Vec<SeqCache> = (0..batch).map(|_| SeqCache::new(&llama)).collect();
            // the prompts, 256 tokens per step as the server reads them
            for cache in caches.iter_mut() {
                for (i, chunk) in ids.chunks(256).enumerate() {
                    let t = Instant::now();
                    let mut seg = [Segment { ids: chunk, cache: &mut *cache, lora: None }];
                    llama.forward_segments(&mut seg).expect("prompt");
                    if i == 0 && run > 0 {
                        firsts.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let mut next: Vec<u32> = (0..batch as u32).map(|b| 1000 + b).collect();
            let t = Instant::now();
            for _ in 0..steps {
                let tokens = next.clone();
                let mut segs: Vec<Segment<'_>> = tokens
                    .iter()
                    .zip(caches.iter_mut())
                    .map(|(t, cache)| Segment { ids: std::slice::from_ref(t), cache, lora: None })
                    .collect();
                let logits = llama.forward_segments(&mut segs).expect("step");
                next = logits.argmax(1).and_then(|a| a.to_vec1::<u32>()).expect("argmax");
            }
            let rate = (batch * steps) as f64 / t.elapsed().as_secs_f64();
            if run > 0 {
                rates.push(rate); // run 0 warms up
            }
        }
        rates.sort_by(f64::total_cmp);
        firsts.sort_by(f64::total_cmp);
        let (med, first) = (rates[rates.len() / 2], firsts[firsts.len() / 2]);
        println!(
            "{{\"engine\": \"medtune\", \"model\": {spec:?}, \"dtype\": {:?}, \"batch\": {batch}, \"prompt\": {prompt}, \"steps\": {steps}, \"decode_tokens_per_s\": {med:.1}, \"first_chunk_ms\": {first:.1}}}",
            if bf16 { "bf16" } else { "f32" }
        );
    }
}
