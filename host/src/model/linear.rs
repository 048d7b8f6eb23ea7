//! A frozen linear layer: GGUF-quantized, NF4 or dense. Quantized weights multiply a few
//! rows (decoding) with candle's quantized kernels, and many rows (a prompt) by dequantizing
//! the weight for one dense matrix product, which is much faster there.
//!
//! The training product ([`Linear::forward_frozen`]) passes a gradient to its input only:
//! the weight is frozen, so its gradient is never computed (candle's matmul backward would).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Result, Tensor};

use super::amx::TileWeight;
use crate::quant::Nf4Weight;

/// From this many rows on, a quantized weight is dequantized for a dense product.
const DENSE_FROM_ROWS: usize = 16;

/// From this many rows on, a [`Linear::Resident`] weight takes its dense copy: the quantized
/// kernels stream the whole weight once per row, the dense product once per call.
const RESIDENT_DENSE_FROM_ROWS: usize = 4;

/// `y = x W^T` with `W` of shape (out, in), in the Hugging Face layout.
#[derive(Debug, Clone)]
pub enum Linear {
    /// GGUF-quantized weights.
    Quantized(QMatMul),
    /// NF4 with double quantization (QLoRA's frozen base).
    Nf4(Nf4Weight),
    /// Dense weights.
    Dense(Tensor),
    /// GGUF-quantized weights for a few rows and their dense copy, kept, for many (a server
    /// batching many sequences per step).
    Resident {
        /// The quantized weights.
        q: QMatMul,
        /// The same, dequantized once.
        dense: Tensor,
    },
    /// A layer (quantized or dense) and its copy packed for AMX tile products (bf16 products
    /// with f32 sums), on a CPU that has them: the copy serves a server's batched steps
    /// ([`Linear::forward_batched`]), the layer every other product.
    Tiles {
        /// The layer as it was.
        layer: Box<Linear>,
        /// Its weight, packed once.
        tiles: std::sync::Arc<TileWeight>,
    },
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

impl Linear {
    /// The weight as a dense (out, in) tensor.
    pub fn weight(&self) -> Result<Tensor> {
        match self {
            Linear::Quantized(QMatMul::QTensor(q)) => q.dequantize(&q.device()),
            Linear::Tiles { layer, .. } => layer.weight(),
            Linear::Quantized(QMatMul::Tensor(w)) | Linear::Quantized(QMatMul::TensorF16(w)) | Linear::Dense(w) => Ok(w.clone()),
            Linear::Resident { dense, .. } => Ok(dense.clone()),
            Linear::Nf4(q) => q.dequantize(),
        }
    }

    /// This layer with a copy kept for products of many rows: on a CPU with AMX computing in
    /// f32, its weight packed for tile products ([`Linear::Tiles`], quantized or dense layers);
    /// elsewhere a dense copy of a GGUF-quantized weight, in `dtype` ([`Linear::Resident`]).
    /// Another kind is returned as it is.
    pub fn with_dense_copy(self, dtype: DType) -> Result<Self> {
        let tiled = dtype == DType::F32 && super::amx::available();
        match self {
            Linear::Quantized(QMatMul::QTensor(q)) if tiled && q.device().is_cpu() => {
                let tiles = TileWeight::pack(&q.dequantize(&q.device())?)?;
                Ok(Linear::Tiles { layer: Box::new(Linear::Quantized(QMatMul::QTensor(q))), tiles: std::sync::Arc::new(tiles) })
            }
            Linear::Dense(w) if tiled && w.device().is_cpu() => {
                let tiles = TileWeight::pack(&w)?;
                Ok(Linear::Tiles { layer: Box::new(Linear::Dense(w)), tiles: std::sync::Arc::new(tiles) })
            }
            Linear::Quantized(QMatMul::QTensor(q)) => {
                let dense = q.dequantize(&q.device())?.to_dtype(dtype)?;
                Ok(Linear::Resident { q: QMatMul::QTensor(q), dense })
            }
            other => Ok(other),
        }
    }

    /// `x W^T` for training: the gradient reaches `x` (`grad · W`, dequantizing `W` again
    /// rather than keeping it); none is computed for the frozen weight.
    pub fn forward_frozen(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.frozen_value(&x.detach())?;
        let me = self.clone();
        super::ops::attach(x, y, move |_, grad| me.frozen_input_grad(grad))
    }

    /// [`Linear::forward_frozen`] where only its gradient is used (the last product of a block
    /// half recomputed in the memory mode): the same input gradient, but the value is zeros
    /// instead of `x W^T`, so the weight is neither dequantized nor multiplied forward.
    pub fn frozen_gradient_only(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.dims().to_vec();
        if let Some(last) = out.last_mut() {
            *last = self.out_dim()?;
        }
        let y = Tensor::zeros(out, x.dtype(), x.device())?;
        let me = self.clone();
        super::ops::attach(x, y, move |_, grad| me.frozen_input_grad(grad))
    }

    /// The number of outputs (the weight's rows).
    pub fn out_dim(&self) -> Result<usize> {
        match self {
            Linear::Quantized(q) => match q {
                QMatMul::QTensor(t) => t.shape().dims2().map(|(out, _)| out),
                QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.dim(0),
            },
            Linear::Tiles { tiles, .. } => Ok(tiles.out_dim()),
            Linear::Nf4(q) => Ok(q.dims().0),
            Linear::Dense(w) | Linear::Resident { dense: w, .. } => w.dim(0),
        }
    }

    /// The number of inputs (the weight's columns).
    pub fn in_dim(&self) -> Result<usize> {
        match self {
            Linear::Quantized(q) => match q {
                QMatMul::QTensor(t) => t.shape().dims2().map(|(_, inputs)| inputs),
                QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.dim(1),
            },
            Linear::Tiles { tiles, .. } => Ok(tiles.in_dim()),
            Linear::Nf4(q) => Ok(q.dims().1),
            Linear::Dense(w) | Linear::Resident { dense: w, .. } => w.dim(1),
        }
    }

    /// The training product's value `x W^T`, outside any graph (a dense product).
    pub fn frozen_value(&self, x: &Tensor) -> Result<Tensor> {
        dense(x, &self.weight()?.to_dtype(x.dtype())?)
    }

    /// The gradient the training product passes to its input: `grad · W`.
    pub fn frozen_input_grad(&self, grad: &Tensor) -> Result<Tensor> {
        let mut out = grad.dims().to_vec();
        let rows_grad = self.frozen_input_grad_into(None, grad)?;
        if let Some(last) = out.last_mut() {
            *last = rows_grad.dim(1)?;
        }
        rows_grad.reshape(out)
    }

    /// `acc + grad · W` as (rows, in), written into `acc` (which no other tensor may share, see
    /// `ops::add_matmul`), or `grad · W` without `acc`.
    pub fn frozen_input_grad_into(&self, acc: Option<Tensor>, grad: &Tensor) -> Result<Tensor> {
        let w = self.weight()?.to_dtype(grad.dtype())?;
        let width = grad.dim(candle_core::D::Minus1)?;
        let grad = grad.reshape((grad.elem_count() / width.max(1), width))?;
        match acc {
            Some(acc) => super::ops::add_matmul(acc, &grad, &w),
            None => grad.matmul(&w),
        }
    }
}

impl Linear {
    /// `x W^T` in a server's batched step: a tiled copy always takes the tiles, whatever the
    /// step's rows, so a sequence gets the same numbers whichever sequences share its steps
    /// (and, for a dense weight, half the bytes per step); other kinds as [`Module::forward`].
    pub fn forward_batched(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Tiles { tiles, .. } => tiles.matmul(x)?.to_dtype(x.dtype()),
            other => other.forward(x),
        }
    }
}

/// [`Linear::forward_batched`] of layers that share the input `x` (q, k and v; gate and up),
/// in order: tiled copies in one call ([`TileWeight::matmul_shared`]).
pub fn forward_batched_shared(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
    let tiles: Option<Vec<&TileWeight>> = layers
        .iter()
        .map(|l| match l {
            Linear::Tiles { tiles, .. } => Some(tiles.as_ref()),
            _ => None,
        })
        .collect();
    match tiles {
        Some(tiles) => TileWeight::matmul_shared(&tiles, x)?.into_iter().map(|y| y.to_dtype(x.dtype())).collect(),
        None => layers.iter().map(|l| l.forward_batched(x)).collect(),
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows: usize = x.dims()[..x.rank() - 1].iter().product();
        match self {
            Linear::Quantized(QMatMul::QTensor(q)) if rows >= DENSE_FROM_ROWS => dense(x, &q.dequantize(x.device())?.to_dtype(x.dtype())?),
            // the quantized kernels take f32 activations (a bf16 pass converts around them)
            Linear::Quantized(q) if x.dtype() != DType::F32 => q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
            Linear::Quantized(q) => q.forward(x),
            Linear::Nf4(q) => dense(x, &q.dequantize()?.to_dtype(x.dtype())?),
            Linear::Dense(w) => dense(x, &w.to_dtype(x.dtype())?),
            Linear::Resident { dense: w, .. } if rows >= RESIDENT_DENSE_FROM_ROWS => dense(x, &w.to_dtype(x.dtype())?),
            Linear::Resident { q, .. } if x.dtype() != DType::F32 => q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
            Linear::Resident { q, .. } => q.forward(x),
            Linear::Tiles { layer, .. } => layer.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::quant::Nf4Weight;

    /// A resident layer answers a few rows as its quantized kernels do and many rows as its
    /// dense copy does, and each row alike whatever rows come with it in those two regimes.
    #[test]
    fn a_resident_weight_takes_the_quantized_kernel_for_few_rows_and_its_copy_for_many() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (16, 256), &dev).expect("w");
        let q = || Linear::Quantized(QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4K).expect("q4k")).expect("qmatmul"));
        let Linear::Quantized(QMatMul::QTensor(qt)) = q() else { unreachable!("a quantized layer") };
        let resident = Linear::Resident { q: QMatMul::QTensor(qt), dense: q().weight().expect("dequantized") };
        let dense = Linear::Dense(q().weight().expect("dequantized"));
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .and_then(|d| d.abs())
                .and_then(|d| d.flatten_all())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff")
        };
        let x = Tensor::randn(0f32, 1., (1, 8, 256), &dev).expect("x");
        for rows in [1, 3, 4, 8] {
            let part = x.narrow(1, 0, rows).expect("rows");
            let got = resident.forward(&part).expect("resident");
            let want = if rows < RESIDENT_DENSE_FROM_ROWS { q().forward(&part) } else { dense.forward(&part) }.expect("reference");
            assert_eq!(max_diff(&got, &want), 0.0, "{rows} rows");
        }
        // the quantized kernels round the activations: the regimes differ, a little
        let few = resident.forward(&x.narrow(1, 0, 1).expect("row")).expect("few");
        let many = resident.forward(&x).expect("many").narrow(1, 0, 1).expect("row");
        let diff = max_diff(&few, &many);
        assert!(diff > 0.0 && diff < 0.05, "{diff}");
    }

    /// With AMX, the kept copy is packed for tiles: the plain product stays the layer's own;
    /// the batched one takes the tiles (bf16-rounded) for any number of rows, each row alike.
    #[test]
    fn a_tiled_copy_keeps_plain_products_and_batches_on_tiles_row_by_row() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (64, 256), &dev).expect("w");
        let q = || Linear::Quantized(QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).expect("q8")).expect("qmatmul"));
        let copy = q().with_dense_copy(DType::F32).expect("copy");
        if !crate::model::amx::available() {
            assert!(matches!(copy, Linear::Resident { .. }), "without AMX the copy is dense");
            return;
        }
        assert!(matches!(copy, Linear::Tiles { .. }));
        assert_eq!((copy.out_dim().expect("out"), copy.in_dim().expect("in")), (64, 256));
        let max_diff = |a: Tensor, b: Tensor| (a - b).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()).expect("diff");
        let x = Tensor::randn(0f32, 1., (1, 8, 256), &dev).expect("x");
        for rows in [1, 8] {
            let part = x.narrow(1, 0, rows).expect("rows");
            let exact = max_diff(copy.forward(&part).expect("exact"), q().forward(&part).expect("quantized"));
            assert_eq!(exact, 0.0, "{rows} rows: the plain product is the layer's own");
        }
        let dense = copy.weight().expect("weight");
        let want = x.broadcast_matmul(&dense.t().expect("t")).expect("f32");
        let diff = max_diff(copy.forward_batched(&x).expect("batched"), want);
        assert!(diff > 0.0 && diff < 0.05, "bf16 products stay close to f32's: {diff}");
        // a row's batched product does not depend on the rows beside it
        let one = copy.forward_batched(&x.narrow(1, 2, 1).expect("row")).expect("one");
        let among = copy.forward_batched(&x).and_then(|y| y.narrow(1, 2, 1)).expect("among");
        assert_eq!(max_diff(one, among), 0.0, "a row's tile product changed with its neighbours");
    }

    /// The training product of every kind of frozen weight: the value is `x W^T` of the
    /// weight it dequantizes to, the input gradient matches finite differences, and the
    /// weight gets no gradient at all; the gradient-only product passes the same gradient.
    #[test]
    fn frozen_products_pass_input_gradients_only() {
        let dev = Device::Cpu;
        // rows of 256: one block of the K-quants
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (16, 256), &dev).expect("w")).expect("var");
        let kinds = [
            ("dense", Linear::Dense(w.as_tensor().clone())),
            (
                "q8_0",
                Linear::Quantized(QMatMul::from_qtensor(QTensor::quantize(w.as_tensor(), GgmlDType::Q8_0).expect("q8")).expect("qmatmul")),
            ),
            (
                "q4_1",
                Linear::Quantized(QMatMul::from_qtensor(QTensor::quantize(w.as_tensor(), GgmlDType::Q4_1).expect("q4")).expect("qmatmul")),
            ),
            ("nf4", Linear::Nf4(Nf4Weight::quantize(w.as_tensor(), DType::F32).expect("nf4"))),
        ]
        .into_iter()
        .chain([("q4_k", GgmlDType::Q4K), ("q5_k", GgmlDType::Q5K), ("q6_k", GgmlDType::Q6K)].map(|(name, dtype)| {
            (name, Linear::Quantized(QMatMul::from_qtensor(QTensor::quantize(w.as_tensor(), dtype).expect("k-quant")).expect("qmatmul")))
        }));
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 256), &dev).expect("x")).expect("var");
        let probe = Tensor::randn(0f32, 1., (2, 3, 16), &dev).expect("probe");
        for (name, l) in kinds {
            let y = l.forward_frozen(x.as_tensor()).expect("forward");
            let want = x.as_tensor().broadcast_matmul(&l.weight().expect("w").t().expect("t")).expect("want");
            let diff = (&y - &want)
                .and_then(|d| d.abs())
                .and_then(|d| d.flatten_all())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            assert!(diff < 1e-5, "{name}: product off by {diff}");
            let grads = y.mul(&probe).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(grads.get(w.as_tensor()).is_none(), "{name}: the frozen weight got a gradient");
            let g = grads.get(x.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient reaches the input"));
            let at = |delta: f32| -> f32 {
                let mut v = x.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec");
                v[70] += delta;
                let t = Tensor::from_vec(v, (2, 3, 256), &dev).expect("t");
                l.forward_frozen(&t).and_then(|y| y.mul(&probe)).and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>()).expect("f")
            };
            let numeric = (at(1e-2) - at(-1e-2)) / 2e-2;
            let analytic = g.flatten_all().and_then(|t| t.get(70)).and_then(|t| t.to_scalar::<f32>()).expect("g");
            assert!(
                (numeric - analytic).abs() < 1e-2 * numeric.abs().max(1.0),
                "{name}: gradient {analytic} vs finite difference {numeric}"
            );
            // the gradient-only product: zeros of the product's shape, the same input gradient
            let z = l.frozen_gradient_only(x.as_tensor()).expect("gradient only");
            assert_eq!(z.dims(), y.dims(), "{name}: gradient-only shape");
            let zmax = z.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).expect("max");
            assert!(zmax == 0.0, "{name}: the gradient-only value is not zeros");
            let zg = z.mul(&probe).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            let same = zg.get(x.as_tensor()).map(|d| {
                (d - g)
                    .and_then(|d| d.abs())
                    .and_then(|d| d.flatten_all())
                    .and_then(|d| d.max(0))
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("diff")
            });
            assert!(same == Some(0.0), "{name}: the gradient-only input gradient differs ({same:?})");
        }
    }
}
