//! One sequence's keys and values for one block of a batched step: a buffer of slots
//! (1, kv heads, capacity, head_dim) written in place and grown 256 positions at a time, so a
//! step appends without copying what is cached. candle's operations and the CPU's fused
//! attention append through [`Slots::append`]; the CUDA step's kernels write straight into
//! the buffers ([`Slots::reserve`], [`Slots::addresses`], [`Slots::advance`]).

use candle_core::{DType, Device, Result, Tensor};

/// Positions a buffer grows by.
const GROWTH: usize = 256;

/// The slots of one block (see the module's documentation).
#[derive(Default)]
pub(crate) struct Slots {
    kv: Option<(Tensor, Tensor)>,
    len: usize,
    /// The buffers' device addresses, taken once per allocation (CUDA only).
    #[cfg(feature = "cuda")]
    addresses: (u64, u64),
}

impl Slots {
    /// How many positions are cached.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many positions the buffers hold.
    pub(crate) fn capacity(&self) -> Result<usize> {
        self.kv.as_ref().map_or(Ok(0), |(k, _)| k.dim(2))
    }

    /// Room for `extra` more positions of `kv_heads` × `head_dim` in `dtype` on `device`,
    /// the cached ones kept.
    pub(crate) fn reserve(&mut self, extra: usize, kv_heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<()> {
        let need = self.len + extra;
        if need <= self.capacity()? {
            return Ok(());
        }
        let cap = need.div_ceil(GROWTH) * GROWTH;
        let grow = |old: Option<&Tensor>| -> Result<Tensor> {
            let t = Tensor::zeros((1, kv_heads, cap, head_dim), dtype, device)?;
            if let Some(old) = old
                && self.len > 0
            {
                t.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            Ok(t)
        };
        let (k, v) = (grow(self.kv.as_ref().map(|(k, _)| k))?, grow(self.kv.as_ref().map(|(_, v)| v))?);
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            self.addresses = (crate::cuda::decode::address(&k)?, crate::cuda::decode::address(&v)?);
        }
        self.kv = Some((k, v));
        Ok(())
    }

    /// Appends keys and values (1, kv heads, n, head_dim); returns every cached one (views of
    /// the buffers).
    pub(crate) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, kv_heads, n, head_dim) = k.dims4()?;
        self.reserve(n, kv_heads, head_dim, k.dtype(), k.device())?;
        let Some((kb, vb)) = &self.kv else { candle_core::bail!("slots: no buffer after reserving") };
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += n;
        Ok((kb.narrow(2, 0, self.len)?, vb.narrow(2, 0, self.len)?))
    }

    /// The key and value buffers' device addresses (after [`Slots::reserve`]).
    #[cfg(feature = "cuda")]
    pub(crate) fn addresses(&self) -> (u64, u64) {
        self.addresses
    }

    /// Counts `n` positions a kernel wrote after the cached ones (within the capacity
    /// reserved).
    #[cfg(feature = "cuda")]
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends keep what was cached across growth, and return exactly the cached positions.
    #[test]
    fn appends_keep_the_cached_positions_across_growth() -> Result<()> {
        let mut s = Slots::default();
        let chunk = |from: usize, n: usize| Tensor::arange(from as f32, (from + n * 2 * 3) as f32, &Device::Cpu)?.reshape((1, 2, n, 3));
        let (a, b) = (chunk(0, 200)?, chunk(10_000, 100)?);
        s.append(&a, &a)?;
        assert_eq!((s.len(), s.capacity()?), (200, 256));
        let (k, v) = s.append(&b, &b)?;
        assert_eq!((s.len(), s.capacity()?), (300, 512));
        let want = Tensor::cat(&[&a, &b], 2)?;
        assert_eq!(k.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(v.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
