//! A server's batched step on CUDA (`decode.cu`, compiled to PTX by build.rs): RMSNorm with
//! the residual add before it, RoPE over every row of the step storing each row's keys and
//! values into its own sequence's cache, attention of every row over its sequence's cache in
//! one launch, and SiLU(gate)·up over the halves of one product. A step's tables ([`Step`])
//! go to the device once and serve every layer. `model::llama` calls these on CUDA tensors
//! (bf16 or f32); none passes gradients.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Result, Storage, Tensor};

use super::fused::view;
use super::{DECODE, grid_stride, per_block};

/// Warps per block of the attention kernel (`ATT_WARPS` in `decode.cu`).
const ATTEND_THREADS: u32 = 4 * 32;

/// The largest head dimension the attention kernel holds (32 lanes × `ATT_MAX_E`).
pub const MAX_HEAD_DIM: usize = 256;

/// One step's tables on the device: each row's segment and position, each segment's cache
/// capacity, and each (block, segment)'s key and value buffer addresses.
pub struct Step {
    rows: CudaSlice<i32>,
    caps: CudaSlice<i32>,
    kv: CudaSlice<u64>,
    n_rows: usize,
    segments: usize,
}

impl Step {
    /// `rows`: (segment, position) per row; `caps`: capacity per segment; `kv`: per block,
    /// per segment, the key and value buffers' addresses.
    pub fn new(device: &Device, rows: &[(usize, usize)], caps: &[usize], kv: &[u64]) -> Result<Self> {
        let dev = cuda_device(device)?;
        let to_i32 = |n: usize| i32::try_from(n).map_err(|_| candle_core::Error::Msg(format!("decode step: {n} does not fit an i32")));
        let flat: Vec<i32> = rows.iter().flat_map(|&(s, p)| [to_i32(s), to_i32(p)]).collect::<Result<_>>()?;
        let caps32: Vec<i32> = caps.iter().map(|&c| to_i32(c)).collect::<Result<_>>()?;
        if !kv.len().is_multiple_of(2 * caps.len().max(1)) {
            candle_core::bail!("decode step: {} cache addresses for {} segments", kv.len(), caps.len());
        }
        Ok(Step {
            rows: dev.clone_htod(&flat)?,
            caps: dev.clone_htod(&caps32)?,
            kv: dev.clone_htod(kv)?,
            n_rows: rows.len(),
            segments: caps.len(),
        })
    }

    /// Block `layer`'s cache addresses.
    fn kv(&self, layer: usize) -> Result<CudaView<'_, u64>> {
        let n = 2 * self.segments;
        if (layer + 1) * n > self.kv.len() {
            candle_core::bail!("decode step: no cache addresses for block {layer}");
        }
        Ok(self.kv.slice(layer * n..(layer + 1) * n))
    }
}

fn cuda_device(device: &Device) -> Result<&CudaDevice> {
    match device {
        Device::Cuda(d) => Ok(d),
        _ => candle_core::bail!("decode step: a CUDA device expected"),
    }
}

/// The device address of a CUDA tensor's first element.
pub fn address(t: &Tensor) -> Result<u64> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cuda(s) = &*s else { candle_core::bail!("decode step: a CUDA tensor expected") };
    let stream = s.device().cuda_stream();
    let (base, size) = match s.dtype() {
        DType::BF16 => (s.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0, 2),
        DType::F32 => (s.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        other => candle_core::bail!("decode step: bf16 or f32 only, not {other:?}"),
    };
    Ok(base + (l.start_offset() * size) as u64)
}

/// `t`'s rows of `cols` elements as a view from its first element, and their stride: `t` is
/// (rows, cols) or (1, rows, cols) with unit column stride, rows possibly further apart (a
/// column range of a wider product).
fn rows_view<'a, T: CudaDType>(s: &'a CudaStorage, t: &Tensor, l: &candle_core::Layout, cols: usize) -> Result<(CudaView<'a, T>, i64)> {
    let dims = t.dims();
    let stride = l.stride();
    let rank = dims.len();
    if rank < 2 || dims[rank - 1] != cols || stride[rank - 1] != 1 || dims[..rank - 2].iter().any(|&d| d != 1) {
        candle_core::bail!("decode step: rows of {cols} expected, got {:?} with strides {stride:?}", t.shape());
    }
    let (rows, ld) = (dims[rank - 2], stride[rank - 2]);
    let len = if rows == 0 { 0 } else { (rows - 1) * ld + cols };
    let start = l.start_offset();
    Ok((s.as_cuda_slice::<T>()?.slice(start..start + len), ld as i64))
}

fn wrap<T: CudaDType>(out: CudaSlice<T>, dev: &CudaDevice, shape: &[usize]) -> Tensor {
    Tensor::from_storage(Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone())), shape, BackpropOp::none(), false)
}

/// Rows and columns of an activation (rows, cols) or (1, rows, cols).
fn rows_cols(t: &Tensor) -> Result<(usize, usize)> {
    let d = t.dims();
    match d {
        [r, c] | [1, r, c] => Ok((*r, *c)),
        _ => candle_core::bail!("decode step: an activation (rows, cols) expected, got {:?}", t.shape()),
    }
}

macro_rules! storage {
    ($t:expr, $s:ident, $l:ident) => {
        let (guard, $l) = $t.storage_and_layout();
        let Storage::Cuda($s) = &*guard else { candle_core::bail!("decode step: a CUDA tensor expected") };
    };
}

/// `x + y` (when `y` is given) and RMSNorm of it with weight `w` (f32): returns both, shaped
/// as `x`.
pub fn add_rms_norm(x: &Tensor, y: Option<&Tensor>, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    match x.dtype() {
        DType::BF16 => add_rms_norm_t::<half::bf16>(x, y, w, eps, "bf16"),
        DType::F32 => add_rms_norm_t::<f32>(x, y, w, eps, "f32"),
        other => candle_core::bail!("add-rms-norm: bf16 or f32 only, not {other:?}"),
    }
}

fn add_rms_norm_t<T: CudaDType + DeviceRepr>(
    x: &Tensor,
    y: Option<&Tensor>,
    w: &Tensor,
    eps: f32,
    suffix: &str,
) -> Result<(Tensor, Tensor)> {
    let (rows, cols) = rows_cols(x)?;
    if w.dims() != [cols] || w.dtype() != DType::F32 || y.is_some_and(|y| y.dims() != x.dims() || y.dtype() != x.dtype()) {
        candle_core::bail!("add-rms-norm: x {:?}, y {:?}, weight {:?} {:?}", x.shape(), y.map(Tensor::shape), w.shape(), w.dtype());
    }
    let (x, w, y) = (x.contiguous()?, w.contiguous()?, y.map(Tensor::contiguous).transpose()?);
    storage!(x, xs, xl);
    storage!(w, ws, wl);
    let dev = xs.device().clone();
    let (xv, _) = rows_view::<T>(xs, &x, xl, cols)?;
    let wv = view::<f32>(ws, wl, "add-rms-norm")?;
    let n = rows * cols;
    // SAFETY: the kernel writes every element of `h`, and of `xout` when `y` is given.
    let h = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(&format!("add_rms_norm_{suffix}"), DECODE.name, DECODE.code)?;
    let cols32 = cols as i32;
    let cfg = per_block(rows);
    let x_new = match &y {
        Some(y) => {
            storage!(y, ys, yl);
            let (yv, _) = rows_view::<T>(ys, y, yl, cols)?;
            // SAFETY: written by the kernel (see above).
            let xout = unsafe { dev.alloc::<T>(n)? };
            let mut b = func.builder();
            b.arg(&xv).arg(&yv).arg(&wv).arg(&xout).arg(&h).arg(&cols32).arg(&eps);
            if rows > 0 {
                // SAFETY: the arguments match `add_rms_norm`'s signature.
                unsafe { b.launch(cfg) }.w()?;
            }
            wrap(xout, &dev, x.dims())
        }
        None => {
            let null: u64 = 0;
            let mut b = func.builder();
            b.arg(&xv).arg(&null).arg(&wv).arg(&h).arg(&h).arg(&cols32).arg(&eps);
            if rows > 0 {
                // SAFETY: as above; a null `y` makes the kernel read `x` and never write `xout`.
                unsafe { b.launch(cfg) }.w()?;
            }
            x.clone()
        }
    };
    Ok((x_new, wrap(h, &dev, x.dims())))
}

/// The shapes of a step's attention: query heads, key/value heads, head dimension.
#[derive(Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads.
    pub kv_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
}

/// RoPE of `q` and `k` (rows, heads × head_dim and kv heads × head_dim, rows possibly
/// further apart) at each row's position, from the f32 tables `cos` and `sin` (positions,
/// head_dim / 2); `k` rotated and `v` stored into block `layer`'s caches of `step`. Returns
/// the rotated queries (1, rows, heads × head_dim).
#[allow(clippy::too_many_arguments)]
pub fn rope_store(q: &Tensor, k: &Tensor, v: &Tensor, cos: &Tensor, sin: &Tensor, step: &Step, layer: usize, h: Heads) -> Result<Tensor> {
    match q.dtype() {
        DType::BF16 => rope_store_t::<half::bf16>(q, k, v, cos, sin, step, layer, h, "bf16"),
        DType::F32 => rope_store_t::<f32>(q, k, v, cos, sin, step, layer, h, "f32"),
        other => candle_core::bail!("rope-store: bf16 or f32 only, not {other:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn rope_store_t<T: CudaDType + DeviceRepr>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    step: &Step,
    layer: usize,
    h: Heads,
    suffix: &str,
) -> Result<Tensor> {
    let half = h.head_dim / 2;
    if !h.head_dim.is_multiple_of(2) || cos.dims2()?.1 != half || sin.dims() != cos.dims() || cos.dtype() != DType::F32 {
        candle_core::bail!("rope-store: tables {:?} {:?} for head_dim {}", cos.shape(), cos.dtype(), h.head_dim);
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        candle_core::bail!("rope-store: q, k and v of one dtype");
    }
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    storage!(q, qs, ql);
    storage!(k, ks, kl);
    storage!(v, vs, vl);
    storage!(cos, cs, cl);
    storage!(sin, ss, sl);
    let (qv, ldq) = rows_view::<T>(qs, q, ql, h.heads * h.head_dim)?;
    let (kv, ldk) = rows_view::<T>(ks, k, kl, h.kv_heads * h.head_dim)?;
    let (vv, ldv) = rows_view::<T>(vs, v, vl, h.kv_heads * h.head_dim)?;
    let cv = view::<f32>(cs, cl, "rope-store")?;
    let sv = view::<f32>(ss, sl, "rope-store")?;
    let rows = rows_cols(q)?.0;
    if rows != step.n_rows || rows_cols(k)?.0 != rows || rows_cols(v)?.0 != rows {
        candle_core::bail!("rope-store: {rows} rows for a step of {}", step.n_rows);
    }
    let dev = qs.device().clone();
    let n = rows * h.heads * h.head_dim;
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(&format!("rope_store_{suffix}"), DECODE.name, DECODE.code)?;
    let caches = step.kv(layer)?;
    let (heads, kv_heads, hd) = (h.heads as i32, h.kv_heads as i32, h.head_dim as i32);
    let mut b = func.builder();
    b.arg(&qv).arg(&kv).arg(&vv).arg(&ldq).arg(&ldk).arg(&ldv).arg(&cv).arg(&sv).arg(&step.rows).arg(&step.caps).arg(&caches);
    b.arg(&out).arg(&heads).arg(&kv_heads).arg(&hd);
    if rows > 0 {
        // SAFETY: the arguments match `rope_store`'s signature; every row's position is within
        // its segment's capacity (the caller reserved it) and inside the tables.
        unsafe { b.launch(per_block(rows)) }.w()?;
    }
    Ok(wrap(out, &dev, &[1, rows, h.heads * h.head_dim]))
}

/// Attention of every row of `q` (rows, heads × head_dim, rotated) over its own sequence's
/// cached positions up to its own (causal), from block `layer`'s caches of `step`, scaled by
/// `scale`: (1, rows, heads × head_dim).
pub fn attend(q: &Tensor, step: &Step, layer: usize, h: Heads, scale: f32) -> Result<Tensor> {
    if !h.head_dim.is_multiple_of(32) || h.head_dim > MAX_HEAD_DIM || h.kv_heads == 0 || !h.heads.is_multiple_of(h.kv_heads) {
        candle_core::bail!("attend: head_dim {} (a multiple of 32 up to {MAX_HEAD_DIM}), heads {} / {}", h.head_dim, h.heads, h.kv_heads);
    }
    match q.dtype() {
        DType::BF16 => attend_t::<half::bf16>(q, step, layer, h, scale, "bf16"),
        DType::F32 => attend_t::<f32>(q, step, layer, h, scale, "f32"),
        other => candle_core::bail!("attend: bf16 or f32 only, not {other:?}"),
    }
}

fn attend_t<T: CudaDType + DeviceRepr>(q: &Tensor, step: &Step, layer: usize, h: Heads, scale: f32, suffix: &str) -> Result<Tensor> {
    let q = q.contiguous()?;
    storage!(q, qs, ql);
    let (qv, _) = rows_view::<T>(qs, &q, ql, h.heads * h.head_dim)?;
    let rows = rows_cols(&q)?.0;
    if rows != step.n_rows {
        candle_core::bail!("attend: {rows} rows for a step of {}", step.n_rows);
    }
    let dev = qs.device().clone();
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(rows * h.heads * h.head_dim)? };
    let func = dev.get_or_load_custom_func(&format!("attend_{suffix}"), DECODE.name, DECODE.code)?;
    let caches = step.kv(layer)?;
    let (heads, kv_heads, hd) = (h.heads as i32, h.kv_heads as i32, h.head_dim as i32);
    let mut b = func.builder();
    b.arg(&qv).arg(&step.rows).arg(&step.caps).arg(&caches).arg(&out).arg(&heads).arg(&kv_heads).arg(&hd).arg(&scale);
    if rows > 0 {
        let cfg = LaunchConfig { grid_dim: (h.heads as u32, rows as u32, 1), block_dim: (ATTEND_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match `attend`'s signature; each row's cache holds its positions
        // up to its own (written by `rope_store` of this step or earlier ones).
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(wrap(out, &dev, &[1, rows, h.heads * h.head_dim]))
}

/// `silu(g) · u` of `g` and `u` (rows, cols; rows possibly further apart, as the halves of
/// one product): (1, rows, cols).
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    match g.dtype() {
        DType::BF16 => silu_mul_t::<half::bf16>(g, u, "bf16"),
        DType::F32 => silu_mul_t::<f32>(g, u, "f32"),
        other => candle_core::bail!("silu-mul: bf16 or f32 only, not {other:?}"),
    }
}

fn silu_mul_t<T: CudaDType + DeviceRepr>(g: &Tensor, u: &Tensor, suffix: &str) -> Result<Tensor> {
    let (rows, cols) = rows_cols(g)?;
    if rows_cols(u)? != (rows, cols) || u.dtype() != g.dtype() {
        candle_core::bail!("silu-mul: gate {:?} and up {:?}", g.shape(), u.shape());
    }
    storage!(g, gs, gl);
    storage!(u, us, ul);
    let (gv, ldg) = rows_view::<T>(gs, g, gl, cols)?;
    let (uv, ldu) = rows_view::<T>(us, u, ul, cols)?;
    let dev = gs.device().clone();
    let n = rows * cols;
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(&format!("silu_mul_{suffix}"), DECODE.name, DECODE.code)?;
    let (rows32, cols32) = (rows as i32, cols as i32);
    let mut b = func.builder();
    b.arg(&gv).arg(&uv).arg(&ldg).arg(&ldu).arg(&out).arg(&rows32).arg(&cols32);
    if n > 0 {
        // SAFETY: the arguments match `silu_mul`'s signature.
        unsafe { b.launch(grid_stride(n)) }.w()?;
    }
    Ok(wrap(out, &dev, &[1, rows, cols]))
}
