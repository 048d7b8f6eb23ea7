//! QLoRA training speed: tokens/s and peak memory of medtune's trainer on a model built from
//! a shape with random weights (speed does not depend on the values), the base frozen in NF4
//! with double quantization, LoRA r=16 alpha=32 on all linear layers, AdamW lr 2e-4, loss on
//! every token: what baselines/hf_qlora_baseline.py measures for transformers +
//! peft + bitsandbytes.
//!
//! `cargo bench -p medtune --bench train_speed -- SHAPE BATCHxSEQ... [STEPS] [WARMUP] [--tf32]
//! [--bf16] [--recompute]` (SHAPE: smollm2, llama2-7b, llama3-8b or mistral-7b; e.g.
//! `smollm2 8x512 32x512 20 3`). With `--features cuda` it runs on the GPU; `--tf32` runs its
//! f32 products in TF32 (`[model] tf32`), `--bf16` its activations in bf16
//! (`[model] compute_dtype`), `--recompute` runs the memory mode
//! (`[train] recompute`: blocks recomputed in backward). Prints one JSON line per batch shape (an
//! error line when one fails, e.g. out of memory). Memory: `peak_mem_gib` is the device memory
//! in use after a step (CUDA context and the pool's cached blocks included), and on CUDA
//! `peak_allocated_gib` the pool's allocated high-water mark since the model was built,
//! which is what the baseline's `torch.cuda.max_memory_allocated` counts.
//!
//! `GPUS=N` (CUDA) runs the same on N GPUs as `medtune train --gpus N` does: one process per
//! GPU (this binary again, with `MEDTUNE_RANK`), each step's gradients summed over NCCL, each
//! GPU with a batch of the size given (so N times the tokens per step). Rank 0 prints the
//! line, with every GPU's tokens counted.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use medtune::model;
use medtune::train::{AdamW, DataParallel, LoraConfig, LoraSet, NCCL_ID_ENV, ranks};

fn device(gpu: usize) -> Device {
    #[cfg(feature = "cuda")]
    return Device::new_cuda(gpu).expect("CUDA device");
    #[cfg(not(feature = "cuda"))]
    {
        let _ = gpu;
        Device::Cpu
    }
}

/// With `GPUS=N` and no rank yet: starts the N ranks and waits for them. Returns this
/// process's (rank, world) otherwise.
fn this_rank() -> Option<(usize, usize)> {
    let world: usize = std::env::var("GPUS").ok()?.parse().expect("GPUS=N");
    if let Some(rank) = std::env::var("MEDTUNE_RANK").ok().and_then(|r| r.parse().ok()) {
        return Some((rank, world));
    }
    let id = DataParallel::new_id().expect("NCCL id");
    let exe = std::env::current_exe().expect("this binary");
    let mut children = ranks::spawn(world, |rank| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(std::env::args().skip(1)).env("MEDTUNE_RANK", rank.to_string()).env(NCCL_ID_ENV, &id);
        if rank > 0 {
            cmd.stdout(std::process::Stdio::null());
        }
        cmd
    })
    .unwrap_or_else(|(rank, e)| panic!("starting rank {rank}: {e}"));
    if let Err((rank, status)) = ranks::wait(&mut children, |s| s.success()) {
        eprintln!("rank {rank} failed ({status}); stopped the others");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn main() {
    let dp_rank = this_rank();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let shape = args.first().cloned().unwrap_or_else(|| "smollm2".into());
    let sizes: Vec<(usize, usize)> =
        args[1..].iter().filter_map(|a| a.split_once('x').and_then(|(b, s)| Some((b.parse().ok()?, s.parse().ok()?)))).collect();
    let rest: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    let (steps, warmup) = (rest.first().copied().unwrap_or(20), rest.get(1).copied().unwrap_or(3));
    let tf32 = std::env::args().any(|a| a == "--tf32");
    let recompute = std::env::args().any(|a| a == "--recompute");
    let compute = if std::env::args().any(|a| a == "--bf16") { DType::BF16 } else { DType::F32 };
    candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
    let device = device(dp_rank.map_or(0, |(rank, _)| rank));
    let dp = dp_rank.map(|(rank, world)| {
        DataParallel::join(&device, rank, world, &std::env::var(NCCL_ID_ENV).unwrap_or_default()).expect("join the ranks")
    });
    let world = dp.as_ref().map_or(1, |d| d.world);
    let t0 = Instant::now();
    let mut llama = model::random(&shape, &device).expect("random model");
    let nf4_bytes = llama.quantize_nf4(compute).expect("nf4");
    llama.set_compute_dtype(compute);
    let build_s = t0.elapsed().as_secs_f64();
    for &(batch, seq) in if sizes.is_empty() { &[(8, 512)][..] } else { &sizes[..] } {
        let run = || -> candle_core::Result<serde_json::Value> {
            // from here on, as the baseline after building its model: the allocated high-water mark
            device.synchronize()?;
            // as the trainer: freed memory stays in the pool from here on (what building the
            // model or the shape before left there goes back first)
            medtune::train::keep_freed_memory(&device).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            medtune::train::allocated_peak_mib(&device, true);
            let (tokens_per_s, peak, secs, first, last) = measure(&llama, &device, dp.as_ref(), batch, seq, steps, warmup, recompute)?;
            let allocated = medtune::train::allocated_peak_mib(&device, false).map(|m| m / 1024.0);
            Ok(serde_json::json!({
                "engine": "medtune", "device": if device.is_cpu() { "cpu" } else { "cuda" }, "shape": shape, "mode": format!("qlora-nf4-{}{}", if compute == DType::BF16 { "bf16" } else { "f32" }, if tf32 { "-tf32" } else { "" }) + if recompute { "-recompute" } else { "" },
                "gpus": world, "batch": batch, "seq": seq, "steps": steps, "sec": secs, "tokens_per_s": tokens_per_s, "peak_mem_gib": peak / 1024.0,
                "peak_allocated_gib": allocated,
                "nf4_gib": nf4_bytes as f64 / f64::from(1u32 << 30), "build_s": build_s, "first_loss": first, "last_loss": last,
            }))
        };
        match run() {
            Ok(v) => println!("{v}"),
            Err(e) => println!(
                "{}",
                serde_json::json!({"engine": "medtune", "shape": shape, "batch": batch, "seq": seq,
                "error": e.to_string().lines().next().unwrap_or_default()})
            ),
        }
    }
}

/// Times `steps` training steps after `warmup`: (tokens/s of every GPU, peak MiB, seconds,
/// first loss, last loss).
#[allow(clippy::too_many_arguments)]
fn measure(
    llama: &model::Llama,
    device: &Device,
    dp: Option<&DataParallel>,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    recompute: bool,
) -> candle_core::Result<(f64, f64, f64, f32, f32)> {
    let lora = LoraSet::new(LoraConfig::all_linear(16, 32.0, 0.0), llama.config(), 0, device)?;
    let mut opt = AdamW::new(lora.vars(), 0.0)?;
    let vocab = llama.config().vocab_size as u32;
    // each GPU its own token stream
    let mut state = 1 + dp.map_or(0, |d| d.rank as u64);
    let mut losses = Vec::new();
    let mut peak = 0.0f64;
    let mut timed = Instant::now();
    for step in 0..warmup + steps {
        if step == warmup {
            device.synchronize()?;
            timed = Instant::now();
        }
        let ids: Vec<u32> = (0..batch * seq)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) % u64::from(vocab)) as u32
            })
            .collect();
        let x = Tensor::from_vec(ids, (batch, seq), device)?;
        // next-token loss on every position, as transformers computes it with labels = input,
        // through the output layer in chunks (the whole logits are never made)
        let target = x.narrow(1, 1, seq - 1).and_then(|t| t.flatten_all())?;
        let loss_of =
            |h: &Tensor| llama.next_token_loss(&h.narrow(1, 0, seq - 1)?.contiguous()?.reshape((batch * (seq - 1), h.dim(2)?))?, &target);
        let (loss, grads) = if recompute {
            llama.backward_recomputed(&x, None, &lora, &lora.vars(), loss_of)?
        } else {
            let loss = loss_of(&llama.hidden_train(&x, None, &lora)?)?;
            let grads = loss.backward()?;
            (loss, grads)
        };
        let mut g: Vec<Tensor> = lora
            .vars()
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        if let Some(d) = dp {
            d.sum(&mut g, &mut [])?;
        }
        opt.update(&g, 2e-4)?;
        losses.push(loss.to_scalar::<f32>()?);
        peak = peak.max(medtune::train::memory_mib(device));
    }
    device.synchronize()?;
    let secs = timed.elapsed().as_secs_f64();
    let world = dp.map_or(1, |d| d.world);
    Ok(((batch * seq * steps * world) as f64 / secs, peak, secs, losses[0], losses[losses.len() - 1]))
}
