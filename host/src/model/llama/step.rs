//! [`Llama::forward_segments`] on CUDA ([`crate::cuda::decode`]): per block, the residual
//! add fused into each norm, q/k/v and gate/up each one product where their weights were
//! joined ([`Llama::store_dense_in_compute_dtype`]), RoPE storing every segment's keys and
//! values into its own cache, one attention launch over all segments, and SiLU·up: nine
//! launches a block whatever the number of sequences (candle's operations took a dozen per
//! sequence and block). On by default on CUDA; `MEDTUNE_CUDA_STEP=0` goes back to candle's
//! operations (to compare them).

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};

use super::{Llama, Pass, Segment, Slots};
use crate::cuda::decode::{self, Heads, Step};

/// Whether CUDA steps go through the fused kernels (unless `MEDTUNE_CUDA_STEP=0`).
pub(super) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("MEDTUNE_CUDA_STEP").is_ok_and(|v| v == "0"))
}

impl Llama {
    /// The step of [`Llama::forward_segments`] on CUDA for the tokens `ids` of `segs`, their
    /// linear layers through `pass`.
    pub(super) fn forward_segments_cuda(&self, segs: &mut [Segment<'_>], ids: &[u32], pass: Pass<'_>) -> Result<Tensor> {
        let c = &self.config;
        let h = Heads { heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, head_dim: c.head_dim() };
        let dt = self.compute;
        let mut rows = Vec::with_capacity(ids.len());
        let mut caps = Vec::with_capacity(segs.len());
        for (s, seg) in segs.iter_mut().enumerate() {
            let (pos, n) = (seg.cache.len(), seg.ids.len());
            if pos + n > c.max_position_embeddings {
                candle_core::bail!("a sequence of {} tokens is longer than the model's {} positions", pos + n, c.max_position_embeddings);
            }
            rows.extend((pos..pos + n).map(|p| (s, p)));
            for slots in seg.cache.kv.iter_mut() {
                slots.reserve(n, h.kv_heads, h.head_dim, dt, &self.device)?;
            }
            caps.push(seg.cache.kv.first().map_or(Ok(0), Slots::capacity)?);
        }
        let kv: Vec<u64> = (0..self.blocks.len())
            .flat_map(|layer| segs.iter().map(move |seg| seg.cache.kv[layer].addresses()))
            .flat_map(|(k, v)| [k, v])
            .collect();
        let step = Step::new(&self.device, &rows, &caps, &kv)?;
        let scale = (1.0 / (h.head_dim as f64).sqrt()) as f32;
        let (nq, nkv) = (h.heads * h.head_dim, h.kv_heads * h.head_dim);
        let mut x = self.embed.index_select(&Tensor::new(ids, &self.device)?, 0)?.reshape((1, ids.len(), c.hidden_size))?.to_dtype(dt)?;
        let mut pending: Option<Tensor> = None;
        for (i, b) in self.blocks.iter().enumerate() {
            let prefix = format!("model.layers.{i}");
            let (xa, hn) = decode::add_rms_norm(&x, pending.as_ref(), &b.input_norm.weight, b.input_norm.eps)?;
            let [q, k, v] = match (&b.attn.qkv, pass) {
                (Some(qkv), Pass::Batch) => {
                    let y = qkv.forward_batched(&hn)?;
                    [y.narrow(2, 0, nq)?, y.narrow(2, nq, nkv)?, y.narrow(2, nq + nkv, nkv)?]
                }
                _ => b.attn.qkv(&hn, pass, &prefix)?,
            };
            let q = decode::rope_store(&q, &k, &v, &self.cos, &self.sin, &step, i, h)?;
            let y = decode::attend(&q, &step, i, h, scale)?;
            let a = pass.last_linear(&b.attn.o, &y, || format!("{prefix}.self_attn.o_proj"))?;
            let (xm, hn) = decode::add_rms_norm(&xa, Some(&a), &b.post_norm.weight, b.post_norm.eps)?;
            let [g, u] = match (&b.mlp.gate_up, pass) {
                (Some(gu), Pass::Batch) => {
                    let y = gu.forward_batched(&hn)?;
                    let f = y.dim(2)? / 2;
                    [y.narrow(2, 0, f)?, y.narrow(2, f, f)?]
                }
                _ => pass
                    .linear_shared(&[(&b.mlp.gate, "gate_proj"), (&b.mlp.up, "up_proj")], &hn, &format!("{prefix}.mlp"))?
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("gate, up: two products expected".into()))?,
            };
            let m = decode::silu_mul(&g, &u)?;
            pending = Some(pass.last_linear(&b.mlp.down, &m, || format!("{prefix}.mlp.down_proj"))?);
            x = xm;
        }
        for seg in segs.iter_mut() {
            let n = seg.ids.len();
            seg.cache.kv.iter_mut().for_each(|slots| slots.advance(n));
        }
        let mut last = Vec::with_capacity(segs.len());
        let mut end = 0u32;
        for seg in segs.iter() {
            end += seg.ids.len() as u32;
            last.push(end - 1);
        }
        let last = Tensor::new(last.as_slice(), &self.device)?;
        let pick = |t: &Tensor| t.squeeze(0)?.index_select(&last, 0)?.unsqueeze(0);
        let pending = pending.as_ref().map(pick).transpose()?;
        let (_, h) = decode::add_rms_norm(&pick(&x)?, pending.as_ref(), &self.norm.weight, self.norm.eps)?;
        self.lm_head.forward_batched(&h)?.squeeze(0)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use crate::model::{Adapter, Llama, Segment, SeqCache, random};

    /// Runs the same steps on `m`: three sequences (a prompt from an empty cache; a 300-token
    /// prompt in chunks of 256 and 44, growing its cache, then decoding; a prompt then a
    /// chunk of 23 after it), the first two with adapters when given. Returns each step's
    /// logits.
    fn steps(m: &Llama, loras: [Option<&crate::model::Lora>; 2]) -> Vec<Vec<f32>> {
        let ids = |n: usize, seed: u32| -> Vec<u32> { (0..n as u32).map(|i| 100 + (i * 7919 + seed * 31) % 40_000).collect() };
        let mut caches: Vec<SeqCache> = (0..3).map(|_| SeqCache::new(m)).collect();
        let plan: [[Vec<u32>; 3]; 4] = [
            [ids(40, 1), ids(256, 2), ids(10, 3)],
            [vec![501], ids(44, 4), ids(23, 5)],
            [vec![502], vec![503], vec![504]],
            [vec![505], vec![506], ids(7, 6)],
        ];
        let mut out = Vec::new();
        for step in &plan {
            let [c0, c1, c2] = &mut caches[..] else { unreachable!("three caches") };
            let mut segs = [
                Segment { ids: &step[0], cache: c0, lora: loras[0] },
                Segment { ids: &step[1], cache: c1, lora: loras[1] },
                Segment { ids: &step[2], cache: c2, lora: None },
            ];
            let logits = match m.device().is_cuda() {
                true => m.step(&mut segs, true),
                false => m.forward_segments(&mut segs),
            }
            .expect("step");
            out.push(logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("logits"));
        }
        out
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
        let diff = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        (diff, a.iter().flatten().map(|x| x.abs()).fold(0.0f32, f32::max))
    }

    /// The fused CUDA step gives the CPU's logits (SmolLM2's shape, random weights: GQA 9/3,
    /// head_dim 64), in f32 and in bf16, with and without adapters on groups of rows, for
    /// prompts, chunks after a cache, growth of the caches and decoding rows in one step.
    #[test]
    fn cuda_steps_match_the_cpu() {
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let cpu_model = random("smollm2", &Device::Cpu).expect("cpu");
        let want = steps(&cpu_model, [None, None]);
        let dir = crate::model::tests::repo().join("tests/fixtures/peft_smollm2");
        let lora_cpu = Adapter::load(&dir, &Device::Cpu).and_then(|a| a.unmerged(&cpu_model)).expect("adapter");
        let want_lora = steps(&cpu_model, [Some(&lora_cpu), Some(&lora_cpu)]);
        for (dtype, tolerance) in [(DType::F32, 1e-3f32), (DType::BF16, 6e-2)] {
            let mut m = random("smollm2", &gpu).expect("gpu");
            m.set_compute_dtype(dtype);
            m.store_dense_in_compute_dtype().expect("stored");
            m.join_shared_products().expect("joined");
            assert!(m.blocks.iter().all(|b| b.attn.qkv.is_some() && b.mlp.gate_up.is_some()), "q/k/v and gate/up joined");
            let (diff, scale) = max_diff(&steps(&m, [None, None]), &want);
            assert!(diff < tolerance * scale.max(1.0), "{dtype:?}: max |cpu - cuda| = {diff} (logits up to {scale})");
            let lora = Adapter::load(&dir, &gpu).and_then(|a| a.unmerged(&m)).expect("adapter");
            let (diff, scale) = max_diff(&steps(&m, [Some(&lora), Some(&lora)]), &want_lora);
            assert!(diff < tolerance * scale.max(1.0), "{dtype:?} with adapters: max |cpu - cuda| = {diff} (logits up to {scale})");
        }
    }
}
