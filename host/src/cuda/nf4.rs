//! NF4 dequantization on a CUDA device as one kernel (`nf4.cu`, compiled to PTX by build.rs):
//! packed codes and double-quantized scales in, bf16 or f32 weights out. The tensor-op path it
//! replaces ran about nine element-wise kernels and wrote f32 copies in between.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};

use super::{NF4, grid_stride};

/// The kernel's inputs besides the packed codes (all on the same device).
pub(crate) struct Dequantize<'a> {
    pub absmax_q: &'a Tensor,
    pub absmax2: &'a Tensor,
    pub code2: &'a Tensor,
    pub offset: f32,
    pub shape: (usize, usize),
    pub dtype: DType,
}

/// The packed codes, then the scales' codes, second-level scales and code book.
type Inputs<'a> = (&'a CudaView<'a, u8>, &'a CudaSlice<u8>, &'a CudaSlice<f32>, &'a CudaSlice<f32>);

fn slice<'s, T: CudaDType>(s: &'s Storage, what: &str) -> Result<&'s CudaSlice<T>> {
    match s {
        Storage::Cuda(c) => c.as_cuda_slice::<T>(),
        _ => candle_core::bail!("NF4 kernel: {what} is not on the CUDA device"),
    }
}

impl Dequantize<'_> {
    /// Runs `kernel` over `words` packed u32 words, writing the weight as `T`.
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        dev: &CudaDevice,
        kernel: &str,
        (codes, aq, a2, c2): Inputs<'_>,
        words: usize,
    ) -> Result<CudaStorage> {
        let func = dev.get_or_load_custom_func(kernel, NF4.name, NF4.code)?;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(self.shape.0 * self.shape.1)? };
        let cfg = grid_stride(words);
        let mut b = func.builder();
        b.arg(codes).arg(aq).arg(a2).arg(c2).arg(&self.offset).arg(&out).arg(&words);
        // SAFETY: the argument list matches the kernel's signature.
        unsafe { b.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
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
        let dev = packed.device();
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
        let inputs = (&codes, aq, a2, c2);
        let out = match self.dtype {
            DType::BF16 => self.launch::<half::bf16>(dev, "nf4_dequantize_bf16", inputs, words)?,
            DType::F32 => self.launch::<f32>(dev, "nf4_dequantize_f32", inputs, words)?,
            other => candle_core::bail!("the NF4 kernel writes bf16 or f32, not {other:?}"),
        };
        Ok((out, Shape::from(self.shape)))
    }
}
