//! AdamW (decoupled weight decay, as `torch.optim.AdamW`), the learning-rate schedule
//! (linear warm-up, then cosine, linear or no decay) and global gradient-norm clipping. The
//! optimizer's moments are tensors that a checkpoint saves and a resume restores.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

use crate::config::Schedule;

/// AdamW over a fixed list of variables.
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimizer steps taken.
    pub step: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// Fresh moments (zero) for `vars`.
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Result<Self> {
        // two allocations each: on CUDA the moments are updated in place
        let m = vars.iter().map(|v| v.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = vars.iter().map(|v| v.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        Ok(Self { vars, m, v, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay })
    }

    /// One update with `grads` (one per variable, same order) at learning rate `lr` (on CUDA
    /// one kernel per variable, updating it and its moments in place).
    pub fn update(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            #[cfg(feature = "cuda")]
            if var.device().is_cuda() && var.dtype() == candle_core::DType::F32 {
                crate::cuda::fused::adamw_step(
                    var.as_tensor(),
                    &self.m[i],
                    &self.v[i],
                    g,
                    (self.beta1, self.beta2),
                    1.0 - lr * self.weight_decay,
                    lr / c1,
                    1.0 / c2,
                    self.eps,
                )?;
                continue;
            }
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let step = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (step * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments, named `m.<i>` and `v.<i>`, for a checkpoint: save them before the next
    /// update, which on CUDA changes them in place.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.insert(format!("m.{i}"), m.clone());
            out.insert(format!("v.{i}"), v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] after `step` steps.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for i in 0..self.vars.len() {
            let get = |k: String| state.get(&k).cloned().ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")));
            let (m, v) = (get(format!("m.{i}"))?, get(format!("v.{i}"))?);
            if m.dims() != self.m[i].dims() || v.dims() != self.v[i].dims() {
                candle_core::bail!("optimizer state {i} has shape {:?}, expected {:?}", m.dims(), self.m[i].dims());
            }
            self.m[i] = m.to_device(self.m[i].device())?;
            self.v[i] = v.to_device(self.v[i].device())?;
        }
        self.step = step;
        Ok(())
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps to
/// `peak`, then `cosine`, `linear` (to 0 at `total`) or `constant`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, schedule: Schedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Linear => peak * (1.0 - progress),
        Schedule::Constant => peak,
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (0: no clipping); returns the
/// norm before clipping.
pub fn clip(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let Some(first) = grads.first() else { return Ok(0.0) };
    // summed on the device: one read back, not one per gradient
    let mut sum = Tensor::zeros((), candle_core::DType::F32, first.device())?;
    for g in grads.iter() {
        sum = (sum + g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all()?)?;
    }
    let norm = f64::from(sum.to_scalar::<f32>()?).sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Two steps of AdamW on known values, against `torch.optim.AdamW(lr=0.1, weight_decay=0.01)`
    /// (the values below are what torch 2.x computes).
    #[test]
    fn adamw_matches_torch() {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).expect("t")).expect("var");
        let mut opt = AdamW::new(vec![var.clone()], 0.01).expect("opt");
        for g in [[0.5f32, -1.0], [0.25, 0.5]] {
            opt.update(&[Tensor::new(&g, &Device::Cpu).expect("g")], 0.1).expect("step");
        }
        let got = var.as_tensor().to_vec1::<f32>().expect("vec");
        // torch 2.15: p = [1, -2], grads [.5, -1] then [.25, .5]
        let want = [0.804_883_06f32, -1.869_468_3];
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }

    /// AdamW on CUDA (one in-place kernel per variable) gives the CPU's parameters and
    /// moments after three steps with weight decay, within 1e-5 of each one's largest value.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_adamw_matches_the_cpu() {
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let cpu = Device::Cpu;
        let p0 = Tensor::randn(0f32, 1., (16, 300), &cpu).expect("p");
        let grads: Vec<Tensor> = (0..3).map(|_| Tensor::randn(0f32, 1., (16, 300), &cpu).expect("g")).collect();
        let run = |dev: &Device| {
            let var = Var::from_tensor(&p0.to_device(dev).expect("p")).expect("var");
            let mut opt = AdamW::new(vec![var.clone()], 0.01).expect("opt");
            for g in &grads {
                opt.update(&[g.to_device(dev).expect("g")], 1e-2).expect("step");
            }
            let state = opt.state();
            [var.as_tensor().clone(), state["m.0"].clone(), state["v.0"].clone()]
                .map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"))
        };
        for (name, (a, e)) in ["parameter", "m", "v"].iter().zip(run(&gpu).iter().zip(run(&cpu).iter())) {
            // float rounding (the kernels contract into fused multiply-adds): relative to the largest value
            let scale = e.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(e).fold(0f32, |d, (a, e)| d.max((a - e).abs()));
            assert!(diff < 1e-5 * scale, "{name}: differs by {diff} (largest {scale})");
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(0, 10, 2, 1.0, Schedule::Cosine) - 0.5).abs() < 1e-12);
        assert!((learning_rate(1, 10, 2, 1.0, Schedule::Cosine) - 1.0).abs() < 1e-12);
        assert!((learning_rate(6, 10, 2, 1.0, Schedule::Cosine) - 0.5).abs() < 1e-12);
        assert!((learning_rate(6, 10, 2, 1.0, Schedule::Linear) - 0.5).abs() < 1e-12);
        assert!((learning_rate(9, 10, 0, 1.0, Schedule::Constant) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![Tensor::new(&[3.0f32], &Device::Cpu).expect("t"), Tensor::new(&[4.0f32], &Device::Cpu).expect("t")];
        assert!((clip(&mut g, 1.0).expect("clip") - 5.0).abs() < 1e-9);
        let after: f32 = g.iter().map(|t| t.to_vec1::<f32>().expect("v")[0].powi(2)).sum();
        assert!((after.sqrt() - 1.0).abs() < 1e-4);
    }
}
