//! Unmerged adapters over the rows of an inference pass (a server's several adapters): each
//! group of rows gets `y + (x·Aᵀ)·(scale·Bᵀ)` from its own adapter after the shared product
//! `y = x·Wᵀ`. A step of a few rows on the CPU adds the updates in one pass over plain slices
//! (a handful of candle operations per group and layer cost more than the arithmetic);
//! elsewhere they are candle products.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::Lora;
use super::linear::Linear;

/// Up to this many rows, the CPU adds the updates over plain slices.
const SLICE_ROWS: usize = 64;

struct Group<'a> {
    /// The rows (all of them when empty).
    rows: Vec<u32>,
    /// The same, on the device (none for all rows).
    idx: Option<Tensor>,
    lora: &'a Lora,
}

/// Adapters over groups of rows.
pub struct RowLora<'a> {
    groups: Vec<Group<'a>>,
    /// Whether the shared products are a batched step's ([`Linear::forward_batched`]).
    batched: bool,
}

impl<'a> RowLora<'a> {
    /// One adapter over every row, with the layers' plain products.
    pub fn all(lora: &'a Lora) -> Self {
        RowLora { groups: vec![Group { rows: Vec::new(), idx: None, lora }], batched: false }
    }

    /// A batched step's groups: each adapter's rows, out of `total`.
    pub(crate) fn batched(groups: Vec<(Vec<u32>, &'a Lora)>, total: usize, device: &Device) -> Result<Self> {
        let groups = groups
            .into_iter()
            .map(|(rows, lora)| {
                if rows.len() == total {
                    return Ok(Group { rows: Vec::new(), idx: None, lora });
                }
                let idx = Tensor::new(rows.as_slice(), device)?;
                Ok(Group { rows, idx: Some(idx), lora })
            })
            .collect::<Result<_>>()?;
        Ok(RowLora { groups, batched: true })
    }

    /// The shared product of `l` for `x`.
    pub(crate) fn base(&self, l: &Linear, x: &Tensor) -> Result<Tensor> {
        if self.batched { l.forward_batched(x) } else { l.forward(x) }
    }

    /// `y` (the shared product of `module` for `x`) with each group's update added to its rows.
    pub(crate) fn apply(&self, module: &str, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let (width, out) = (x.dim(candle_core::D::Minus1)?, y.dim(candle_core::D::Minus1)?);
        let rows = x.elem_count() / width.max(1);
        if !self.groups.iter().any(|g| g.lora.get(module).is_some()) {
            return Ok(y);
        }
        let dims = y.dims().to_vec();
        let x = x.reshape((rows, width))?;
        let y = y.reshape((rows, out))?;
        let y = if rows <= SLICE_ROWS && x.device().is_cpu() && x.dtype() == DType::F32 && y.dtype() == DType::F32 {
            self.apply_slices(module, &x, &y)?
        } else {
            self.apply_tensors(module, &x, y)?
        };
        y.reshape(dims)
    }

    fn apply_tensors(&self, module: &str, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
        for g in &self.groups {
            let Some((at, bt)) = g.lora.get(module) else { continue };
            y = match &g.idx {
                None => (&y + x.matmul(at)?.matmul(bt)?.to_dtype(y.dtype())?)?,
                Some(idx) => {
                    let d = x.index_select(idx, 0)?.matmul(at)?.matmul(bt)?;
                    y.index_add(idx, &d.to_dtype(y.dtype())?, 0)?
                }
            };
        }
        Ok(y)
    }

    /// [`RowLora::apply`] over plain slices: `x` (rows, in) and `y` (rows, out), f32 on the CPU.
    fn apply_slices(&self, module: &str, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (rows, width) = x.dims2()?;
        let out = y.dim(1)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut ys = y.flatten_all()?.to_vec1::<f32>()?;
        for g in &self.groups {
            let Some((at, bt)) = g.lora.get(module) else { continue };
            let rank = at.dim(1)?;
            let mut xa = vec![0f32; rank];
            let mut one = |r: usize, at: &[f32], bt: &[f32]| {
                xa.fill(0.0);
                for (xi, a_row) in xs[r * width..(r + 1) * width].iter().zip(at.chunks_exact(rank)) {
                    for (acc, a) in xa.iter_mut().zip(a_row) {
                        *acc += xi * a;
                    }
                }
                let y_row = &mut ys[r * out..(r + 1) * out];
                for (v, b_row) in xa.iter().zip(bt.chunks_exact(out)) {
                    for (yo, b) in y_row.iter_mut().zip(b_row) {
                        *yo += v * b;
                    }
                }
            };
            with_slice(at, |at| {
                with_slice(bt, |bt| {
                    if g.rows.is_empty() {
                        (0..rows).for_each(|r| one(r, at, bt));
                    } else {
                        g.rows.iter().for_each(|&r| one(r as usize, at, bt));
                    }
                })
            })??;
        }
        Tensor::from_vec(ys, (rows, out), &Device::Cpu)
    }
}

/// `f` over the values of `t`, f32 and contiguous on the CPU, without copying them.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)) = &*storage else {
        candle_core::bail!("an adapter weight is not f32 on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("an adapter weight is not contiguous") };
    Ok(f(&values[start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice path and the candle path add the same updates to the same rows.
    #[test]
    fn both_paths_add_each_groups_update_to_its_rows() {
        let dev = Device::Cpu;
        let lora = |seed: f64| {
            let at = (Tensor::randn(0f32, 1., (8, 2), &dev).expect("a") * seed).expect("scale");
            let bt = Tensor::randn(0f32, 1., (2, 5), &dev).expect("b");
            Lora::from_parts([("m".to_owned(), (at, bt))].into_iter().collect())
        };
        let (one, two) = (lora(1.0), lora(-2.0));
        let x = Tensor::randn(0f32, 1., (6, 8), &dev).expect("x");
        let y = Tensor::randn(0f32, 1., (6, 5), &dev).expect("y");
        let rows = RowLora::batched(vec![(vec![0, 1, 4], &one), (vec![2, 5], &two)], 6, &dev).expect("groups");
        let slices = rows.apply_slices("m", &x, &y).expect("slices");
        let tensors = rows.apply_tensors("m", &x, y.clone()).expect("tensors");
        let diff = (&slices - &tensors).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()).expect("diff");
        assert!(diff < 1e-5, "the paths differ by {diff}");
        // row 3 has no adapter: untouched
        let row3 = (slices.get(3).expect("row") - y.get(3).expect("row")).and_then(|d| d.abs()?.sum_all()?.to_scalar::<f32>()).expect("d");
        assert_eq!(row3, 0.0);
        let row0 = (slices.get(0).expect("row") - y.get(0).expect("row")).and_then(|d| d.abs()?.sum_all()?.to_scalar::<f32>()).expect("d");
        assert!(row0 > 0.0);
        // a module no group adapts is returned as it is
        let same = rows.apply("other", &x, y.clone()).expect("other");
        assert_eq!((same - &y).and_then(|d| d.abs()?.sum_all()?.to_scalar::<f32>()).expect("d"), 0.0);
    }
}
