//! Ops of the training forward pass (`Pass::Train`) that pass gradients to their inputs:
//! candle's fused `rms_norm`, `rotary_emb::rope` and `softmax_last_dim` run backward without
//! error but pass no gradient to their input (../shared/RECIPES.md). [`attach`] gives a value
//! computed by a fused kernel a hand-written backward, keeping only the output for it.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, D};

type Backward = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// `y` (computed from `x.detach()`), made a differentiable function of `x` whose input
/// gradient is `backward(y, grad_y)`. The graph keeps `x` and `y`, nothing in between.
pub fn attach(x: &Tensor, y: Tensor, backward: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Result<Tensor> {
    x.apply_op1(Attached { value: Mutex::new(Some(y)), backward: Arc::new(backward) })
}

struct Attached {
    value: Mutex<Option<Tensor>>,
    backward: Arc<Backward>,
}

impl Attached {
    fn take(&self) -> Result<Tensor> {
        let mut slot = self.value.lock().map_err(|_| candle_core::Error::Msg("attached value: poisoned lock".into()))?;
        slot.take().ok_or_else(|| candle_core::Error::Msg("attached value used twice".into()))
    }
}

impl candle_core::CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "attached"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let y = self.take()?.contiguous()?;
        let (storage, layout) = y.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) if layout.start_offset() == 0 => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("attached value: expected a CPU tensor from offset 0"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let y = self.take()?.contiguous()?;
        let (storage, layout) = y.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) if layout.start_offset() == 0 => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("attached value: expected a CUDA tensor from offset 0"),
        }
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        (self.backward)(y, grad).map(Some)
    }
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
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)?.add(&rotated.broadcast_mul(&sin)?)
}

/// Softmax over the last dimension: candle's fused kernel forward, `y·(g - Σ g·y)` backward.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let y = candle_nn::ops::softmax_last_dim(&x.detach())?;
    attach(x, y, |y, g| y * g.broadcast_sub(&(g * y)?.sum_keepdim(D::Minus1)?)?)
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
            ("softmax", Box::new(softmax), Box::new(|t: &Tensor| candle_nn::ops::softmax(t, D::Minus1))),
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
}
