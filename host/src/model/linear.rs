//! A frozen linear layer, quantized (GGUF blocks) or dense. Quantized weights multiply a few
//! rows (decoding) with candle's quantized kernels, and many rows (a prompt) by dequantizing
//! the weight for one dense matrix product, which is much faster there.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Result, Tensor};

/// From this many rows on, a quantized weight is dequantized for a dense product.
const DENSE_FROM_ROWS: usize = 16;

/// `y = x W^T` with `W` of shape (out, in), in the Hugging Face layout.
#[derive(Debug, Clone)]
pub enum Linear {
    /// GGUF-quantized weights.
    Quantized(QMatMul),
    /// Dense weights.
    Dense(Tensor),
}

fn dense(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (rows, inner) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows: usize = x.dims()[..x.rank() - 1].iter().product();
        match self {
            Linear::Quantized(QMatMul::QTensor(q)) if rows >= DENSE_FROM_ROWS => dense(x, &q.dequantize(x.device())?),
            Linear::Quantized(q) => q.forward(x),
            Linear::Dense(w) => dense(x, w),
        }
    }
}
