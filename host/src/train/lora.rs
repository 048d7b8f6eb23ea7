//! A LoRA layer (Hu et al. 2021) over a frozen base: `y = base(x) + (alpha/r) · B(A(dropout(x)))`
//! with `A` (r × in) and `B` (out × r) trained, `B` starting at zero so training starts from the
//! base model. Tensor names follow PEFT (`lora_A.weight`, `lora_B.weight`).

use candle_core::{DType, Device, Module, Result, Tensor, Var};

use crate::model::Linear;

/// LoRA hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scaling numerator: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f32,
}

/// A frozen linear layer with a trainable low-rank update.
pub struct LoraLinear {
    base: Linear,
    /// (r, in), initialized like PEFT (Kaiming-uniform, a = sqrt(5)).
    pub a: Var,
    /// (out, r), zeros.
    pub b: Var,
    scale: f64,
    dropout: f32,
}

impl LoraLinear {
    /// Wraps `base` (of shape out × in) with fresh adapters; `seed` makes `A` repeatable.
    pub fn new(base: Linear, in_dim: usize, out_dim: usize, cfg: LoraConfig, seed: u64, device: &Device) -> Result<Self> {
        // Kaiming-uniform with a = sqrt(5): bound = 1 / sqrt(in_dim)
        let bound = 1.0 / (in_dim as f64).sqrt();
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let values: Vec<f32> = (0..cfg.r * in_dim)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                (((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32 * bound as f32
            })
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(values, (cfg.r, in_dim), device)?)?;
        let b = Var::zeros((out_dim, cfg.r), DType::F32, device)?;
        Ok(Self { base, a, b, scale: cfg.alpha / cfg.r as f64, dropout: cfg.dropout })
    }

    /// The forward pass; `train` turns dropout on.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let base = self.base.forward(x)?;
        let x = if train && self.dropout > 0.0 { candle_nn::ops::dropout(x, self.dropout)? } else { x.clone() };
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let flat = x.reshape((rows, dims[dims.len() - 1]))?;
        let update = flat.matmul(&self.a.as_tensor().t()?)?.matmul(&self.b.as_tensor().t()?)?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = update.dim(1)?;
        }
        base + (update.reshape(out)? * self.scale)?
    }

    /// The trainable tensors under their PEFT names (relative to the layer).
    pub fn named_vars(&self) -> [(&'static str, &Var); 2] {
        [("lora_A.weight", &self.a), ("lora_B.weight", &self.b)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_base_and_trains_only_the_adapters() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (6, 8), &dev).expect("w");
        let cfg = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0 };
        let layer = LoraLinear::new(Linear::Dense(w.clone()), 8, 6, cfg, 7, &dev).expect("layer");
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (1, 3, 8), &dev).expect("x")).expect("var");
        let y = layer.forward_t(x.as_tensor(), true).expect("forward");
        let base = Linear::Dense(w.clone()).forward(x.as_tensor()).expect("base");
        let diff = (&y - &base).and_then(|d| d.abs()).and_then(|d| d.max_keepdim(2)).and_then(|d| d.flatten_all()).and_then(|d| d.max(0));
        assert_eq!(diff.and_then(|d| d.to_scalar::<f32>()).expect("diff"), 0.0, "B = 0: the adapter starts as a no-op");
        // one step of gradient descent on B, then A gets a gradient too
        let target = Tensor::randn(0f32, 1., (1, 3, 6), &dev).expect("target");
        let loss = (&y - &target).and_then(|d| d.sqr()).and_then(|d| d.sum_all()).expect("loss");
        let grads = loss.backward().expect("backward");
        let gb = grads.get(layer.b.as_tensor()).expect("B gets a gradient");
        assert!(gb.abs().and_then(|g| g.sum_all()).and_then(|g| g.to_scalar::<f32>()).expect("sum") > 0.0);
        assert!(grads.get(x.as_tensor()).is_some(), "the layer's input gets its gradient");
        assert!(grads.get(&w).is_none(), "the frozen base is not trained");
        layer.b.set(&(layer.b.as_tensor() - (gb * 0.1).expect("step")).expect("new B")).expect("set");
        let y = layer.forward_t(x.as_tensor(), false).expect("forward");
        let loss = (&y - &target).and_then(|d| d.sqr()).and_then(|d| d.sum_all()).expect("loss");
        let grads = loss.backward().expect("backward");
        let ga = grads.get(layer.a.as_tensor()).expect("A gets a gradient once B is not zero");
        assert!(ga.abs().and_then(|g| g.sum_all()).and_then(|g| g.to_scalar::<f32>()).expect("sum") > 0.0);
        assert_eq!(layer.named_vars().map(|(n, _)| n), ["lora_A.weight", "lora_B.weight"]);
    }
}
