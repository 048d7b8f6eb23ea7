//! Matrix products on Intel AMX tiles (x86-64 Linux with AMX-BF16 and AVX512-BF16, as on
//! Sapphire Rapids and later): a weight packed once into the tiles' bf16 layout, activations
//! rounded to bf16 per call, products accumulated in f32. On 2 cores this multiplies a
//! 256-row prompt 5-8x faster than the f32 product (500-800 GFLOPS against about 100).
//!
//! The instructions are written as inline assembly (the AMX intrinsics are not stable in
//! Rust); the process asks the kernel for the tile state once (`arch_prctl`). Where any of
//! this is missing, or `MEDTUNE_AMX=0`, the same packed weight goes through AVX512-BF16
//! vector products where the CPU has them ([`super::dpbf16`]); [`available`] says whether
//! either runs.

use std::sync::OnceLock;

use candle_core::{Device, Result, Tensor};

/// The instructions a [`TileWeight`]'s products run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Products {
    /// AMX tiles (`tdpbf16ps`).
    Tiles,
    /// AVX512-BF16 vectors (`vdpbf16ps`).
    Vectors,
}

/// Which products this machine and process run (asked once), if any.
pub fn products() -> Option<Products> {
    static PRODUCTS: OnceLock<Option<Products>> = OnceLock::new();
    *PRODUCTS.get_or_init(|| {
        if std::env::var("MEDTUNE_AMX").map_or(true, |v| v != "0") && imp::enable() {
            Some(Products::Tiles)
        } else if super::dpbf16::available() {
            Some(Products::Vectors)
        } else {
            None
        }
    })
}

/// Whether [`TileWeight`]'s products run here (on tiles or vectors).
pub fn available() -> bool {
    products().is_some()
}

/// A weight `W` (out, in) packed for `x Wᵀ` on tiles: blocks of 16 outputs × 32 inputs, each
/// a tile of 16 rows (input pairs) × 16 columns (outputs) × 2 bf16; both sizes padded with
/// zeros to multiples of 32.
#[derive(Debug)]
pub struct TileWeight {
    packed: Vec<u16>,
    out: usize,
    inputs: usize,
    out_pad: usize,
    in_pad: usize,
}

/// bf16 bits of `x`, rounded to nearest even.
pub(super) fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

impl TileWeight {
    /// Packs `w` (out, in), any float dtype, on the CPU.
    pub fn pack(w: &Tensor) -> Result<Self> {
        let (out, inputs) = w.dims2()?;
        let rows = w.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let (out_pad, in_pad) = (out.div_ceil(32) * 32, inputs.div_ceil(32) * 32);
        let k_blocks = in_pad / 32;
        let mut packed = vec![0u16; out_pad * in_pad];
        for (o, row) in rows.iter().enumerate() {
            let (nb, c) = (o / 16, o % 16);
            for (i, &v) in row.iter().enumerate() {
                let (kb, r, j) = (i / 32, (i % 32) / 2, i % 2);
                packed[((nb * k_blocks + kb) * 16 + r) * 32 + c * 2 + j] = bf16(v);
            }
        }
        Ok(Self { packed, out, inputs, out_pad, in_pad })
    }

    /// The first `rows` rows of `c` (rows of `out_pad`), each cut to the weight's outputs.
    fn unpad(&self, mut c: Vec<f32>, rows: usize) -> Vec<f32> {
        if self.out_pad == self.out {
            c.truncate(rows * self.out);
            return c;
        }
        c.chunks(self.out_pad).take(rows).flat_map(|r| r[..self.out].iter().copied()).collect()
    }

    /// The number of outputs.
    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// The number of inputs.
    pub fn in_dim(&self) -> usize {
        self.inputs
    }

    /// `x Wᵀ` for `x` (..., in), f32 on the CPU; f32 out. Only when [`available`].
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let Some(products) = products() else {
            candle_core::bail!("bf16 products (AMX or AVX512-BF16) are not available in this process");
        };
        self.matmul_on(x, products)
    }

    /// [`TileWeight::matmul`] of weights that share the input `x` (q, k and v; gate and up),
    /// in order: on vectors, `x` is rounded once and one parallel loop runs them all.
    pub fn matmul_shared(weights: &[&TileWeight], x: &Tensor) -> Result<Vec<Tensor>> {
        let Some(products) = products() else {
            candle_core::bail!("bf16 products (AMX or AVX512-BF16) are not available in this process");
        };
        let first = match weights {
            [first, rest @ ..] if products == Products::Vectors && rest.iter().all(|w| w.inputs == first.inputs) => first,
            _ => return weights.iter().map(|w| w.matmul_on(x, products)).collect(),
        };
        let (dims, rows, x) = first.rows_of(x)?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
            candle_core::bail!("tile product: the input is not f32 on the CPU");
        };
        let start = layout.start_offset();
        let packed: Vec<(&[u16], usize)> = weights.iter().map(|w| (w.packed.as_slice(), w.out_pad)).collect();
        let ys = super::dpbf16::products(&values[start..start + rows * first.inputs], rows, first.inputs, first.in_pad, &packed);
        ys.into_iter().zip(weights).map(|(y, w)| w.shaped(y, rows, &dims)).collect()
    }

    /// `x` (..., in) checked against the weight: its dimensions, its rows, and itself as
    /// contiguous f32.
    fn rows_of(&self, x: &Tensor) -> Result<(Vec<usize>, usize, Tensor)> {
        let dims = x.dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width != self.inputs {
            candle_core::bail!("tile product: {width} inputs for a weight of {}", self.inputs);
        }
        let rows = x.elem_count() / width.max(1);
        Ok((dims, rows, x.to_dtype(candle_core::DType::F32)?.contiguous()?))
    }

    /// The product `y` (rows of `out_pad`) as a tensor of `dims` with the weight's outputs last.
    fn shaped(&self, y: Vec<f32>, rows: usize, dims: &[usize]) -> Result<Tensor> {
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = self.out;
        }
        Tensor::from_vec(self.unpad(y, rows), out, &Device::Cpu)
    }

    /// [`TileWeight::matmul`] on `products`, which the CPU must have.
    fn matmul_on(&self, x: &Tensor, products: Products) -> Result<Tensor> {
        let (dims, rows, x) = self.rows_of(x)?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
            candle_core::bail!("tile product: the input is not f32 on the CPU");
        };
        let start = layout.start_offset();
        let x = &values[start..start + rows * self.inputs];
        let y = match products {
            Products::Tiles => imp::product(x, rows, self),
            Products::Vectors => super::dpbf16::products(x, rows, self.inputs, self.in_pad, &[(&self.packed, self.out_pad)]).swap_remove(0),
        };
        self.shaped(y, rows, &dims)
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;

    use rayon::prelude::*;

    use super::TileWeight;

    /// Asks for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`) when
    /// the CPU has AMX-TILE, AMX-BF16 and AVX512-BF16.
    pub fn enable() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        let leaf7_1 = __cpuid_count(7, 1);
        let amx = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        let avx512_bf16 = leaf7_1.eax & (1 << 5) != 0 && leaf7.ebx & (1 << 16) != 0;
        if !(amx && avx512_bf16) {
            return false;
        }
        let ret: i64;
        // SAFETY: the arch_prctl system call (158) with ARCH_REQ_XCOMP_PERM (0x1023) and
        // XFEATURE_XTILEDATA (18) only changes this process's permitted register state.
        unsafe {
            asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023i64, in("rsi") 18i64,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// Rounds up to 16 rows of `inputs` f32 to bf16 into one block of A's tiles: for each
    /// 32 inputs, a tile of 16 rows × 32 bf16 (`dst`: `in_pad / 32` tiles, zeroed), 32 values
    /// per instruction.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 ([`enable`] said so); `dst` is at least `in_pad / 32 * 512`
    /// long for `in_pad >= inputs`.
    #[target_feature(enable = "avx512f")]
    unsafe fn round_block(src: &[f32], inputs: usize, dst: &mut [u16]) {
        for (i, row) in src.chunks_exact(inputs).enumerate() {
            for (kb, chunk) in row.chunks(32).enumerate() {
                let at = kb * 512 + i * 32;
                if chunk.len() == 32 {
                    // SAFETY: 32 values in, 32 out, inside `dst` (at + 32 <= in_pad / 32 * 512)
                    unsafe {
                        asm!("vmovups zmm0, [{s}]", "vmovups zmm1, [{s} + 64]", "vcvtne2ps2bf16 zmm2, zmm1, zmm0", "vmovups [{d}], zmm2",
                             s = in(reg) chunk.as_ptr(), d = in(reg) dst.as_mut_ptr().add(at),
                             out("zmm0") _, out("zmm1") _, out("zmm2") _, options(nostack));
                    }
                } else {
                    for (j, &v) in chunk.iter().enumerate() {
                        dst[at + j] = super::bf16(v);
                    }
                }
            }
        }
    }

    /// `C[.., pairs of 16-column blocks in `pairs`] = A · B` over 32-row blocks.
    ///
    /// # Safety
    /// Tiles are enabled; `a` holds `m_pad` rows of `in_pad` bf16 in tiles (blocks of 16 rows,
    /// each `in_pad / 32` tiles of 16 × 32), `b` the packed weight, `c` `m_pad` rows of
    /// `out_pad` f32; `m_pad`, `in_pad`, `out_pad` multiples of 32.
    unsafe fn kernel(
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        m_pad: usize,
        in_pad: usize,
        out_pad: usize,
        pairs: std::ops::Range<usize>,
    ) {
        let k_blocks = in_pad / 32;
        let (stride_a, stride_c) = (64usize, out_pad * 4);
        // SAFETY: every tile read and written lies inside the buffers the caller sized
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack));
            for pair in pairs {
                let b0 = b.add(2 * pair * k_blocks * 512);
                let b1 = b.add((2 * pair + 1) * k_blocks * 512);
                for mb in (0..m_pad).step_by(32) {
                    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack));
                    let a0 = a.add((mb / 16) * k_blocks * 512);
                    let a1 = a.add((mb / 16 + 1) * k_blocks * 512);
                    for kb in 0..k_blocks {
                        asm!("tileloadd tmm4, [{a0} + {sa}*1]", "tileloadd tmm5, [{a1} + {sa}*1]",
                             "tileloadd tmm6, [{b0} + {sb}*1]", "tileloadd tmm7, [{b1} + {sb}*1]",
                             "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm1, tmm4, tmm7",
                             "tdpbf16ps tmm2, tmm5, tmm6", "tdpbf16ps tmm3, tmm5, tmm7",
                             a0 = in(reg) a0.add(kb * 512), a1 = in(reg) a1.add(kb * 512), sa = in(reg) stride_a,
                             b0 = in(reg) b0.add(kb * 512), b1 = in(reg) b1.add(kb * 512), sb = in(reg) 64usize,
                             options(nostack));
                    }
                    let c0 = c.add(mb * out_pad + pair * 32);
                    let c1 = c.add((mb + 16) * out_pad + pair * 32);
                    asm!("tilestored [{c0} + {s}*1], tmm0", "tilestored [{c0b} + {s}*1], tmm1",
                         "tilestored [{c1} + {s}*1], tmm2", "tilestored [{c1b} + {s}*1], tmm3",
                         c0 = in(reg) c0, c0b = in(reg) c0.add(16), c1 = in(reg) c1, c1b = in(reg) c1.add(16), s = in(reg) stride_c,
                         options(nostack));
                }
            }
            asm!("tilerelease", options(nostack));
        }
    }

    /// `x Wᵀ` for `rows` rows of `x`, f32 (`m_pad` rows × w.out_pad).
    pub fn product(x: &[f32], rows: usize, w: &TileWeight) -> Vec<f32> {
        let m_pad = rows.div_ceil(32) * 32;
        // A in tiles, 16 rows a block: a tile load then reads 1 KiB in one piece
        let mut a = vec![0u16; m_pad * w.in_pad];
        a.par_chunks_mut(16 * w.in_pad).zip(x.par_chunks(16 * w.inputs)).for_each(|(dst, src)| {
            // SAFETY: `available()` checked AVX512-BF16; a block is in_pad / 32 tiles of 512
            unsafe { round_block(src, w.inputs, dst) }
        });
        // not zeroed: the kernel's tile stores write every element
        let mut c: Vec<f32> = Vec::with_capacity(m_pad * w.out_pad);
        let pairs = w.out_pad / 32;
        let threads = rayon::current_num_threads().min(pairs).max(1);
        let per = pairs.div_ceil(threads);
        let (pa, pb, pc) = (a.as_ptr() as usize, w.packed.as_ptr() as usize, c.as_mut_ptr() as usize);
        (0..threads).into_par_iter().for_each(|t| {
            let range = (t * per).min(pairs)..((t + 1) * per).min(pairs);
            // SAFETY: the threads write disjoint column blocks of `c`; the buffers outlive
            // this parallel loop, which returns before they are used again
            unsafe { kernel(pa as *const u16, pb as *const u16, pc as *mut f32, m_pad, w.in_pad, w.out_pad, range) }
        });
        // SAFETY: the pairs cover every column block and the 32-row blocks every row, so the
        // kernels above initialized all m_pad × out_pad elements
        unsafe { c.set_len(m_pad * w.out_pad) };
        c
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::TileWeight;

    pub fn enable() -> bool {
        false
    }

    pub fn product(_: &[f32], _: usize, _: &TileWeight) -> Vec<f32> {
        unreachable!("tile products run only where `available()` is true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes that pad in every direction: the product on tiles and on vectors (each where
    /// the CPU has it) equals the f32 product of the bf16-rounded operands (up to f32
    /// summation order).
    #[test]
    fn bf16_products_equal_the_product_of_the_rounded_operands() {
        let mut ran = Vec::new();
        if imp::enable() {
            ran.push(Products::Tiles);
        }
        if super::super::dpbf16::available() {
            ran.push(Products::Vectors);
        }
        if ran.is_empty() {
            eprintln!("neither AMX nor AVX512-BF16 on this machine: bf16 products are not used here");
            return;
        }
        let dev = Device::Cpu;
        for (rows, inputs, out) in [(1, 64, 32), (5, 70, 50), (13, 576, 192), (40, 576, 192), (256, 96, 1000)] {
            let x = Tensor::randn(0f32, 1., (rows, inputs), &dev).expect("x");
            let w = Tensor::randn(0f32, 0.1, (out, inputs), &dev).expect("w");
            let round = |t: &Tensor| t.to_dtype(candle_core::DType::BF16).and_then(|t| t.to_dtype(candle_core::DType::F32));
            let want = round(&x).and_then(|x| x.matmul(&round(&w)?.t()?)).expect("want");
            for &on in &ran {
                let got = TileWeight::pack(&w).and_then(|t| t.matmul_on(&x, on)).expect("product");
                let diff = (&got - &want)
                    .and_then(|d| d.abs())
                    .and_then(|d| d.flatten_all())
                    .and_then(|d| d.max(0))
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("diff");
                assert!(diff < 1e-4 * (inputs as f32).sqrt(), "{on:?} {rows}x{inputs}x{out}: off by {diff}");
            }
        }
    }

    /// Weights sharing an input (q, k and v of different widths) give in one call what each
    /// gives alone.
    #[test]
    fn shared_products_equal_each_product_alone() {
        if !available() {
            eprintln!("neither AMX nor AVX512-BF16 on this machine: bf16 products are not used here");
            return;
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 13, 96), &dev).expect("x");
        let ws: Vec<TileWeight> = [96, 40, 40]
            .iter()
            .map(|&out| Tensor::randn(0f32, 0.1, (out, 96), &dev).and_then(|w| TileWeight::pack(&w)).expect("w"))
            .collect();
        let together = TileWeight::matmul_shared(&ws.iter().collect::<Vec<_>>(), &x).expect("shared");
        for (w, y) in ws.iter().zip(&together) {
            let alone = w.matmul(&x).expect("alone");
            assert_eq!(y.dims(), alone.dims());
            let same = y.flatten_all().and_then(|a| a.to_vec1::<f32>()).expect("y")
                == alone.flatten_all().and_then(|a| a.to_vec1::<f32>()).expect("alone");
            assert!(same, "a shared product differs from the weight's own");
        }
    }
}
