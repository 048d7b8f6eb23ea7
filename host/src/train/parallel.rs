//! Data parallelism over several GPUs: a rank's share of each step's micro-batches, and the sum
//! of every rank's adapter gradients over NCCL, one all-reduce per step.
//!
//! Micro-batch `m` of a step goes to rank `m mod world`. Each rank sums the gradients of its
//! micro-batches as one GPU would, NCCL sums those partial sums over the ranks, and every rank
//! then clips and updates the same adapters with the same gradients: the step a single GPU
//! takes over all `grad_accum` micro-batches, but for the order of the additions.

use candle_core::{Device, Tensor};

/// The environment variable through which `medtune train --gpus N` hands its ranks the NCCL id.
pub const NCCL_ID_ENV: &str = "MEDTUNE_NCCL_ID";

/// Why a rank could not join the run or sum its gradients.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// NCCL failed.
    #[error("rank {rank} of {world}: NCCL: {message}")]
    Nccl { rank: usize, world: usize, message: String },
    /// The NCCL id handed down is missing or malformed.
    #[error("{NCCL_ID_ENV}: {0} (ranks are started by `medtune train --gpus N`)")]
    Id(String),
    /// Not a CUDA build.
    #[error("several GPUs need a medtune built with --features cuda (NCCL)")]
    NoCuda,
}

/// This process's place in a data-parallel run.
pub struct DataParallel {
    /// This process's rank, also its GPU's ordinal.
    pub rank: usize,
    /// How many ranks the run has.
    pub world: usize,
    #[cfg(feature = "cuda")]
    comm: candle_core::cuda_backend::cudarc::nccl::safe::Comm,
}

impl DataParallel {
    /// A new NCCL id, hex-encoded, for the launcher to hand every rank.
    pub fn new_id() -> Result<String, ParallelError> {
        #[cfg(feature = "cuda")]
        {
            let id = candle_core::cuda_backend::cudarc::nccl::safe::Id::new().map_err(|e| ParallelError::Nccl {
                rank: 0,
                world: 0,
                message: format!("{e:?}"),
            })?;
            Ok(id.internal().iter().map(|&c| format!("{:02x}", c as u8)).collect())
        }
        #[cfg(not(feature = "cuda"))]
        Err(ParallelError::NoCuda)
    }

    /// Joins the run as `rank` of `world` on `device` (GPU `rank`), with the launcher's `id`
    /// from [`DataParallel::new_id`]. Blocks until every rank has joined.
    pub fn join(device: &Device, rank: usize, world: usize, id: &str) -> Result<Self, ParallelError> {
        let bytes = decode(id)?;
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id};
            let Device::Cuda(d) = device else {
                return Err(ParallelError::Nccl { rank, world, message: "the model is not on a GPU".into() });
            };
            let comm = Comm::from_rank(d.cuda_stream(), rank, world, Id::uninit(bytes.map(|b| b as core::ffi::c_char)))
                .map_err(|e| ParallelError::Nccl { rank, world, message: format!("joining the communicator: {e:?}") })?;
            Ok(Self { rank, world, comm })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, rank, world, bytes);
            Err(ParallelError::NoCuda)
        }
    }

    /// Whether this rank takes micro-batch `micro` of a step.
    pub fn takes(&self, micro: usize) -> bool {
        takes(micro, self.rank, self.world)
    }

    /// Whether this rank writes the run's files (metrics, checkpoints, adapters): rank 0.
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    /// Replaces `grads` and `extra` by their sums over every rank. The gradients are f32 on
    /// this rank's GPU; `extra` travels in the same all-reduce, as f32.
    pub fn sum(&self, grads: &mut [Tensor], extra: &mut [f64]) -> candle_core::Result<()> {
        let Some(first) = grads.first() else { candle_core::bail!("no gradient to sum over the GPUs") };
        let device = first.device().clone();
        let mut parts = grads.iter().map(|g| g.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?;
        if !extra.is_empty() {
            parts.push(Tensor::new(extra.iter().map(|&x| x as f32).collect::<Vec<f32>>(), &device)?);
        }
        let flat = Tensor::cat(&parts, 0)?;
        let summed = self.all_reduce(&flat)?;
        let mut at = 0;
        for g in grads.iter_mut() {
            let n = g.elem_count();
            *g = summed.narrow(0, at, n)?.reshape(g.shape())?;
            at += n;
        }
        if !extra.is_empty() {
            let totals = summed.narrow(0, at, extra.len())?.to_vec1::<f32>()?;
            for (x, s) in extra.iter_mut().zip(totals) {
                *x = f64::from(s);
            }
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn all_reduce(&self, flat: &Tensor) -> candle_core::Result<Tensor> {
        flat.apply_op1_no_bwd(&AllReduce { comm: &self.comm })
    }

    #[cfg(not(feature = "cuda"))]
    fn all_reduce(&self, _: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("{}", ParallelError::NoCuda)
    }
}

/// Whether rank `rank` of `world` takes micro-batch `micro` of a step.
fn takes(micro: usize, rank: usize, world: usize) -> bool {
    micro % world == rank
}

/// The 128 bytes of a hex-encoded NCCL id.
fn decode(hex: &str) -> Result<[u8; 128], ParallelError> {
    if hex.len() != 256 || !hex.is_ascii() {
        return Err(ParallelError::Id(format!("expected 256 hex digits, got {} characters", hex.len())));
    }
    let mut out = [0u8; 128];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| ParallelError::Id(format!("byte {i}: {e}")))?;
    }
    Ok(out)
}

/// The sum over every rank of a contiguous f32 tensor (`ncclAllReduce` on candle's stream).
#[cfg(feature = "cuda")]
struct AllReduce<'a> {
    comm: &'a candle_core::cuda_backend::cudarc::nccl::safe::Comm,
}

#[cfg(feature = "cuda")]
impl candle_core::CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl_all_reduce"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("nccl_all_reduce: the gradients are not on a GPU")
    }

    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::nccl::safe::ReduceOp;
        let dev = s.device.clone();
        let src = s.as_cuda_slice::<f32>()?;
        let n = l.shape().elem_count();
        if l.contiguous_offsets() != Some((0, n)) || src.len() != n {
            candle_core::bail!("nccl_all_reduce: the input is not one contiguous buffer");
        }
        let mut dst = dev.alloc_zeros::<f32>(n)?;
        self.comm.all_reduce(src, &mut dst, &ReduceOp::Sum).map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}")))?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_micro_batch_goes_to_exactly_one_rank() {
        for world in 1..=4 {
            for micro in 0..12 {
                let ranks: Vec<usize> = (0..world).filter(|&r| takes(micro, r, world)).collect();
                assert_eq!(ranks, vec![micro % world], "micro-batch {micro} of {world} ranks");
            }
        }
    }

    #[test]
    fn an_id_is_128_bytes_of_hex() {
        let hex: String = (0..128u8).map(|b| format!("{b:02x}")).collect();
        let bytes = decode(&hex).expect("decodes");
        assert_eq!(bytes[0], 0);
        assert_eq!(bytes[127], 127);
        let short = decode("abcd").expect_err("too short");
        assert!(short.to_string().contains("expected 256 hex digits, got 4"), "{short}");
        let bad = decode(&format!("zz{}", &hex[2..])).expect_err("not hex");
        assert!(bad.to_string().contains("byte 0"), "{bad}");
    }
}
