//! The CUDA kernels medtune writes itself (the `cuda` feature): one `.cu`/`.rs` pair per
//! kernel family — `fused` (the training pass's fused ops, AdamW, dropout masks, the
//! cross-entropy's rows), `decode` (a server's batched step) and `nf4` (NF4 dequantization) — each `.cu` compiled to PTX by
//! build.rs for `CUDA_COMPUTE_CAP`, and what every launch shares: the PTX modules and the
//! launch shapes. Each kernel is pinned to its CPU op by a `cuda`-feature test.

pub(crate) mod decode;
pub(crate) mod fused;
pub(crate) mod nf4;

use candle_core::cuda_backend::cudarc::driver::LaunchConfig;

/// A PTX module as the device loads it: its name and its code.
pub(crate) struct Ptx {
    /// The module's name on the device (each kernel is loaded once per device).
    pub name: &'static str,
    /// The PTX text build.rs wrote.
    pub code: &'static str,
}

/// `fused.cu`.
pub(crate) const FUSED: Ptx = Ptx { name: "medtune_fused", code: include_str!(concat!(env!("OUT_DIR"), "/fused.ptx")) };

/// `decode.cu`.
pub(crate) const DECODE: Ptx = Ptx { name: "medtune_decode", code: include_str!(concat!(env!("OUT_DIR"), "/decode.ptx")) };

/// `nf4.cu`.
pub(crate) const NF4: Ptx = Ptx { name: "medtune_nf4", code: include_str!(concat!(env!("OUT_DIR"), "/nf4.ptx")) };

/// Threads per block of every kernel.
pub(crate) const BLOCK: u32 = 256;

/// A grid-stride launch over `n` elements (or packed words).
pub(crate) fn grid_stride(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(BLOCK as usize).clamp(1, 65_535 * 8) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// `blocks` blocks of [`BLOCK`] threads (one per row for the row kernels).
pub(crate) fn per_block(blocks: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks.max(1) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}
