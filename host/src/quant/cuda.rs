//! NF4 dequantization on a CUDA device as one kernel (`nf4.cu`, compiled to PTX by build.rs):
//! packed codes and double-quantized scales in, bf16 or f32 weights out. The tensor-op path it
//! replaces ran about nine element-wise kernels and wrote f32 copies in between.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/nf4.ptx"));

/// The kernel's inputs besides the packed codes (all on the same device).
pub(super) struct Dequantize<'a> {
    pub absmax_q: &'a Tensor,
    pub absmax2: &'a Tensor,
    pub code2: &'a Tensor,
    pub offset: f32,
    pub shape: (usize, usize),
    pub dtype: DType,
}

fn slice<'s, T: candle_core::cuda_backend::CudaDType>(s: &'s Storage, what: &str) -> Result<&'s candle_core::cuda_backend::cudarc::driver::CudaSlice<T>> {
    match s {
        Storage::Cuda(c) => c.as_cuda_slice::<T>(),
        _ => candle_core::bail!("NF4 kernel: {what} is not on the CUDA device"),
    }
}

impl candle_core::CustomOp1 for Dequantize<'_> {
    fn name(&self) -> &'static str {
        "nf4-dequantize"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NF4 kernel runs on CUDA only")
    }

    fn cuda_fwd(&self, packed: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = packed.device().clone();
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("NF4 kernel: packed codes not contiguous") };
        let bytes = end - start;
        if bytes % 4 != 0 || start % 4 != 0 || bytes * 2 != self.shape.0 * self.shape.1 {
            candle_core::bail!("NF4 kernel: {bytes} packed bytes for a {:?} weight", self.shape);
        }
        let codes = packed.as_cuda_slice::<u8>()?.slice(start..end);
        let (aq, _) = self.absmax_q.storage_and_layout();
        let (a2, _) = self.absmax2.storage_and_layout();
        let (c2, _) = self.code2.storage_and_layout();
        let (aq, a2, c2) = (slice::<u8>(&aq, "absmax_q")?, slice::<f32>(&a2, "absmax2")?, slice::<f32>(&c2, "code2")?);
        let words = bytes / 4;
        let cfg = LaunchConfig { grid_dim: (words.div_ceil(256).min(65_535 * 8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let n = self.shape.0 * self.shape.1;
        let shape = Shape::from(self.shape);
        match self.dtype {
            DType::BF16 => {
                let func = dev.get_or_load_custom_func("nf4_dequantize_bf16", "medtune_nf4", PTX)?;
                // SAFETY: every element is written by the kernel below.
                let out = unsafe { dev.alloc::<half::bf16>(n)? };
                let mut b = func.builder();
                b.arg(&codes).arg(aq).arg(a2).arg(c2).arg(&self.offset).arg(&out).arg(&words);
                // SAFETY: the argument list matches the kernel's signature.
                unsafe { b.launch(cfg) }.w()?;
                Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
            }
            DType::F32 => {
                let func = dev.get_or_load_custom_func("nf4_dequantize_f32", "medtune_nf4", PTX)?;
                // SAFETY: every element is written by the kernel below.
                let out = unsafe { dev.alloc::<f32>(n)? };
                let mut b = func.builder();
                b.arg(&codes).arg(aq).arg(a2).arg(c2).arg(&self.offset).arg(&out).arg(&words);
                // SAFETY: the argument list matches the kernel's signature.
                unsafe { b.launch(cfg) }.w()?;
                Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
            }
            other => candle_core::bail!("the NF4 kernel writes bf16 or f32, not {other:?}"),
        }
    }
}
