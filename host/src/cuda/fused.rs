//! The training pass's fused CUDA kernels (`fused.cu`, compiled to PTX by build.rs under the
//! `cuda` feature): RMSNorm's backward, attention's causal softmax and score gradient, SwiGLU
//! forward and backward, RoPE with the heads' transpose, AdamW's update in place, LoRA
//! dropout's seeded masks, the heads' transpose as a row copy, the every-position
//! cross-entropy's rows forward and backward; and a product added into an
//! existing tensor by cuBLAS (beta = 1). `model::ops` calls them on CUDA tensors and keeps
//! candle's composed ops elsewhere, as the trainer does for AdamW and dropout; each runs
//! without gradients (its callers attach the backward).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaStorage, DType, Layout, Result, Shape, Tensor};

use super::{BLOCK, FUSED, grid_stride, per_block};

/// How a kernel's threads cover its input.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// A grid-stride loop over the elements.
    No,
    /// One block per row of `cols`.
    PerBlock,
    /// One warp per row of `cols`, `BLOCK / 32` rows a block.
    PerWarp,
}

/// One kernel launch over up to three inputs of one dtype (see `fused.cu`'s signature).
struct Kernel {
    name: &'static str,
    rows: Rows,
    cols: usize,
    float: f32,
    /// Elements written, as a multiple of the first input's.
    out_factor: usize,
    out_shape: Shape,
}

pub(super) fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, kernel: &str) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{kernel}: input not contiguous") };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

impl Kernel {
    fn run(&self, ins: &[(&CudaStorage, &Layout)]) -> Result<(CudaStorage, Shape)> {
        let Some(&(first, layout)) = ins.first() else { candle_core::bail!("{}: no input", self.name) };
        let n = layout.shape().elem_count();
        for (s, l) in ins {
            // a row kernel's weight has one row's elements
            let size_ok = l.shape().elem_count() == n || self.rows != Rows::No && l.shape().elem_count() == self.cols;
            if s.dtype() != first.dtype() || !size_ok {
                candle_core::bail!("{}: inputs of different dtypes or sizes", self.name);
            }
        }
        let out = match first.dtype() {
            DType::BF16 => self.launch::<half::bf16>(ins, n, "bf16")?,
            DType::F32 => self.launch::<f32>(ins, n, "f32")?,
            other => candle_core::bail!("{}: bf16 or f32 only, not {other:?}", self.name),
        };
        Ok((out, self.out_shape.clone()))
    }

    fn launch<T: CudaDType + DeviceRepr>(&self, ins: &[(&CudaStorage, &Layout)], n: usize, suffix: &str) -> Result<CudaStorage> {
        let dev = ins[0].0.device().clone();
        let views: Vec<CudaView<'_, T>> = ins.iter().map(|(s, l)| view::<T>(s, l, self.name)).collect::<Result<_>>()?;
        let func = dev.get_or_load_custom_func(&format!("{}_{suffix}", self.name), FUSED.name, FUSED.code)?;
        let len = n * self.out_factor;
        // SAFETY: every kernel writes all `len` elements.
        let out = unsafe { dev.alloc::<T>(len)? };
        if n == 0 {
            return Ok(CudaStorage::wrap_cuda_slice(out, dev));
        }
        let rows = n / self.cols.max(1);
        let (count, cfg) = match self.rows {
            Rows::No => (n, grid_stride(n)),
            Rows::PerBlock => (rows, per_block(rows)),
            Rows::PerWarp => (rows, per_block(rows.div_ceil(BLOCK as usize / 32))),
        };
        let (a, b, c) = (&views[0], views.get(1).unwrap_or(&views[0]), views.get(2).unwrap_or(&views[0]));
        let cols = self.cols as i32;
        let mut builder = func.builder();
        builder.arg(a).arg(b).arg(c).arg(&out).arg(&count).arg(&cols).arg(&self.float);
        // SAFETY: the argument list matches the kernels' common signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

impl candle_core::CustomOp1 for Kernel {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: a CUDA kernel", self.name)
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        self.run(&[(s, l)])
    }
}

impl candle_core::CustomOp2 for Kernel {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: a CUDA kernel", self.name)
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        self.run(&[(s1, l1), (s2, l2)])
    }
}

impl candle_core::CustomOp3 for Kernel {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: a CUDA kernel", self.name)
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}

fn row_kernel(name: &'static str, rows: Rows, like: &Tensor, float: f32) -> Result<Kernel> {
    Ok(Kernel { name, rows, cols: like.dim(candle_core::D::Minus1)?, float, out_factor: 1, out_shape: like.shape().clone() })
}

/// RMSNorm's input gradient for input `x`, weight `w` (in `x`'s dtype) and output gradient `g`.
pub fn rms_norm_bwd(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    let k = row_kernel("rms_norm_bwd", Rows::PerBlock, x, eps as f32)?;
    x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &g.contiguous()?, &k)
}

/// Causal softmax of raw scores `s` (…, t, t), scaled by `scale` first.
pub fn softmax_causal(s: &Tensor, scale: f64) -> Result<Tensor> {
    s.contiguous()?.apply_op1_no_bwd(&row_kernel("softmax_causal", Rows::PerWarp, s, scale as f32)?)
}

/// [`softmax_causal`] of packed rows: `s` (b, …, t, t) with `per_batch` rows of scores per
/// batch row, `pos` (b, t) u32 each token's position in its own example; query i sees columns
/// i − pos ..= i only (never another example's).
pub fn softmax_packed(s: &Tensor, pos: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, t) = pos.dims2()?;
    let dims = s.dims();
    if dims.first() != Some(&b) || dims.last() != Some(&t) || pos.dtype() != DType::U32 {
        candle_core::bail!("softmax-packed: scores {:?} against positions {:?} {:?}", s.shape(), pos.shape(), pos.dtype());
    }
    let per_batch = s.elem_count() / (b * t);
    s.contiguous()?.apply_op2_no_bwd(&pos.contiguous()?, &SoftmaxPacked { t, per_batch, scale: scale as f32 })
}

/// The launch of `softmax_packed_*` (scores in bf16 or f32, positions in u32).
struct SoftmaxPacked {
    t: usize,
    per_batch: usize,
    scale: f32,
}

impl candle_core::CustomOp2 for SoftmaxPacked {
    fn name(&self) -> &'static str {
        "softmax-packed"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("softmax-packed: a CUDA kernel")
    }

    fn cuda_fwd(&self, s: &CudaStorage, ls: &Layout, pos: &CudaStorage, lp: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = match s.dtype() {
            DType::BF16 => self.launch::<half::bf16>(s, ls, pos, lp, "bf16")?,
            DType::F32 => self.launch::<f32>(s, ls, pos, lp, "f32")?,
            other => candle_core::bail!("softmax-packed: bf16 or f32 only, not {other:?}"),
        };
        Ok((out, ls.shape().clone()))
    }
}

impl SoftmaxPacked {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        s: &CudaStorage,
        ls: &Layout,
        pos: &CudaStorage,
        lp: &Layout,
        suffix: &str,
    ) -> Result<CudaStorage> {
        let (sv, pv) = (view::<T>(s, ls, "softmax-packed")?, view::<u32>(pos, lp, "softmax-packed")?);
        let dev = s.device().clone();
        let func = dev.get_or_load_custom_func(&format!("softmax_packed_{suffix}"), FUSED.name, FUSED.code)?;
        let n = sv.len();
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(n)? };
        let rows = n / self.t;
        let cfg = per_block(rows.div_ceil(BLOCK as usize / 32));
        let (cols, per_batch) = (self.t as i32, self.per_batch as u64);
        let mut builder = func.builder();
        builder.arg(&sv).arg(&pv).arg(&out).arg(&rows).arg(&cols).arg(&per_batch).arg(&self.scale);
        // SAFETY: the argument list matches `softmax_packed`'s signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

/// Attention's score gradient (scaled by `scale`) from the probabilities `p` and `dp = dy·vᵀ`.
pub fn attention_ds(p: &Tensor, dp: &Tensor, scale: f64) -> Result<Tensor> {
    p.contiguous()?.apply_op2_no_bwd(&dp.contiguous()?, &row_kernel("attention_ds", Rows::PerWarp, p, scale as f32)?)
}

/// `silu(g) · u`.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    let k = Kernel { name: "swiglu", rows: Rows::No, cols: 0, float: 0.0, out_factor: 1, out_shape: g.shape().clone() };
    g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &k)
}

/// SwiGLU's gradients `(dg, du)` for output gradient `dh`.
pub fn swiglu_bwd(g: &Tensor, u: &Tensor, dh: &Tensor) -> Result<(Tensor, Tensor)> {
    let k = Kernel { name: "swiglu_bwd", rows: Rows::No, cols: 0, float: 0.0, out_factor: 2, out_shape: Shape::from(g.elem_count() * 2) };
    let both = g.contiguous()?.apply_op3_no_bwd(&u.contiguous()?, &dh.contiguous()?, &k)?;
    let n = g.elem_count();
    Ok((both.narrow(0, 0, n)?.reshape(g.shape())?, both.narrow(0, n, n)?.reshape(g.shape())?))
}

/// RoPE with the heads' transpose (`rope_heads` in `fused.cu`): forward (b, t, h, d) →
/// (b, h, t, d), backward the other way with the rotation transposed.
struct RopeHeads {
    dims: (usize, usize, usize, usize),
    backward: bool,
}

impl candle_core::CustomOp3 for RopeHeads {
    fn name(&self) -> &'static str {
        "rope-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("rope-heads: a CUDA kernel")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        cos: &CudaStorage,
        lc: &Layout,
        sin: &CudaStorage,
        ls: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = match x.dtype() {
            DType::BF16 => self.launch::<half::bf16>([(x, lx), (cos, lc), (sin, ls)], "bf16")?,
            DType::F32 => self.launch::<f32>([(x, lx), (cos, lc), (sin, ls)], "f32")?,
            other => candle_core::bail!("rope-heads: bf16 or f32 only, not {other:?}"),
        };
        let (b, t, h, d) = self.dims;
        Ok((out, if self.backward { Shape::from((b, t, h, d)) } else { Shape::from((b, h, t, d)) }))
    }
}

impl RopeHeads {
    fn launch<T: CudaDType + DeviceRepr>(&self, ins: [(&CudaStorage, &Layout); 3], suffix: &str) -> Result<CudaStorage> {
        let (b, t, h, d) = self.dims;
        let [x, cos, sin] = ins;
        let (xv, cv, sv) =
            (view::<T>(x.0, x.1, "rope-heads")?, view::<T>(cos.0, cos.1, "rope-heads")?, view::<T>(sin.0, sin.1, "rope-heads")?);
        // cos and sin per position (t, d/2), or per row and position (b, t, d/2)
        let batched = b > 1 && cv.len() == b * t * d / 2;
        if xv.len() != b * t * h * d || cv.len() < t * d / 2 || sv.len() != cv.len() {
            candle_core::bail!("rope-heads: sizes do not match ({b}, {t}, {h}, {d})");
        }
        let dev = x.0.device().clone();
        let func = dev.get_or_load_custom_func(&format!("rope_heads_{suffix}"), FUSED.name, FUSED.code)?;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(b * t * h * d)? };
        let pairs = b * t * h * d / 2;
        let cfg = grid_stride(pairs);
        let (ti, hi, di, back, batched) = (t as i32, h as i32, d as i32, i32::from(self.backward), i32::from(batched));
        let mut builder = func.builder();
        builder.arg(&xv).arg(&cv).arg(&sv).arg(&out).arg(&pairs).arg(&ti).arg(&hi).arg(&di).arg(&back).arg(&batched);
        // SAFETY: the argument list matches `rope_heads`'s signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

/// RoPE of `x` (b, t, h, d), written as (b, h, t, d); `cos`, `sin` (t, d/2), or (b, t, d/2)
/// for packed rows, in `x`'s dtype.
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dims = x.dims4()?;
    x.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &RopeHeads { dims, backward: false })
}

/// RoPE's input gradient (b, t, h, d) from the output gradient `g` (b, h, t, d).
pub fn rope_heads_bwd(g: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = g.dims4()?;
    g.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &RopeHeads { dims: (b, t, h, d), backward: true })
}

/// `c += a · b` in place by one cuBLAS product with beta = 1, for `c` (m, n) and `a` (m, k)
/// contiguous and `b` (k, n) contiguous or the transpose of a contiguous (n, k): no separate
/// product output and element-wise add.
struct MatmulAdd;

impl candle_core::InplaceOp3 for MatmulAdd {
    fn name(&self) -> &'static str {
        "matmul-add"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("matmul-add: a CUDA product")
    }

    fn cuda_fwd(&self, c: &mut CudaStorage, lc: &Layout, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout) -> Result<()> {
        match c.dtype() {
            DType::BF16 => matmul_add_t::<half::bf16>(c, lc, a, la, b, lb, half::bf16::ONE),
            DType::F32 => matmul_add_t::<f32>(c, lc, a, la, b, lb, 1.0),
            other => candle_core::bail!("matmul-add: bf16 or f32 only, not {other:?}"),
        }
    }
}

fn matmul_add_t<T>(c: &mut CudaStorage, lc: &Layout, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout, one: T) -> Result<()>
where
    T: CudaDType + DeviceRepr + Copy,
    candle_core::cuda_backend::cudarc::cublas::CudaBlas: candle_core::cuda_backend::cudarc::cublas::Gemm<T>,
{
    use candle_core::cuda_backend::cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t as Op};
    let ((m, n), (m2, k)) = (lc.shape().dims2()?, la.shape().dims2()?);
    let (k2, n2) = lb.shape().dims2()?;
    if m != m2 || k != k2 || n != n2 {
        candle_core::bail!("matmul-add: ({m}, {n}) += ({m2}, {k}) x ({k2}, {n2})");
    }
    // b's memory: (k, n) row-major, or (n, k) row-major seen transposed
    let transposed = lb.stride() == [1, k];
    if !transposed && lb.stride() != [n, 1] {
        candle_core::bail!("matmul-add: b is neither contiguous nor a transposed contiguous matrix");
    }
    let (Some((cs, ce)), Some((as_, ae))) = (lc.contiguous_offsets(), la.contiguous_offsets()) else {
        candle_core::bail!("matmul-add: c and a must be contiguous")
    };
    let bs = lb.start_offset();
    let blas = a.device().cublas_handle();
    let (av, bv) = (a.as_cuda_slice::<T>()?.slice(as_..ae), b.as_cuda_slice::<T>()?.slice(bs..bs + k * n));
    let mut cv = c.as_cuda_slice_mut::<T>()?.slice_mut(cs..ce);
    // column-major: cᵀ (n, m) += op(b)ᵀ-side (n, k) · aᵀ (k, m)
    let cfg = GemmConfig {
        transa: if transposed { Op::CUBLAS_OP_T } else { Op::CUBLAS_OP_N },
        transb: Op::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: one,
        lda: if transposed { k as i32 } else { n as i32 },
        ldb: k as i32,
        beta: one,
        ldc: n as i32,
    };
    // SAFETY: the shapes and leading dimensions above describe the three buffers.
    unsafe { blas.gemm(cfg, &bv, &av, &mut cv) }.w()?;
    Ok(())
}

/// `c + a · b` written into `c` (which no other tensor may share), on CUDA.
pub fn matmul_add(c: Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let b = if b.is_contiguous() || b.t()?.is_contiguous() { b.clone() } else { b.contiguous()? };
    c.inplace_op3(&a.contiguous()?, &b, &MatmulAdd)?;
    Ok(c)
}

/// AdamW's kernel (`adamw` in `fused.cu`) on an f32 parameter (the op's destination), its two
/// moments (the op's other operands, which the kernel also updates) and the gradient `g`.
struct AdamwKernel {
    g: Tensor,
    /// β₁, 1 − β₁, β₂, 1 − β₂, decay, lr_c1, inv_c2, eps.
    floats: [f32; 8],
}

impl candle_core::InplaceOp3 for AdamwKernel {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("adamw: a CUDA kernel")
    }

    fn cuda_fwd(&self, p: &mut CudaStorage, lp: &Layout, m: &CudaStorage, lm: &Layout, v: &CudaStorage, lv: &Layout) -> Result<()> {
        let Some((start, end)) = lp.contiguous_offsets() else { candle_core::bail!("adamw: parameter not contiguous") };
        let (gs, lg) = self.g.storage_and_layout();
        let candle_core::Storage::Cuda(gs) = &*gs else { candle_core::bail!("adamw: the gradient is not on the GPU") };
        let (m, v, g) = (view::<f32>(m, lm, "adamw")?, view::<f32>(v, lv, "adamw")?, view::<f32>(gs, lg, "adamw")?);
        let n = end - start;
        if [m.len(), v.len(), g.len()].iter().any(|&len| len != n) {
            candle_core::bail!("adamw: tensors of different sizes");
        }
        let dev = p.device().clone();
        let func = dev.get_or_load_custom_func("adamw", FUSED.name, FUSED.code)?;
        let mut out = p.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
        let mut builder = func.builder();
        builder.arg(&mut out).arg(&m).arg(&v).arg(&g).arg(&n);
        for f in &self.floats {
            builder.arg(f);
        }
        // SAFETY: the argument list matches the kernel's signature. The kernel also writes the
        // moments through their views: `adamw_step`'s callers own them (no other tensor shares
        // their storage), and candle runs every kernel on one stream, so nothing reads them
        // while it runs.
        unsafe { builder.launch(grid_stride(n)) }.w()?;
        Ok(())
    }
}

/// One AdamW step in place on an f32 parameter `p` and its moments `m`, `v` (tensors no one
/// else may share) for gradient `g`: one kernel instead of about fifteen element-wise ops.
/// `decay` = 1 − lr·weight_decay, `lr_c1` = lr / (1 − β₁ᵗ), `inv_c2` = 1 / (1 − β₂ᵗ).
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    p: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    betas: (f64, f64),
    decay: f64,
    lr_c1: f64,
    inv_c2: f64,
    eps: f64,
) -> Result<()> {
    let floats = [betas.0, 1.0 - betas.0, betas.1, 1.0 - betas.1, decay, lr_c1, inv_c2, eps].map(|f| f as f32);
    p.inplace_op3(m, v, &AdamwKernel { g: g.contiguous()?, floats })
}

/// LoRA dropout's keep mask (`dropout_mask` in `fused.cu`): u8, shaped like its input, whose
/// values it does not read.
struct DropoutMask {
    seed: u64,
    p: f32,
}

impl candle_core::CustomOp1 for DropoutMask {
    fn name(&self) -> &'static str {
        "dropout_mask"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("dropout_mask: a CUDA kernel")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = s.device().clone();
        let n = l.shape().elem_count();
        // SAFETY: the kernel writes all `n` elements.
        let out = unsafe { dev.alloc::<u8>(n)? };
        if n > 0 {
            let func = dev.get_or_load_custom_func("dropout_mask", FUSED.name, FUSED.code)?;
            let mut builder = func.builder();
            builder.arg(&out).arg(&n).arg(&self.seed).arg(&self.p);
            // SAFETY: the argument list matches the kernel's signature.
            unsafe { builder.launch(grid_stride(n)) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
    }
}

/// The keep mask (1 where an element is kept, u8) of dropout with probability `p` for a tensor
/// shaped like `x`, drawn from `seed` as the CPU draws it element by element.
pub fn dropout_mask(x: &Tensor, seed: u64, p: f32) -> Result<Tensor> {
    x.apply_op1_no_bwd(&DropoutMask { seed, p })
}

/// Dims 1 and 2 of a (b, n1, n2, d) tensor swapped into a new contiguous tensor (`swap12_*` in
/// `fused.cu`): a copy by rows of d, 16 bytes a thread where the rows allow.
struct Swap12;

impl Swap12 {
    fn launch<T: CudaDType + DeviceRepr>(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, n1, n2, d) = l.shape().dims4()?;
        let input = view::<T>(s, l, "swap12")?;
        let dev = s.device().clone();
        let n = input.len();
        // SAFETY: the kernel writes all `n` elements.
        let out = unsafe { dev.alloc::<T>(n)? };
        let size = std::mem::size_of::<T>();
        let aligned = (l.start_offset() * size).is_multiple_of(16) && (d * size).is_multiple_of(16);
        let word = if aligned { 16 } else { size };
        if n > 0 {
            let func = dev.get_or_load_custom_func(&format!("swap12_{word}"), FUSED.name, FUSED.code)?;
            let (words, rows1, rows2, w) = (n * size / word, n1 as i32, n2 as i32, (d * size / word) as i32);
            let mut builder = func.builder();
            builder.arg(&input).arg(&out).arg(&words).arg(&rows1).arg(&rows2).arg(&w);
            // SAFETY: the argument list matches the kernels' signature; `word` divides the rows.
            unsafe { builder.launch(grid_stride(words)) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((b, n2, n1, d))))
    }
}

impl candle_core::CustomOp1 for Swap12 {
    fn name(&self) -> &'static str {
        "swap12"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("swap12: a CUDA kernel")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::BF16 => Self::launch::<half::bf16>(s, l),
            DType::F32 => Self::launch::<f32>(s, l),
            other => candle_core::bail!("swap12: bf16 or f32 only, not {other:?}"),
        }
    }
}

/// `x` (b, n1, n2, d) as (b, n2, n1, d), contiguous.
pub fn swap12(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Swap12)
}

/// The cross-entropy's forward rows (`xent_rows` in `fused.cu`): logits (rows, cols) and u32
/// targets (rows) → f32 (2·rows), each row's log-sum-exp, then each row's loss.
struct XentRows;

impl XentRows {
    fn launch<T: CudaDType + DeviceRepr>(l: &CudaStorage, ll: &Layout, t: &CudaStorage, lt: &Layout, suffix: &str) -> Result<CudaStorage> {
        let (rows, cols) = ll.shape().dims2()?;
        let (lv, tv) = (view::<T>(l, ll, "xent-rows")?, view::<u32>(t, lt, "xent-rows")?);
        if tv.len() != rows {
            candle_core::bail!("xent-rows: {} targets for {rows} rows", tv.len());
        }
        let dev = l.device().clone();
        // SAFETY: the kernel writes all 2·rows values.
        let out = unsafe { dev.alloc::<f32>(2 * rows)? };
        if rows > 0 {
            let func = dev.get_or_load_custom_func(&format!("xent_rows_{suffix}"), FUSED.name, FUSED.code)?;
            let (r, c) = (rows as i32, cols as i32);
            let mut builder = func.builder();
            builder.arg(&lv).arg(&tv).arg(&out).arg(&r).arg(&c);
            // SAFETY: the argument list matches `xent_rows`'s signature.
            unsafe { builder.launch(per_block(rows)) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

impl candle_core::CustomOp2 for XentRows {
    fn name(&self) -> &'static str {
        "xent-rows"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("xent-rows: a CUDA kernel")
    }

    fn cuda_fwd(&self, l: &CudaStorage, ll: &Layout, t: &CudaStorage, lt: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = match l.dtype() {
            DType::BF16 => Self::launch::<half::bf16>(l, ll, t, lt, "bf16")?,
            DType::F32 => Self::launch::<f32>(l, ll, t, lt, "f32")?,
            other => candle_core::bail!("xent-rows: bf16 or f32 only, not {other:?}"),
        };
        Ok((out, Shape::from(2 * ll.shape().dims2()?.0)))
    }
}

/// Each row's log-sum-exp and loss (`lse − logit[target]`, f32) of logits `l` (rows, vocab)
/// for u32 `targets` (rows).
pub fn xent_rows(l: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let rows = l.dim(0)?;
    let both = l.contiguous()?.apply_op2_no_bwd(&targets.contiguous()?, &XentRows)?;
    Ok((both.narrow(0, 0, rows)?, both.narrow(0, rows, rows)?))
}

/// The cross-entropy's backward rows (`xent_grad` in `fused.cu`), in place over the logits
/// (the destination), with the targets and the forward's log-sum-exp as the other operands
/// and the loss's gradient `g` (one f32, read on the device).
struct XentGrad {
    g: Tensor,
    inv_n: f32,
}

impl XentGrad {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        l: &mut CudaStorage,
        ll: &Layout,
        t: &CudaStorage,
        lt: &Layout,
        lse: &CudaStorage,
        ls: &Layout,
        suffix: &str,
    ) -> Result<()> {
        let (rows, cols) = ll.shape().dims2()?;
        let Some((start, end)) = ll.contiguous_offsets() else { candle_core::bail!("xent-grad: logits not contiguous") };
        let (tv, sv) = (view::<u32>(t, lt, "xent-grad")?, view::<f32>(lse, ls, "xent-grad")?);
        let (gs, lg) = self.g.storage_and_layout();
        let candle_core::Storage::Cuda(gs) = &*gs else { candle_core::bail!("xent-grad: the loss gradient is not on the GPU") };
        let gv = view::<f32>(gs, lg, "xent-grad")?;
        if tv.len() != rows || sv.len() != rows || gv.len() != 1 {
            candle_core::bail!("xent-grad: {} targets, {} log-sum-exps, {} gradients for {rows} rows", tv.len(), sv.len(), gv.len());
        }
        if rows == 0 {
            return Ok(());
        }
        let dev = l.device().clone();
        let func = dev.get_or_load_custom_func(&format!("xent_grad_{suffix}"), FUSED.name, FUSED.code)?;
        let mut lv = l.as_cuda_slice_mut::<T>()?.slice_mut(start..end);
        let c = cols as i32;
        let mut builder = func.builder();
        builder.arg(&mut lv).arg(&tv).arg(&sv).arg(&gv).arg(&c).arg(&self.inv_n);
        // SAFETY: the argument list matches `xent_grad`'s signature.
        unsafe { builder.launch(per_block(rows)) }.w()?;
        Ok(())
    }
}

impl candle_core::InplaceOp3 for XentGrad {
    fn name(&self) -> &'static str {
        "xent-grad"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("xent-grad: a CUDA kernel")
    }

    fn cuda_fwd(&self, l: &mut CudaStorage, ll: &Layout, t: &CudaStorage, lt: &Layout, lse: &CudaStorage, ls: &Layout) -> Result<()> {
        match l.dtype() {
            DType::BF16 => self.launch::<half::bf16>(l, ll, t, lt, lse, ls, "bf16"),
            DType::F32 => self.launch::<f32>(l, ll, t, lt, lse, ls, "f32"),
            other => candle_core::bail!("xent-grad: bf16 or f32 only, not {other:?}"),
        }
    }
}

/// The logits `l` (rows, vocab; a fresh tensor no other shares) turned in place into the
/// gradient of the mean loss: `(softmax − onehot(target)) · g / n`, with each row's
/// log-sum-exp `lse` from [`xent_rows`] and `g` the loss's gradient (one f32 on the device).
pub fn xent_grad(l: Tensor, targets: &Tensor, lse: &Tensor, g: &Tensor, n: usize) -> Result<Tensor> {
    l.inplace_op3(
        &targets.contiguous()?,
        &lse.contiguous()?,
        &XentGrad { g: g.to_dtype(DType::F32)?.flatten_all()?.contiguous()?, inv_n: 1.0 / n as f32 },
    )?;
    Ok(l)
}
