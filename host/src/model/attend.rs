//! Causal attention of a batched step on the CPU (f32), fused: RoPE over every row of the step
//! at once, then for each sequence's rows the scores over the keys each may see, their softmax
//! and the weighted sum of values, read in place from the sequence's cache. No (heads × rows ×
//! keys) score tensor, no repeated key heads, no mask, and no per-sequence tensor operations
//! but the cache's append ([`super::Llama::forward_segments`]).

use candle_core::{DType, Device, Layout, Result, Storage, Tensor};

/// Query rows per unit of work (one head of one sequence).
const ROWS: usize = 16;

/// A sequence's part of a batched step: its rows `offset..offset + len` of the step, and its
/// keys and values (1, kv_heads, positions, head_dim) with these rows' own last.
pub struct Part {
    pub offset: usize,
    pub len: usize,
    pub k: Tensor,
    pub v: Tensor,
}

/// Non-interleaved RoPE of `x` (1, rows, heads × head_dim), f32: row `offset + i` of each
/// `(offset, cos, sin)` rotated by row `i` of its tables (len × head_dim / 2).
pub fn rope(x: &Tensor, heads: usize, tables: &[(usize, &Tensor, &Tensor)]) -> Result<Tensor> {
    let (_, rows, width) = x.dims3()?;
    let dim = width / heads.max(1);
    let half = dim / 2;
    let mut y = f32s(x)?;
    for &(offset, cos, sin) in tables {
        let (cos, sin) = (f32s(cos)?, f32s(sin)?);
        let len = cos.len() / half.max(1);
        if offset + len > rows || sin.len() != cos.len() {
            candle_core::bail!("RoPE: {len} table rows at row {offset} of {rows}");
        }
        for (i, row) in y[offset * width..(offset + len) * width].chunks_exact_mut(width).enumerate() {
            let (c, s) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
            for head in row.chunks_exact_mut(dim) {
                let (a, b) = head.split_at_mut(half);
                for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(c).zip(s) {
                    (*a, *b) = (*a * c - *b * s, *b * c + *a * s);
                }
            }
        }
    }
    Tensor::from_vec(y, (1, rows, width), &Device::Cpu)
}

/// Attention of the step's queries `q` (1, rows, heads × head_dim), rotated, for every part:
/// part row `i` sees its first `positions - len + i + 1` keys; query head `h` reads key head
/// `h / (heads / kv_heads)`; scores scaled by `scale`. Returns (1, rows, heads × head_dim).
pub fn batched(q: &Tensor, heads: usize, parts: &[Part], scale: f32) -> Result<Tensor> {
    let (_, rows, width) = q.dims3()?;
    let dim = width / heads.max(1);
    // the queries read where they are (the rotated rows [`rope`] made), as the caches are
    let q = q.contiguous()?;
    let q_view = View::of(&q)?;
    let (q, _) = q_view.parts()?;
    // the parts' keys and values read where they are: (guard, layout) each
    let mut views = Vec::with_capacity(parts.len());
    let mut units = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let (_, kv_heads, keys, d) = part.k.dims4()?;
        if d != dim
            || part.v.dims() != part.k.dims()
            || keys < part.len
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || part.offset + part.len > rows
        {
            candle_core::bail!(
                "fused attention: {} rows at {} of {rows}, keys {:?}, values {:?}",
                part.len,
                part.offset,
                part.k.dims(),
                part.v.dims()
            );
        }
        views.push((View::of(&part.k)?, View::of(&part.v)?, heads / kv_heads, keys - part.len));
        for h in 0..heads {
            units.extend((0..part.len).step_by(ROWS).map(|first| (n, h, first)));
        }
    }
    let views: Vec<_> = views
        .iter()
        .zip(parts)
        .map(|((k, v, group, pos), part)| {
            let (k, v) = (k.parts()?, v.parts()?);
            let (_, kv_heads, keys, _) = part.k.dims4()?;
            // the last element the products read, of each
            for (values, strides) in [k, v] {
                if (kv_heads - 1) * strides[1] + (keys - 1) * strides[2] + dim > values.len() {
                    candle_core::bail!("fused attention: a cache's layout reaches past its storage");
                }
            }
            Ok((k, v, *group, *pos))
        })
        .collect::<Result<_>>()?;
    let mut y: Vec<f32> = vec![0.0; rows * width];
    let py = y.as_mut_ptr() as usize;
    let longest = parts.iter().map(|p| p.k.dim(2).unwrap_or(0)).max().unwrap_or(0);
    candle_core::utils::barrier_pool().execute_chunked(units.len(), |range| {
        let mut scores = vec![0f32; ROWS * longest];
        for &(n, h, first) in &units[range] {
            let part = &parts[n];
            let ((k, ks), (v, vs), group, pos) = &views[n];
            let r = ROWS.min(part.len - first);
            // the block's last row sees `seen` keys
            let seen = pos + first + r;
            let s = &mut scores[..r * seen];
            let row0 = part.offset + first;
            // SAFETY: the operands lie inside `q`, the caches' storage (their layouts' strides)
            // and `scores`; unit (part, h, first) writes only its rows at head h's columns of
            // `y`, which outlives this parallel loop
            unsafe {
                let (kp, vp) = (k.as_ptr().add((h / group) * ks[1]), v.as_ptr().add((h / group) * vs[1]));
                // S = scale · Q Kᵀ (r × seen; K read transposed through its strides)
                gemm::gemm(
                    r,
                    seen,
                    dim,
                    s.as_mut_ptr(),
                    1,
                    seen as isize,
                    false,
                    q.as_ptr().add(row0 * width + h * dim),
                    1,
                    width as isize,
                    kp,
                    ks[2] as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for (i, row) in s.chunks_exact_mut(seen).enumerate() {
                    softmax_causal(row, pos + first + i + 1);
                }
                // Y = P V (r × dim), into the rows of head h
                let out = (py as *mut f32).add(row0 * width + h * dim);
                gemm::gemm(
                    r,
                    dim,
                    seen,
                    out,
                    1,
                    width as isize,
                    false,
                    s.as_ptr(),
                    1,
                    seen as isize,
                    vp,
                    1,
                    vs[2] as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    });
    Tensor::from_vec(y, (1, rows, width), &Device::Cpu)
}

/// An f32 CPU tensor read in place: its storage and layout.
struct View<'a> {
    storage: Box<dyn std::ops::Deref<Target = Storage> + 'a>,
    layout: &'a Layout,
}

impl<'a> View<'a> {
    fn of(t: &'a Tensor) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        if layout.stride().last() != Some(&1) {
            candle_core::bail!("fused attention reads tensors whose rows are contiguous");
        }
        Ok(View { storage: Box::new(storage), layout })
    }

    /// Its values from the first element on, and its strides.
    fn parts(&self) -> Result<(&[f32], &[usize])> {
        let Storage::Cpu(candle_core::CpuStorage::F32(values)) = &**self.storage else {
            candle_core::bail!("fused attention runs on f32 tensors on the CPU");
        };
        Ok((&values[self.layout.start_offset()..], self.layout.stride()))
    }
}

/// `row` becomes the softmax of its first `seen` scores, zeros after them.
fn softmax_causal(row: &mut [f32], seen: usize) {
    let (seen_part, rest) = row.split_at_mut(seen);
    rest.fill(0.0);
    let max = seen_part.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in seen_part.iter_mut() {
        *s = exp(*s - max);
        sum += *s;
    }
    let inv = 1.0 / sum;
    for s in seen_part.iter_mut() {
        *s *= inv;
    }
}

/// `e^x` for `x <= 0` (softmax's shifted scores), branch-free so loops of it vectorize:
/// `x = i·ln 2 + r` with ln 2 in two parts (Cody and Waite), `2^i` from the exponent bits and
/// `e^r` by its Taylor polynomial of degree 7 (|r| <= ln 2 / 2: under 1e-8 before rounding);
/// 0 below -87.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    let i = x.mul_add(std::f32::consts::LOG2_E, 0.5).floor();
    let r = i.mul_add(-LN2_LO, i.mul_add(-LN2_HI, x));
    let p = 1.0_f32 / 5040.0;
    let p = p.mul_add(r, 1.0 / 720.0);
    let p = p.mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    let value = p * f32::from_bits(((i as i32 + 127) as u32) << 23);
    if x <= -87.0 { 0.0 } else { value }
}

/// The values of `t` (f32 on the CPU) in row-major order.
fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    if t.dtype() != DType::F32 {
        candle_core::bail!("fused attention takes f32, not {:?}", t.dtype());
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
        candle_core::bail!("fused attention runs on the CPU");
    };
    let start = layout.start_offset();
    Ok(values[start..start + t.elem_count()].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candle's attention of one sequence: repeated key heads, masked softmax.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, pos: usize, scale: f32) -> Result<Tensor> {
        let (_, heads, rows, dim) = q.dims4()?;
        let (_, kv_heads, keys, _) = k.dims4()?;
        let group = heads / kv_heads;
        let (k, v) = (super::super::ops::repeat_heads(k, group)?, super::super::ops::repeat_heads(v, group)?);
        let att = (q.matmul(&k.t()?)? * f64::from(scale))?;
        let mask: Vec<f32> = (0..rows).flat_map(|i| (0..keys).map(move |j| if j <= pos + i { 0.0 } else { f32::NEG_INFINITY })).collect();
        let att = att.broadcast_add(&Tensor::from_vec(mask, (rows, keys), q.device())?)?;
        let y = candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?;
        y.transpose(1, 2)?.reshape((1, rows, heads * dim))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).and_then(|d| d.abs()).and_then(|d| d.flatten_all()).and_then(|d| d.max(0)).and_then(|d| d.to_scalar::<f32>()).expect("diff")
    }

    /// One step of three sequences (a prompt from an empty cache, one decoding row after 300
    /// positions, a chunk after 23), their caches wider than they are filled as a KV cache
    /// leaves them: each part equals candle's attention of that sequence alone.
    #[test]
    fn fused_attention_equals_the_masked_softmax_of_candles_operations() {
        let dev = Device::Cpu;
        for (heads, kv_heads, dim) in [(9, 3, 64), (4, 4, 32), (8, 2, 128)] {
            let segments = [(40, 0), (1, 300), (17, 23)];
            let rows: usize = segments.iter().map(|s| s.0).sum();
            let q = Tensor::randn(0f32, 1., (1, rows, heads * dim), &dev).expect("q");
            let scale = 1.0 / (dim as f32).sqrt();
            let (mut parts, mut offset) = (Vec::new(), 0);
            for &(len, pos) in &segments {
                // a cache of capacity pos + len + 5, narrowed to what it holds
                let kv = |_| Tensor::randn(0f32, 1., (1, kv_heads, pos + len + 5, dim), &dev).and_then(|t| t.narrow(2, 0, pos + len));
                parts.push(Part { offset, len, k: kv(0).expect("k"), v: kv(1).expect("v") });
                offset += len;
            }
            let got = batched(&q, heads, &parts, scale).expect("fused");
            for part in &parts {
                let qs = q
                    .narrow(1, part.offset, part.len)
                    .and_then(|x| x.reshape((1, part.len, heads, dim)))
                    .and_then(|x| x.transpose(1, 2))
                    .and_then(|x| x.contiguous())
                    .expect("q heads");
                let want = reference(&qs, &part.k, &part.v, part.k.dim(2).expect("keys") - part.len, scale).expect("candle");
                let diff = max_diff(&got.narrow(1, part.offset, part.len).expect("rows"), &want);
                assert!(diff < 1e-5, "{heads}/{kv_heads} heads of {dim}, {} rows at {}: off by {diff}", part.len, part.offset);
            }
        }
    }

    /// RoPE over a step's rows equals candle's rope of each sequence's rows at its positions.
    #[test]
    fn rope_over_a_step_equals_candles_rope_per_sequence() {
        let dev = Device::Cpu;
        let (heads, dim, rows) = (3, 16, 9);
        let x = Tensor::randn(0f32, 1., (1, rows, heads * dim), &dev).expect("x");
        let table = |n: usize| Tensor::randn(0f32, 1., (n, dim / 2), &dev).expect("table");
        let (c1, s1, c2, s2) = (table(5), table(5), table(4), table(4));
        let got = rope(&x, heads, &[(0, &c1, &s1), (5, &c2, &s2)]).expect("rope");
        for (offset, len, c, s) in [(0, 5, &c1, &s1), (5, 4, &c2, &s2)] {
            let part = x
                .narrow(1, offset, len)
                .and_then(|x| x.reshape((1, len, heads, dim)))
                .and_then(|x| x.transpose(1, 2))
                .and_then(|x| x.contiguous())
                .expect("heads");
            let want = candle_nn::rotary_emb::rope(&part, c, s)
                .and_then(|y| y.transpose(1, 2))
                .and_then(|y| y.reshape((1, len, heads * dim)))
                .expect("candle rope");
            let diff = max_diff(&got.narrow(1, offset, len).expect("rows"), &want);
            assert!(diff < 1e-6, "rows {offset}..{}: off by {diff}", offset + len);
        }
    }

    #[test]
    fn the_exponential_is_within_float_precision() {
        for i in 0..=8_600 {
            let x = -(i as f32) * 0.0101;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 3e-7 * want, "e^{x}: {got} against {want}");
        }
        assert_eq!(exp(-1000.0), 0.0);
    }
}
