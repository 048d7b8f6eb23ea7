//! Ops of the training forward pass (`Pass::Train`) written with differentiable primitives: candle's fused
//! `rms_norm`, `rotary_emb::rope` and `softmax_last_dim` run backward without error but pass
//! no gradient to their input (../shared/RECIPES.md).

use candle_core::{DType, Result, Tensor, D};

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`, over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let x32 = x.to_dtype(DType::F32)?;
    let norm = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x32.broadcast_div(&norm)?.to_dtype(x.dtype())?.broadcast_mul(weight)
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

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).and_then(|d| d.abs()).and_then(|d| d.flatten_all()).and_then(|d| d.max(0)).and_then(|d| d.to_scalar::<f32>()).expect("diff")
    }

    /// Each op computes what candle's fused op computes, and passes a gradient to its input
    /// (checked against finite differences on one element).
    #[test]
    fn ops_match_the_fused_ones_and_pass_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (1, 2, 5, 8), &dev).expect("x")).expect("var");
        let w = Tensor::randn(1f32, 0.1, 8, &dev).expect("w");
        let cos = Tensor::randn(0f32, 1., (5, 4), &dev).expect("cos");
        let sin = Tensor::randn(0f32, 1., (5, 4), &dev).expect("sin");
        let cases: Vec<(&str, Box<dyn Fn(&Tensor) -> Result<Tensor>>, Box<dyn Fn(&Tensor) -> Result<Tensor>>)> = vec![
            ("rms_norm", Box::new(|t: &Tensor| rms_norm(t, &w, 1e-5)), Box::new(|t: &Tensor| candle_nn::ops::rms_norm(&t.contiguous()?, &w, 1e-5))),
            ("rope", Box::new(|t: &Tensor| rope(t, &cos, &sin)), Box::new(|t: &Tensor| candle_nn::rotary_emb::rope(&t.contiguous()?, &cos, &sin))),
            ("softmax", Box::new(softmax), Box::new(|t: &Tensor| candle_nn::ops::softmax_last_dim(t))),
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
