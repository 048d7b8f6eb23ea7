//! Ops of the training forward pass (`Pass::Train`) that pass gradients to their inputs:
//! candle's fused `rms_norm`, `rotary_emb::rope` and `softmax_last_dim` run backward without
//! error but pass no gradient to their input (../shared/RECIPES.md). [`attach`] gives a value
//! computed by a fused kernel a hand-written backward, keeping only the output for it;
//! [`attention`] keeps only its inputs and output, recomputing the scores in backward (the
//! causal one on CUDA keeps its probabilities instead); [`cross_entropy`] never holds more
//! than one chunk of the logits. On CUDA, RMSNorm's backward, causal attention, SwiGLU, RoPE
//! with the heads' transpose, the heads' swap, the cross-entropy's rows and [`add_matmul`]
//! run medtune's kernels (`cuda/fused.rs`); the CPU runs candle's ops, the reference they are
//! tested to.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, D, DType, Layout, Result, Shape, Storage, Tensor};

type Backward = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// `y` (computed from `x.detach()`), made a differentiable function of `x` whose input
/// gradient is `backward(y, grad_y)`. The graph keeps `x` and `y`, nothing in between.
pub fn attach(x: &Tensor, y: Tensor, backward: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Result<Tensor> {
    x.apply_op1(Attached { value: Held::new(y), backward: Arc::new(backward) })
}

/// A zero scalar whose backward hands `g` to `y` as its gradient, whatever gradient reaches
/// it: `seed_gradient(y, g).backward()` is backward from `y` with output gradient `g`, without
/// computing `Σ y ⊙ g` (whose gradient with respect to `y` is the same `g`). Meant only as the
/// root of a backward pass.
pub fn seed_gradient(y: &Tensor, g: Tensor) -> Result<Tensor> {
    let zero = Tensor::zeros((), y.dtype(), y.device())?;
    attach(y, zero, move |_, _| Ok(g.clone()))
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

type Backward2 = dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)> + Send + Sync;

/// [`attach`] for a value of two inputs: `backward(y, grad_y)` gives both input gradients.
pub fn attach2(
    a: &Tensor,
    b: &Tensor,
    y: Tensor,
    backward: impl Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)> + Send + Sync + 'static,
) -> Result<Tensor> {
    a.apply_op2(b, Attached2 { value: Held::new(y), backward: Arc::new(backward) })
}

struct Attached2 {
    value: Held,
    backward: Arc<Backward2>,
}

impl candle_core::CustomOp2 for Attached2 {
    fn name(&self) -> &'static str {
        "attached2"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_result(self.value.take()?)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_result(self.value.take()?)
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b) = (self.backward)(y, grad)?;
        Ok((Some(a), Some(b)))
    }
}

type Backward3 = dyn Fn(&Tensor, &Tensor) -> Result<(Option<Tensor>, Tensor, Tensor)> + Send + Sync;

/// [`attach`] for a value of three inputs: `backward(y, grad_y)` gives the three input
/// gradients. The graph keeps the inputs and `y`, nothing in between.
pub fn attach3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    y: Tensor,
    backward: impl Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor, Tensor)> + Send + Sync + 'static,
) -> Result<Tensor> {
    attach3_partial(a, b, c, y, move |y, g| backward(y, g).map(|(a, b, c)| (Some(a), b, c)))
}

/// [`attach3`] where backward may pass no gradient to the first input (`None`: another op
/// passes it, see `train::lora`'s shared input gradient).
pub fn attach3_partial(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    y: Tensor,
    backward: impl Fn(&Tensor, &Tensor) -> Result<(Option<Tensor>, Tensor, Tensor)> + Send + Sync + 'static,
) -> Result<Tensor> {
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
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda_result(self.value.take()?)
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, c) = (self.backward)(y, grad)?;
        Ok((a, Some(b), Some(c)))
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

/// [`attention`] with the causal mask of a sequence seen from its start (query `i` sees keys
/// `0..=i`), for `k` and `v` with fewer heads than `q` (grouped-query attention: each key head
/// serves `q`'s heads in consecutive runs of heads(q) / heads(k)). On CUDA the key heads are
/// never repeated: each group of query heads is one (group·seq, head_dim) matrix against its
/// key head, so `dk` and `dv` come out summed over the group by the products themselves; the
/// probabilities are kept for backward (batch·heads·seq² values a layer: the speed mode spends
/// that memory, the memory mode holds one block half's at a time); the
/// mask is applied by index inside one softmax kernel, and backward's score gradient
/// `P ⊙ (dP − rowsum(P ⊙ dP))` is one kernel (`rowsum(P ⊙ dP) = rowsum(dy ⊙ y)`), with the
/// scale folded into both. Elsewhere it is [`attention`] with the key heads repeated and
/// `mask`, that causal mask as an additive tensor.
///
/// Packed rows (several examples one after another in a row) pass `positions` (batch, seq),
/// u32, each token's position in its own example: a query sees only its own example's keys
/// (the mask is block-diagonal, and `mask` must be that one, (batch, 1, seq, seq)). On CUDA the
/// softmax kernel reads the positions; the score gradient needs nothing more, as the
/// probabilities outside a query's example are 0.
pub fn attention_causal(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, positions: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (h, kv) = (q.dim(1)?, k.dim(1)?);
    if kv == 0 || h % kv != 0 || v.dim(1)? != kv {
        candle_core::bail!("attention: {h} query heads and {kv} key heads do not group");
    }
    #[cfg(feature = "cuda")]
    if q.device().is_cuda() {
        let (b, _, t, d) = q.dims4()?;
        let grouped = (b, kv, h / kv * t, d);
        let (qd, kd, vd) = (q.detach().reshape(grouped)?, k.detach().contiguous()?, v.detach().contiguous()?);
        let scores = qd.matmul(&kd.t()?)?;
        let p = match positions {
            Some(pos) => crate::cuda::fused::softmax_packed(&scores, pos, scale)?,
            None => crate::cuda::fused::softmax_causal(&scores, scale)?,
        };
        let y = p.matmul(&vd)?.reshape((b, h, t, d))?;
        return attach3(q, k, v, y, move |_, dy| {
            let dy = dy.contiguous()?.reshape(grouped)?;
            let dv = p.t()?.matmul(&dy)?;
            let ds = crate::cuda::fused::attention_ds(&p, &dy.matmul(&vd.t()?)?, scale)?;
            Ok((ds.matmul(&kd)?.reshape((b, h, t, d))?, ds.t()?.matmul(&qd)?, dv))
        });
    }
    if positions.is_some() && mask.dims4()?.0 != q.dim(0)? {
        candle_core::bail!("attention: packed rows need their own block-diagonal mask, not {:?}", mask.shape());
    }
    attention(q, &repeat_heads(k, h / kv)?, &repeat_heads(v, h / kv)?, Some(mask), scale)
}

/// The additive block-diagonal causal mask (batch, 1, seq, seq), f32, of packed rows, from each
/// token's position in its own example (`positions`, (batch, seq) u32): query i sees keys
/// `i − positions[i] ..= i`, 0 there and -inf elsewhere.
pub fn packed_mask(positions: &Tensor) -> Result<Tensor> {
    let (b, t) = positions.dims2()?;
    let dev = positions.device();
    let col = Tensor::arange(0u32, t as u32, dev)?;
    let (i, j) = (col.reshape((1, t, 1))?, col.reshape((1, 1, t))?);
    let start = i.broadcast_sub(&positions.reshape((b, t, 1))?)?;
    let seen = j.broadcast_ge(&start)?.minimum(&j.broadcast_le(&i)?.broadcast_as((b, t, t))?)?;
    let zero = Tensor::zeros((b, t, t), DType::F32, dev)?;
    let never = Tensor::full(f32::NEG_INFINITY, (b, t, t), dev)?;
    seen.where_cond(&zero, &never)?.unsqueeze(1)
}

/// `x` (batch, heads, seq, head_dim) with each head repeated `n` times in a row, contiguous.
pub fn repeat_heads(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, h, n, t, d))?.reshape((b, h * n, t, d))?.contiguous()
}

/// RMSNorm `x · r · weight` with `r = 1/sqrt(mean(x²) + eps)` over the last dimension:
/// candle's fused kernel forward; backward `r · (g·w − x̂ · mean(g·w·x̂))` with `x̂ = x·r`
/// (one kernel on CUDA).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let input = x.detach();
    let y = candle_nn::ops::rms_norm(&input.contiguous()?, weight, eps as f32)?;
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let w = weight.to_dtype(x.dtype())?.detach();
        return attach(x, y, move |_, g| crate::cuda::fused::rms_norm_bwd(&input, &w, g, eps));
    }
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
/// for `x` of shape (batch, heads, seq, head_dim) and `cos`, `sin` of shape (seq, head_dim/2),
/// by candle's fused kernel. The graph keeps `x` and the result only; backward is the
/// transposed rotation, which is the same kernel with `sin` negated.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, neg_sin) = (cos.contiguous()?, sin.neg()?.contiguous()?);
    let y = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, &cos, &sin.contiguous()?)?;
    attach(x, y, move |_, g| candle_nn::rotary_emb::rope(&g.contiguous()?, &cos, &neg_sin))
}

/// [`rope`] of `x` given as (batch, seq, heads, head_dim), returned as (batch, heads, seq,
/// head_dim): on CUDA one kernel rotates and transposes (and one undoes both in backward), so
/// the heads' transpose costs no copy of its own; elsewhere a transpose, then [`rope`].
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
        let y = crate::cuda::fused::rope_heads(&x.detach(), &cos, &sin)?;
        return attach(x, y, move |_, g| crate::cuda::fused::rope_heads_bwd(g, &cos, &sin));
    }
    rope(&swap_heads(x)?, cos, sin)
}

/// `x` (batch, n1, n2, d) with dims 1 and 2 swapped, contiguous: the heads' transposes
/// around attention ((batch, seq, heads, head_dim) and back). On CUDA one row-copy kernel each
/// way instead of candle's strided copy; elsewhere a transpose and a copy.
pub fn swap_heads(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let y = crate::cuda::fused::swap12(&x.detach())?;
        return attach(x, y, move |_, g| crate::cuda::fused::swap12(g));
    }
    x.transpose(1, 2)?.contiguous()
}

/// SwiGLU `silu(g) · u`, keeping only `g`, `u` and the output: one kernel each way on CUDA,
/// candle's ops elsewhere. Backward: `dg = dh·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dh·silu(g)`.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    let (gd, ud) = (g.detach(), u.detach());
    #[cfg(feature = "cuda")]
    if g.device().is_cuda() {
        let y = crate::cuda::fused::swiglu(&gd, &ud)?;
        return attach2(g, u, y, move |_, dh| crate::cuda::fused::swiglu_bwd(&gd, &ud, dh));
    }
    let y = (candle_nn::ops::silu(&gd)? * &ud)?;
    attach2(g, u, y, move |_, dh| {
        let s = candle_nn::ops::sigmoid(&gd)?;
        let silu = (&gd * &s)?;
        let dsilu = (&s * ((&gd * (1.0 - &s)?)? + 1.0)?)?;
        Ok(((dh * &ud)?.mul(&dsilu)?, (dh * silu)?))
    })
}

/// `c + a · b` for 2-D tensors; `c` must be a fresh tensor no other holds: on CUDA the
/// product is added into it by cuBLAS (beta = 1) instead of written out and added.
pub fn add_matmul(c: Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if c.device().is_cuda() && c.is_contiguous() {
        return crate::cuda::fused::matmul_add(c, a, b);
    }
    c + a.matmul(b)?
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
    #[cfg(feature = "cuda")]
    if h.device().is_cuda() {
        return cross_entropy_cuda(h, hd, w, targets, chunk);
    }
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

/// [`cross_entropy`] on CUDA: each chunk's logits stay in `h`'s dtype and one kernel per pass
/// reads them (`cuda::fused::xent_rows`: log-sum-exp and loss per row; backward
/// `cuda::fused::xent_grad`, the gradient written over the recomputed logits), instead of candle's
/// f32 casts, max, exp, sums, gather and onehot product (over 5% of a 7B step).
#[cfg(feature = "cuda")]
fn cross_entropy_cuda(h: &Tensor, hd: Tensor, w: Tensor, targets: Tensor, chunk: usize) -> Result<Tensor> {
    let n = hd.dim(0)?;
    let starts: Vec<usize> = (0..n).step_by(chunk).collect();
    let mut lses = Vec::with_capacity(starts.len());
    let mut total = Tensor::zeros((), DType::F32, h.device())?;
    for &start in &starts {
        let len = chunk.min(n - start);
        let l = hd.narrow(0, start, len)?.matmul(&w.t()?)?;
        let (lse, loss) = crate::cuda::fused::xent_rows(&l, &targets.narrow(0, start, len)?)?;
        total = (total + loss.sum_all()?)?;
        lses.push(lse);
    }
    let loss = (total / n as f64)?;
    attach(h, loss, move |_, grad| {
        let mut parts = Vec::with_capacity(starts.len());
        for (&start, lse) in starts.iter().zip(&lses) {
            let len = chunk.min(n - start);
            let l = hd.narrow(0, start, len)?.matmul(&w.t()?)?;
            let dl = crate::cuda::fused::xent_grad(l, &targets.narrow(0, start, len)?, lse, grad, n)?;
            parts.push(dl.matmul(&w)?);
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
        type Op<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;
        let cases: Vec<(&str, Op, Op)> = vec![
            (
                "rms_norm",
                Box::new(|t: &Tensor| rms_norm(t, &w, 1e-5)),
                Box::new(|t: &Tensor| {
                    let norm = (t.sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?;
                    t.broadcast_div(&norm)?.broadcast_mul(&w)
                }),
            ),
            (
                "rope",
                Box::new(|t: &Tensor| rope(t, &cos, &sin)),
                Box::new(|t: &Tensor| candle_nn::rotary_emb::rope(&t.contiguous()?, &cos, &sin)),
            ),
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
                v[((5 + 2) * 8) + 3] += delta;
                let t = Tensor::from_vec(v, (1, 2, 5, 8), &dev).expect("t");
                ours(&t).and_then(|y| y.mul(&probe)).and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>()).expect("f")
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let analytic = g.flatten_all().and_then(|t| t.get(((5 + 2) * 8) + 3)).and_then(|t| t.to_scalar::<f32>()).expect("g");
            assert!(
                (numeric - analytic).abs() < 2e-2 * numeric.abs().max(1.0),
                "{name}: gradient {analytic} vs finite difference {numeric}"
            );
        }
    }

    /// The memory-efficient attention computes what the plain composition computes, and its
    /// hand-written backward gives the gradients candle's autograd gives through that
    /// composition, for q, k and v, with a causal mask.
    #[test]
    fn attention_matches_the_plain_composition_in_value_and_gradients() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 6, 8);
        let vars: Vec<Var> =
            (0..3).map(|_| Var::from_tensor(&Tensor::randn(0f32, 1., (b, h, t, d), &dev).expect("x")).expect("var")).collect();
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

    /// SwiGLU's hand-written backward gives autograd's gradients of `silu(g)·u`.
    #[test]
    fn swiglu_matches_autograd() {
        let dev = Device::Cpu;
        let [g, u] = [0, 1].map(|_| Var::from_tensor(&Tensor::randn(0f32, 2., (3, 17), &dev).expect("x")).expect("var"));
        let (g, u) = (g.as_tensor(), u.as_tensor());
        let probe = Tensor::randn(0f32, 1., (3, 17), &dev).expect("probe");
        let ours = swiglu(g, u).expect("ours");
        let want = (candle_nn::ops::silu(g).expect("silu") * u).expect("plain");
        assert!(close(&ours, &want) < 1e-6, "values differ by {}", close(&ours, &want));
        let g_ours = ours.mul(&probe).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        let g_want = want.mul(&probe).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        for (name, x) in [("g", g), ("u", u)] {
            let (a, e) = (g_ours.get(x).unwrap_or_else(|| panic!("no gradient reaches {name}")), g_want.get(x).expect("autograd"));
            assert!(close(a, e) < 1e-5, "{name}: gradients differ by {}", close(a, e));
        }
    }

    /// Each training op of the pass on CUDA (the fused kernels of `fused.cu` and candle's
    /// rope) gives the CPU op's value and input gradients: within 1e-4 of the largest value in
    /// f32, within 4% of it in bf16. Attention rows longer than a warp, and grouped key heads
    /// (three query heads to one), are covered.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_ops_match_the_cpu_ops() {
        type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let cpu = Device::Cpu;
        let r = |shape: &[usize]| Tensor::randn(0f32, 1., shape, &cpu).expect("randn");
        let (w, cos, sin) = (r(&[64]), r(&[300, 8]), r(&[300, 8]));
        let (cos2, sin2) = (cos.clone(), sin.clone());
        let (cos3, sin3) = (cos.clone(), sin.clone());
        let segments = |lens: &[u32]| lens.iter().flat_map(|&n| 0..n).collect::<Vec<u32>>();
        let packed = Tensor::from_vec([segments(&[120, 100, 80]), segments(&[7, 293])].concat(), (2, 300), &cpu).expect("positions");
        let packed2 = packed.clone();
        let head = (r(&[1000, 16]) * 0.5).expect("head");
        let targets = Tensor::from_vec((0..50u32).map(|i| i * 37 % 1000).collect::<Vec<_>>(), 50, &cpu).expect("targets");
        let t = 300;
        let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), &cpu).expect("mask");
        let mask2 = mask.clone();
        let on = |x: &Tensor, d: &Device, dt: DType| x.to_device(d).and_then(|x| x.to_dtype(dt)).expect("to device");
        let cases: Vec<(&str, Vec<Tensor>, Op)> = vec![
            (
                "rms_norm",
                vec![r(&[2, 300, 64])],
                Box::new(move |x: &[Tensor]| rms_norm(&x[0], &w.to_device(x[0].device())?.to_dtype(x[0].dtype())?, 1e-5)),
            ),
            (
                "rope",
                vec![r(&[2, 3, 300, 16])],
                Box::new(move |x: &[Tensor]| {
                    let (d, dt) = (x[0].device(), x[0].dtype());
                    rope(&x[0], &cos.to_device(d)?.to_dtype(dt)?, &sin.to_device(d)?.to_dtype(dt)?)
                }),
            ),
            (
                "rope_heads",
                vec![r(&[2, 300, 3, 16])],
                Box::new(move |x: &[Tensor]| {
                    let (d, dt) = (x[0].device(), x[0].dtype());
                    rope_heads(&x[0], &cos2.to_device(d)?.to_dtype(dt)?, &sin2.to_device(d)?.to_dtype(dt)?)
                }),
            ),
            (
                "attention_causal",
                vec![r(&[2, 3, t, 16]), r(&[2, 3, t, 16]), r(&[2, 3, t, 16])],
                Box::new(move |x: &[Tensor]| {
                    let m = mask.to_device(x[0].device())?.to_dtype(x[0].dtype())?;
                    attention_causal(&x[0], &x[1], &x[2], &m, None, 0.25)
                }),
            ),
            (
                "attention_causal grouped",
                vec![r(&[2, 6, t, 16]), r(&[2, 2, t, 16]), r(&[2, 2, t, 16])],
                Box::new(move |x: &[Tensor]| {
                    let m = mask2.to_device(x[0].device())?.to_dtype(x[0].dtype())?;
                    attention_causal(&x[0], &x[1], &x[2], &m, None, 0.25)
                }),
            ),
            (
                // two rows of three and two examples (the second row's lengths odd)
                "attention_causal packed",
                vec![r(&[2, 6, t, 16]), r(&[2, 2, t, 16]), r(&[2, 2, t, 16])],
                Box::new(move |x: &[Tensor]| {
                    let p = packed.to_device(x[0].device())?;
                    attention_causal(&x[0], &x[1], &x[2], &packed_mask(&p)?.to_dtype(x[0].dtype())?, Some(&p), 0.25)
                }),
            ),
            (
                "rope_heads packed",
                vec![r(&[2, 300, 3, 16])],
                Box::new(move |x: &[Tensor]| {
                    let (d, dt) = (x[0].device(), x[0].dtype());
                    let p = packed2.to_device(d)?.flatten_all()?;
                    let at = |table: &Tensor| table.to_device(d)?.index_select(&p, 0)?.reshape((2, 300, 8))?.to_dtype(dt);
                    rope_heads(&x[0], &at(&cos3)?, &at(&sin3)?)
                }),
            ),
            ("swap_heads", vec![r(&[2, 300, 3, 16])], Box::new(|x: &[Tensor]| swap_heads(&x[0]))),
            ("swap_heads, odd rows", vec![r(&[2, 7, 3, 5])], Box::new(|x: &[Tensor]| swap_heads(&x[0]))),
            ("swiglu", vec![r(&[2, 300, 64]), r(&[2, 300, 64])], Box::new(|x: &[Tensor]| swiglu(&x[0], &x[1]))),
            // 50 rows in chunks of 16 (the last one short), a 1,000-word vocabulary
            (
                "cross_entropy",
                vec![r(&[50, 16])],
                Box::new(move |x: &[Tensor]| {
                    let (d, dt) = (x[0].device(), x[0].dtype());
                    cross_entropy(&x[0], &head.to_device(d)?.to_dtype(dt)?, &targets.to_device(d)?, 16)?.reshape(1)
                }),
            ),
        ];
        for (name, inputs, op) in cases {
            let run = |d: &Device, dt: DType| -> Vec<Vec<f32>> {
                let vars: Vec<Var> = inputs.iter().map(|x| Var::from_tensor(&on(x, d, dt)).expect("var")).collect();
                let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                let y = op(&xs).expect("op");
                let probe = Tensor::ones_like(&y).and_then(|p| p.cumsum(D::Minus1)).and_then(|p| p.sin()).expect("probe");
                let grads = y.mul(&probe).and_then(|l| l.sum_all()).and_then(|l| l.backward()).expect("backward");
                let flat = |t: &Tensor| t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("vec");
                let mut out = vec![flat(&y)];
                out.extend(xs.iter().map(|x| flat(grads.get(x).unwrap_or_else(|| panic!("{name}: no gradient reaches an input")))));
                out
            };
            let want = run(&cpu, DType::F32);
            for (dt, tol) in [(DType::F32, 1e-4f32), (DType::BF16, 4e-2)] {
                for (i, (a, e)) in run(&gpu, dt).iter().zip(&want).enumerate() {
                    let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    let diff = a.iter().zip(e).fold(0f32, |m, (a, e)| m.max((a - e).abs()));
                    assert!(
                        diff <= tol * scale,
                        "{name} {dt:?}: {} differs by {diff} (largest {scale})",
                        if i == 0 { "the value".to_owned() } else { format!("gradient {i}") }
                    );
                }
            }
        }
    }

    /// On CUDA, `add_matmul` (cuBLAS with beta = 1 into `c`) gives the CPU's `c + a·b`, for
    /// `b` contiguous and for `b` the transpose of a contiguous matrix, in f32 and bf16.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_add_matmul_matches_the_cpu() {
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let cpu = Device::Cpu;
        let r = |shape: (usize, usize)| Tensor::randn(0f32, 1., shape, &cpu).expect("randn");
        let (c, a, b, bt) = (r((37, 70)), r((37, 16)), r((16, 70)), r((70, 16)));
        for (name, b) in [("contiguous", b), ("transposed", bt.t().expect("t"))] {
            let want = add_matmul(c.clone(), &a, &b).expect("cpu");
            for (dt, tol) in [(DType::F32, 1e-4f32), (DType::BF16, 3e-2)] {
                let on = |x: &Tensor| x.to_device(&gpu).and_then(|x| x.to_dtype(dt)).expect("to gpu");
                let got = add_matmul(on(&c).copy().expect("fresh"), &on(&a), &on(&b))
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_device(&cpu))
                    .expect("gpu");
                let scale =
                    want.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).expect("max");
                assert!(close(&got, &want) <= tol * scale, "{name} {dt:?}: differs by {} (largest {scale})", close(&got, &want));
            }
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
