//! A frozen linear layer, quantized (GGUF blocks, computed by `QMatMul`) or dense.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Result, Tensor};

/// `y = x W^T` with `W` of shape (out, in), in the Hugging Face layout.
#[derive(Debug, Clone)]
pub enum Linear {
    /// GGUF-quantized weights.
    Quantized(QMatMul),
    /// Dense weights (f32, or f16/bf16 on the GPU).
    Dense(Tensor),
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Quantized(q) => q.forward(x),
            Linear::Dense(w) => {
                let w = match x.dims() {
                    [b, _, _] => w.broadcast_left(*b)?.t()?,
                    _ => w.t()?,
                };
                x.matmul(&w)
            }
        }
    }
}
