//! A frozen weight matrix stored in NF4 with double quantization on its device, dequantized
//! on demand (for one matrix product at a time, so only one layer is ever dense). On the CPU
//! the codes stay in host memory and dequantize in a loop; on a GPU they live in device memory
//! and dequantize in one kernel (`cuda/nf4.rs`), or with tensor ops for a dtype it does not write.

use candle_core::{DType, Device, Result, Tensor};

use super::dynamic::dynamic_map;
use super::nf4::{BLOCK, BLOCK2, NF4_CODE, Nf4};

/// An (out, in) weight in NF4.
#[derive(Debug, Clone)]
pub struct Nf4Weight {
    rows: usize,
    cols: usize,
    dtype: DType,
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Host(std::sync::Arc<Nf4>),
    /// `pairs` (256, 2): the two code values a packed byte holds (high nibble first), so one
    /// gather turns the packed bytes into weights.
    Device {
        packed: Tensor,
        absmax_q: Tensor,
        absmax2: Tensor,
        offset: f64,
        pairs: Tensor,
        code2: Tensor,
        blocks: usize,
    },
}

impl Store {
    /// The device store of `q`.
    fn device(q: Nf4, device: &Device) -> Result<Self> {
        let blocks = q.absmax_q.len();
        let mut absmax_q = q.absmax_q;
        absmax_q.resize(blocks.div_ceil(BLOCK2) * BLOCK2, 0);
        let n2 = q.absmax2.len();
        let pairs: Vec<f32> = (0..256).flat_map(|b| [NF4_CODE[b >> 4], NF4_CODE[b & 15]]).collect();
        Ok(Store::Device {
            packed: Tensor::from_vec(q.packed, blocks * BLOCK / 2, device)?,
            absmax_q: Tensor::from_vec(absmax_q, (n2, BLOCK2), device)?,
            absmax2: Tensor::from_vec(q.absmax2, (n2, 1), device)?,
            offset: f64::from(q.offset),
            pairs: Tensor::from_vec(pairs, (256, 2), device)?,
            code2: Tensor::new(&dynamic_map(), device)?,
            blocks,
        })
    }
}

impl Nf4Weight {
    /// Quantizes a 2-D weight (its element count a multiple of 64); it dequantizes to `dtype`.
    pub fn quantize(w: &Tensor, dtype: DType) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        if (rows * cols) % BLOCK != 0 {
            candle_core::bail!("NF4 needs a multiple of {BLOCK} weights, got {rows}x{cols}");
        }
        let device = w.device().clone();
        let q = Nf4::quantize(&w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        let store = if device.is_cpu() { Store::Host(std::sync::Arc::new(q)) } else { Store::device(q, &device)? };
        Ok(Self { rows, cols, dtype, store })
    }

    /// The weight, dense, (out, in).
    pub fn dequantize(&self) -> Result<Tensor> {
        match &self.store {
            Store::Host(q) => Tensor::from_vec(q.dequantize(), (self.rows, self.cols), &Device::Cpu)?.to_dtype(self.dtype),
            Store::Device { packed, absmax_q, absmax2, offset, pairs, code2, blocks } => {
                #[cfg(feature = "cuda")]
                if packed.device().is_cuda() && matches!(self.dtype, DType::BF16 | DType::F32) {
                    let op = crate::cuda::nf4::Dequantize {
                        absmax_q,
                        absmax2,
                        code2,
                        offset: *offset as f32,
                        shape: (self.rows, self.cols),
                        dtype: self.dtype,
                    };
                    return packed.apply_op1_no_bwd(&op);
                }
                // one gather and one multiply: unpacking the nibbles by integer arithmetic was
                // half of a 7B training step's GPU time (BENCHMARKS.md). The ids are widened to
                // u32: candle 0.11's CPU gather with u8 ids gave wrong rows past the first few
                // thousand (this module's test caught it).
                let values = pairs.index_select(&packed.to_dtype(DType::U32)?, 0)?.reshape((self.rows * self.cols / BLOCK, BLOCK))?;
                let scales = code2
                    .index_select(&absmax_q.flatten_all()?.to_dtype(DType::U32)?, 0)?
                    .reshape(absmax_q.dims())?
                    .broadcast_mul(absmax2)?
                    .affine(1.0, *offset)?
                    .flatten_all()?
                    .narrow(0, 0, *blocks)?
                    .unsqueeze(1)?;
                values.broadcast_mul(&scales)?.reshape((self.rows, self.cols))?.to_dtype(self.dtype)
            }
        }
    }

    /// (out, in).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        let n = self.rows * self.cols;
        n / 2 + n / BLOCK + 4 * n.div_ceil(BLOCK * BLOCK2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host path and the tensor-op path (what a GPU runs) give the same weights as
    /// `Nf4::dequantize`.
    #[test]
    fn both_dequantization_paths_agree() {
        let w = Tensor::randn(0f32, 0.05, (96, 320), &Device::Cpu).expect("w");
        let host = Nf4Weight::quantize(&w, DType::F32).expect("quantize");
        let q = Nf4::quantize(&w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"));
        let ops = Nf4Weight { rows: 96, cols: 320, dtype: DType::F32, store: Store::device(q.clone(), &Device::Cpu).expect("store") };
        let a = host.dequantize().and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("host");
        let b = ops.dequantize().and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("ops");
        assert_eq!(a, q.dequantize());
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "paths differ by {diff}");
    }

    /// On a GPU, the NF4 kernel gives the host's weights: f32 to the bit pattern's rounding,
    /// bf16 as the host's weights rounded to bf16.
    #[cfg(feature = "cuda")]
    #[test]
    fn the_cuda_kernel_gives_the_host_weights() {
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        // 80 x 4096 weights: 5,120 blocks, so the second-level scales (per 256 blocks) vary
        let w = Tensor::randn(0f32, 0.05, (80, 4096), &Device::Cpu).expect("w");
        let host = Nf4::quantize(&w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec")).dequantize();
        for dtype in [DType::F32, DType::BF16] {
            let q = Nf4Weight::quantize(&w.to_device(&gpu).expect("to gpu"), dtype).expect("quantize");
            let got = q.dequantize().expect("kernel");
            assert_eq!(got.dtype(), dtype);
            let got = got
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(&Device::Cpu))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .expect("back");
            let want: Vec<f32> =
                if dtype == DType::BF16 { host.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect() } else { host.clone() };
            let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "{dtype:?}: kernel and host differ by {diff}");
        }
    }
}
