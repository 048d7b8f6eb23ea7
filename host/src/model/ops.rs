//! Ops of the training forward pass (`Pass::Train`) that pass gradients to their inputs:
//! candle's fused `rms_norm`, `rotary_emb::rope` and `softmax_last_dim` run backward without
//! error but pass no gradient to their input (../shared/RECIPES.md). [`attach`] gives a value
//! computed by a fused kernel a hand-written backward, keeping only the output for it;
//! [`attention`] keeps only its inputs and output, recomputing the scores in backward;
//! [`cross_entropy`] never holds more than one chunk of the logits.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, D};

type Backward = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// `y` (computed from `x.detach()`), made a differentiable function of `x` whose input
/// gradient is `backward(y, grad_y)`. The graph keeps `x` and `y`, nothing in between.
pub fn attach(x: &Tensor, y: Tensor, backward: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Result<Tensor> {
    x.apply_op1(Attached { value: Held::new(y), backward: Arc::new(backward) })
}

/// A value computed before its op runs, handed over once as the op's result.
struct Held(Mutex<Option<Tensor>>);

impl Held {
    fn new(y: Tensor) -> Self {
        Held(Mutex::new(Some(y)))
    }

    fn take(&self) -> Result<Tensor> {
        let mut slot = self.0.lock().map_err(|_| candle_core::Error::Msg("attached value: poisoned lock".into()))?;
        slot.take().ok_or_else(|| candle_core::Error::Msg("attached value used twice".into()))
    }
}

struct Attached {
    value: Held,
    backward: Arc<Backward>,
}

/// The CPU storage of a value computed outside an op, handed to candle as the op's result.
fn cpu_result(y: Tensor) -> Result<(CpuStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let y = y.contiguous()?;
    let (storage, layout) = y.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) if layout.start_offset() == 0 => Ok((s.try_clone(layout)?, layout.shape().clone())),
        _ => candle_core::bail!("attached value: expected a CPU tensor from offset 0"),
    }
}

/// [`cpu_result`] on CUDA.
#[cfg(feature = "cuda")]
fn cuda_result(y: Tensor) -> Result<(candle_core::CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let y = y.contiguous()?;
    let (storage, layout) = y.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) if layout.start_offset() == 0 => Ok((s.try_clone(layout)?, layout.shape().clone())),
        _ => candle_core::bail!("attached value: expected a CUDA tensor from offset 0"),
    }
}

impl candle_core::CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "attached"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_result(self.value.take()?)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_result(self.value.take()?)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        (self.backward)(y, grad).map(Some)
    }
}

type Backward3 = dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor, Tensor)> + Send + Sync;

/// [`attach`] for a value of three inputs: `backward(y, grad_y)` gives the three input
/// gradients. The graph keeps the inputs and `y`, nothing in between.
pub fn attach3(a: &Tensor, b: &Tensor, c: &Tensor, y: Tensor, backward: impl Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor, Tensor)> + Send + Sync + 'static) -> Result<Tensor> {
    a.apply_op3(b, c, Attached3 { value: Held::new(y), backward: Arc::new(backward) })
}

struct Attached3 {
    value: Held,
    backward: Arc<Backward3>,
}

impl candle_core::CustomOp3 for Attached3 {
    fn name(&self) -> &'static str {
        "attached3"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_result(self.value.take()?)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout, _: &candle_core::CudaStorage, _: &Layout, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_result(self.value.take()?)
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, c) = (self.backward)(y, grad)?;
        Ok((Some(a), Some(b), Some(c)))
    }
}

/// Attention `softmax(q kᵀ · scale + mask) v` over (batch, heads, seq, head_dim) tensors for
/// training, keeping only `q`, `k`, `v` and the output: the (batch, heads, seq, seq) scores
/// and probabilities are recomputed in backward instead of kept (four such tensors per layer
/// otherwise), as memory-efficient attention does. Backward: `dv = Pᵀ dy`,
/// `dS = P ⊙ (dy vᵀ − rowsum(dy ⊙ y))`, `dq = dS k · scale`, `dk = dSᵀ q · scale`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    let mask = mask.map(Tensor::detach);
    let probs = move |q: &Tensor, k: &Tensor| -> Result<Tensor> {
        let s = (q.matmul(&k.t()?)? * scale)?;
        let s = match &mask {
            Some(m) => s.broadcast_add(m)?,
            None => s,
        };
        candle_nn::ops::softmax_last_dim(&s)
    };
    let y = probs(&qd, &kd)?.matmul(&vd)?;
    attach3(q, k, v, y, move |y, dy| {
        let dy = dy.contiguous()?;
        let p = probs(&qd, &kd)?;
        let dv = p.t()?.matmul(&dy)?;
        let dp = dy.matmul(&vd.t()?)?;
        let rows = (&dy * y)?.sum_keepdim(D::Minus1)?;
        let ds = (p * dp.broadcast_sub(&rows)?)?;
        let dq = (ds.matmul(&kd)? * scale)?;
        let dk = (ds.t()?.matmul(&qd)? * scale)?;
        Ok((dq, dk, dv))
    })
}

/// RMSNorm `x · r · weight` with `r = 1/sqrt(mean(x²) + eps)` over the last dimension:
/// candle's fused kernel forward; backward `r · (g·w − x̂ · mean(g·w·x̂))` with `x̂ = x·r`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let input = x.detach();
    let y = candle_nn::ops::rms_norm(&input.contiguous()?, weight, eps as f32)?;
    let (w, dtype) = (weight.to_dtype(DType::F32)?, x.dtype());
    attach(x, y, move |_, g| {
        let x32 = input.to_dtype(DType::F32)?;
        let r = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let xhat = x32.broadcast_mul(&r)?;
        let gw = g.to_dtype(DType::F32)?.broadcast_mul(&w)?;
        let m = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        (gw - xhat.broadcast_mul(&m)?)?.broadcast_mul(&r)?.to_dtype(dtype)
    })
}

/// Rotary embedding in the Hugging Face (non-interleaved) layout: `x·cos + rotate_half(x)·sin`
/// for `x` of shape (batch, heads, seq, head_dim) and `cos`, `sin` of shape (seq, head_dim/2).
/// The graph keeps `x` and the result only; backward is the transposed rotation:
/// `g·cos + (g·sin)` with its halves swapped and the second negated.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let input = x.detach();
    let x1 = input.narrow(D::Minus1, 0, half)?;
    let x2 = input.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let y = input.broadcast_mul(&cos)?.add(&rotated.broadcast_mul(&sin)?)?;
    attach(x, y, move |_, g| {
        let gs = g.broadcast_mul(&sin)?;
        let back = Tensor::cat(&[&gs.narrow(D::Minus1, half, half)?, &gs.narrow(D::Minus1, 0, half)?.neg()?], D::Minus1)?;
        g.broadcast_mul(&cos)? + back
    })
}

/// The mean next-token cross-entropy of hidden states `h` (n, d) through a frozen output
/// layer `w` (vocab, d) against `targets` (n, u32), computed `chunk` rows at a time: the
/// (n, vocab) logits, their log-softmax and its gradient are never whole (for 16k positions
/// and a 49k vocabulary, 3 GiB each in f32). Logits and the loss are f32 whatever `h`'s dtype.
/// Backward recomputes each chunk's logits: `dh = (softmax − onehot(target)) · W / n`.
pub fn cross_entropy(h: &Tensor, w: &Tensor, targets: &Tensor, chunk: usize) -> Result<Tensor> {
    let (n, _) = h.dims2()?;
    let (hd, w, targets) = (h.detach(), w.to_dtype(h.dtype())?.detach(), targets.detach());
    let chunk = chunk.max(1);
    // per chunk: the logits (f32) and their log-sum-exp
    let logits = move |hd: &Tensor, w: &Tensor, start: usize| -> Result<(Tensor, Tensor)> {
        let len = chunk.min(n - start);
        let l = hd.narrow(0, start, len)?.matmul(&w.t()?)?.to_dtype(DType::F32)?;
        let max = l.max_keepdim(D::Minus1)?;
        let lse = (l.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        Ok((l, lse))
    };
    let mut total = Tensor::zeros((), DType::F32, h.device())?;
    for start in (0..n).step_by(chunk) {
        let (l, lse) = logits(&hd, &w, start)?;
        let t = targets.narrow(0, start, l.dim(0)?)?;
        let picked = l.gather(&t.unsqueeze(1)?, 1)?;
        total = (total + (lse - picked)?.sum_all()?)?;
    }
    let loss = (total / n as f64)?;
    attach(h, loss, move |_, grad| {
        let g = (grad.to_dtype(DType::F32)? / n as f64)?;
        let g_w = g.to_dtype(w.dtype())?;
        let mut parts = Vec::with_capacity(n.div_ceil(chunk));
        for start in (0..n).step_by(chunk) {
            let (l, lse) = logits(&hd, &w, start)?;
            let t = targets.narrow(0, start, l.dim(0)?)?;
            let p = l.broadcast_sub(&lse)?.exp()?.broadcast_mul(&g)?.to_dtype(w.dtype())?;
            let own = w.index_select(&t, 0)?.broadcast_mul(&g_w)?;
            parts.push((p.matmul(&w)? - own)?);
        }
        Tensor::cat(&parts, 0)
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).and_then(|d| d.abs()).and_then(|d| d.flatten_all()).and_then(|d| d.max(0)).and_then(|d| d.to_scalar::<f32>()).expect("diff")
    }

    /// Each op computes what the textbook formula (or candle's fused op) computes, and passes
    /// a gradient to its input (checked against finite differences on one element).
    #[test]
    fn ops_match_the_fused_ones_and_pass_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (1, 2, 5, 8), &dev).expect("x")).expect("var");
        let w = Tensor::randn(1f32, 0.1, 8, &dev).expect("w");
        let cos = Tensor::randn(0f32, 1., (5, 4), &dev).expect("cos");
        let sin = Tensor::randn(0f32, 1., (5, 4), &dev).expect("sin");
        let cases: Vec<(&str, Box<dyn Fn(&Tensor) -> Result<Tensor>>, Box<dyn Fn(&Tensor) -> Result<Tensor>>)> = vec![
            ("rms_norm", Box::new(|t: &Tensor| rms_norm(t, &w, 1e-5)), Box::new(|t: &Tensor| {
                let norm = (t.sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?;
                t.broadcast_div(&norm)?.broadcast_mul(&w)
            })),
            ("rope", Box::new(|t: &Tensor| rope(t, &cos, &sin)), Box::new(|t: &Tensor| candle_nn::rotary_emb::rope(&t.contiguous()?, &cos, &sin))),
        ];
        let probe = Tensor::randn(0f32, 1., (1, 2, 5, 8), &dev).expect("probe");
        for (name, ours, fused) in cases {
            let y = ours(x.as_tensor()).expect("ours");
            assert!(close(&y, &fused(x.as_tensor()).expect("fused")) < 1e-5, "{name}: differs from the fused op");
            let loss = y.mul(&probe).and_then(|t| t.sum_all()).expect("loss");
            let grads = loss.backward().expect("backward");
            let g = grads.get(x.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient reaches the input"));
            // finite difference on element [0, 1, 2, 3]
            let eps = 1e-2f32;
            let at = |delta: f32| -> f32 {
                let mut v = x.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec");
                v[((1 * 5 + 2) * 8) + 3] += delta;
                let t = Tensor::from_vec(v, (1, 2, 5, 8), &dev).expect("t");
                ours(&t).and_then(|y| y.mul(&probe)).and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>()).expect("f")
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let analytic = g.flatten_all().and_then(|t| t.get(((1 * 5 + 2) * 8) + 3)).and_then(|t| t.to_scalar::<f32>()).expect("g");
            assert!((numeric - analytic).abs() < 2e-2 * numeric.abs().max(1.0), "{name}: gradient {analytic} vs finite difference {numeric}");
        }
    }

    /// The memory-efficient attention computes what the plain composition computes, and its
    /// hand-written backward gives the gradients candle's autograd gives through that
    /// composition, for q, k and v, with a causal mask.
    #[test]
    fn attention_matches_the_plain_composition_in_value_and_gradients() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 6, 8);
        let vars: Vec<Var> = (0..3).map(|_| Var::from_tensor(&Tensor::randn(0f32, 1., (b, h, t, d), &dev).expect("x")).expect("var")).collect();
        let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).expect("mask");
        let probe = Tensor::randn(0f32, 1., (b, h, t, d), &dev).expect("probe");
        let scale = 1.0 / (d as f64).sqrt();
        let [q, k, v] = [0, 1, 2].map(|i| vars[i].as_tensor().clone());
        let plain = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
            let s = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            candle_nn::ops::softmax(&s, D::Minus1)?.matmul(v)
        };
        let ours = attention(&q, &k, &v, Some(&mask), scale).expect("ours");
        let want = plain(&q, &k, &v).expect("plain");
        assert!(close(&ours, &want) < 1e-5, "values differ by {}", close(&ours, &want));
        let g_ours = ours.mul(&probe).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        let g_want = want.mul(&probe).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, e) = (g_ours.get(x).unwrap_or_else(|| panic!("no gradient reaches {name}")), g_want.get(x).expect("autograd"));
            assert!(close(a, e) < 1e-4, "{name}: gradients differ by {}", close(a, e));
        }
    }

    /// The chunked cross-entropy gives the plain log-softmax loss and its input gradient, with
    /// a chunk that does not divide the rows.
    #[test]
    fn chunked_cross_entropy_matches_log_softmax() {
        let dev = Device::Cpu;
        let (n, d, vocab) = (10, 6, 23);
        let h = Var::from_tensor(&Tensor::randn(0f32, 1., (n, d), &dev).expect("h")).expect("var");
        let w = Tensor::randn(0f32, 1., (vocab, d), &dev).expect("w");
        let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % vocab as u32).collect::<Vec<_>>(), n, &dev).expect("targets");
        let ours = cross_entropy(h.as_tensor(), &w, &targets, 4).expect("ours");
        let logp = candle_nn::ops::log_softmax(&h.as_tensor().matmul(&w.t().expect("t")).expect("logits"), D::Minus1).expect("logp");
        let want = logp.gather(&targets.unsqueeze(1).expect("u"), 1).and_then(|l| l.mean_all()).and_then(|l| l.neg()).expect("plain");
        assert!(close(&ours, &want) < 1e-5, "loss {ours} vs {want}");
        let (a, e) = ((ours * 3.0).and_then(|l| l.backward()).expect("b"), (want * 3.0).and_then(|l| l.backward()).expect("b"));
        let (a, e) = (a.get(h.as_tensor()).expect("no gradient reaches h"), e.get(h.as_tensor()).expect("autograd"));
        assert!(close(a, e) < 1e-5, "gradients differ by {}", close(a, e));
    }
}
