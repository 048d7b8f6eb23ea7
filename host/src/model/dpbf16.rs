//! bf16 matrix products on AVX512-BF16 vector dot products (`vdpbf16ps`), for CPUs that have
//! them without AMX tiles (AMD Zen 4 and later, Intel Cooper Lake): the tiles' packed weight
//! ([`super::amx::TileWeight`]) read as 16 outputs × one input pair per 512-bit vector,
//! activations rounded to bf16 per call, sums in f32. Each instruction does twice the
//! multiply-adds of an f32 FMA and reads half the weight bytes.
//!
//! Where the CPU lacks AVX512-BF16, or `MEDTUNE_DPBF16=0`, [`available`] is false and nothing
//! here runs.

use std::sync::OnceLock;

/// Whether this CPU and process run these products (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var("MEDTUNE_DPBF16").map_or(true, |v| v != "0") && imp::detect())
}

/// `x Wᵀ` for `rows` rows of `x` (`inputs` f32 each) and each `W` of `weights`, packed as
/// the tiles pack it (`(packed, out_pad)`: `out_pad` outputs, a multiple of 32; inputs padded
/// to `in_pad`, a multiple of 32): rows × `out_pad` f32 each. The rows are rounded to bf16
/// once for all the weights (q, k and v; gate and up). Only when [`available`].
pub(crate) fn products(x: &[f32], rows: usize, inputs: usize, in_pad: usize, weights: &[(&[u16], usize)]) -> Vec<Vec<f32>> {
    imp::products(x, rows, inputs, in_pad, weights)
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    pub fn detect() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }

    /// The rows of a block of the product: 14 rows × 32 outputs keep 28 sums in registers (of
    /// 32), each weight vector loaded once for 28 instructions.
    const ROWS: usize = 14;

    /// Rounds `src` (rows of `inputs` f32) to bf16 rows of `in_pad` (zero padded), 32 values
    /// per instruction.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16; `dst` is `in_pad` long per row of `src`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn round_rows(src: &[f32], inputs: usize, dst: &mut [u16], in_pad: usize) {
        for (row, out) in src.chunks_exact(inputs).zip(dst.chunks_exact_mut(in_pad)) {
            for (chunk, to) in row.chunks(32).zip(out.chunks_exact_mut(32)) {
                if chunk.len() == 32 {
                    // SAFETY: 32 values read from `chunk` and 32 written to `to`
                    unsafe {
                        let lo = _mm512_loadu_ps(chunk.as_ptr());
                        let hi = _mm512_loadu_ps(chunk.as_ptr().add(16));
                        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                        _mm512_storeu_si512(to.as_mut_ptr().cast(), v);
                    }
                } else {
                    for (d, &v) in to.iter_mut().zip(chunk) {
                        *d = super::super::amx::bf16(v);
                    }
                }
            }
        }
    }

    /// `R` rows of `a` (bf16 pairs, `pairs` per row) times two 16-output blocks `b0`, `b1`
    /// (one vector per input pair) into `c` (rows `stride` apart).
    ///
    /// # Safety
    /// The CPU has AVX512-BF16; `a` holds `R × pairs` pairs, `b0` and `b1` `pairs × 32` bf16,
    /// `c` `R` rows of at least 32 f32 `stride` apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn block<const R: usize>(a: *const u32, pairs: usize, b0: *const u16, b1: *const u16, c: *mut f32, stride: usize) {
        // SAFETY: every read and write stays inside the sizes the caller gave
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for p in 0..pairs {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(p * 32).cast()));
                let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * 32).cast()));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
                    sums[0] = _mm512_dpbf16_ps(sums[0], x, w0);
                    sums[1] = _mm512_dpbf16_ps(sums[1], x, w1);
                }
            }
            for (r, sums) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * stride), sums[0]);
                _mm512_storeu_ps(c.add(r * stride + 16), sums[1]);
            }
        }
    }

    /// Rows `rows` (at most [`ROWS`]) of the product for the output pair `pair` (32 outputs).
    ///
    /// # Safety
    /// As [`block`], for `a` the rounded rows, `b` the whole packed weight and `c` rows of
    /// `out_pad`, the rows and the pair inside them.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn unit(a: *const u32, pairs: usize, b: *const u16, c: *mut f32, out_pad: usize, rows: std::ops::Range<usize>, pair: usize) {
        let first = rows.start;
        // SAFETY: block `pair` of 32 outputs and the rows lie inside the buffers
        unsafe {
            let (b0, b1) = (b.add(2 * pair * pairs * 32), b.add((2 * pair + 1) * pairs * 32));
            let (ar, cr) = (a.add(first * pairs), c.add(first * out_pad + pair * 32));
            match rows.len() {
                14 => block::<14>(ar, pairs, b0, b1, cr, out_pad),
                13 => block::<13>(ar, pairs, b0, b1, cr, out_pad),
                12 => block::<12>(ar, pairs, b0, b1, cr, out_pad),
                11 => block::<11>(ar, pairs, b0, b1, cr, out_pad),
                10 => block::<10>(ar, pairs, b0, b1, cr, out_pad),
                9 => block::<9>(ar, pairs, b0, b1, cr, out_pad),
                8 => block::<8>(ar, pairs, b0, b1, cr, out_pad),
                7 => block::<7>(ar, pairs, b0, b1, cr, out_pad),
                6 => block::<6>(ar, pairs, b0, b1, cr, out_pad),
                5 => block::<5>(ar, pairs, b0, b1, cr, out_pad),
                4 => block::<4>(ar, pairs, b0, b1, cr, out_pad),
                3 => block::<3>(ar, pairs, b0, b1, cr, out_pad),
                2 => block::<2>(ar, pairs, b0, b1, cr, out_pad),
                _ => block::<1>(ar, pairs, b0, b1, cr, out_pad),
            }
        }
    }

    pub fn products(x: &[f32], rows: usize, inputs: usize, in_pad: usize, weights: &[(&[u16], usize)]) -> Vec<Vec<f32>> {
        // candle's own pool, whose workers the elementwise operations between products keep
        // spinning: a second pool would fight them for the cores
        let pool = candle_core::utils::barrier_pool();
        let mut a = vec![0u16; rows * in_pad];
        let (pa, px) = (a.as_mut_ptr() as usize, x.as_ptr() as usize);
        pool.execute_chunked(rows.div_ceil(ROWS), |blocks| {
            let rows_here = (blocks.start * ROWS)..(blocks.end * ROWS).min(rows);
            // SAFETY: the calls round disjoint rows of `a` from rows of `x`, which outlive
            // this parallel loop; `available()` checked AVX512-BF16
            unsafe {
                let src = std::slice::from_raw_parts((px as *const f32).add(rows_here.start * inputs), rows_here.len() * inputs);
                let dst = std::slice::from_raw_parts_mut((pa as *mut u16).add(rows_here.start * in_pad), rows_here.len() * in_pad);
                round_rows(src, inputs, dst, in_pad)
            }
        });
        // not zeroed: the blocks write every element
        let mut outs: Vec<Vec<f32>> = weights.iter().map(|&(_, out_pad)| Vec::with_capacity(rows * out_pad)).collect();
        // every weight's blocks of rows × pairs of 16-output blocks, in one parallel loop: a
        // thread's run of units shares its rows' rounded values across pairs
        let blocks = rows.div_ceil(ROWS);
        let units: Vec<(usize, usize, usize)> = weights
            .iter()
            .enumerate()
            .flat_map(|(w, &(_, out_pad))| (0..blocks).flat_map(move |mb| (0..out_pad / 32).map(move |pair| (w, mb, pair))))
            .collect();
        let targets: Vec<(usize, usize, usize)> = weights
            .iter()
            .zip(outs.iter_mut())
            .map(|(&(packed, out_pad), c)| (packed.as_ptr() as usize, c.as_mut_ptr() as usize, out_pad))
            .collect();
        let pa = a.as_ptr() as usize;
        pool.execute_chunked(units.len(), |range| {
            for &(w, mb, pair) in &units[range] {
                let (pb, pc, out_pad) = targets[w];
                let first = mb * ROWS;
                // SAFETY: the units write disjoint blocks of the outputs; the buffers outlive
                // this parallel loop, which returns before they are used again
                unsafe {
                    unit(pa as *const u32, in_pad / 2, pb as *const u16, pc as *mut f32, out_pad, first..(first + ROWS).min(rows), pair)
                }
            }
        });
        for (c, &(_, out_pad)) in outs.iter_mut().zip(weights) {
            // SAFETY: the pairs cover every column block and the blocks every row, so
            // `columns` initialized all rows × out_pad elements
            unsafe { c.set_len(rows * out_pad) };
        }
        outs
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub fn detect() -> bool {
        false
    }

    pub fn products(_: &[f32], _: usize, _: usize, _: usize, _: &[(&[u16], usize)]) -> Vec<Vec<f32>> {
        unreachable!("vector bf16 products run only where `available()` is true")
    }
}
