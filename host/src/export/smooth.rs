//! SmoothQuant for the int8 export: per-channel scales, from the largest activations seen on
//! calibration prompts, move activation outliers into the weights before they are quantized.
//!
//! Each rewrite is exact in f32: an input channel of a linear layer divided by `s` and the
//! weight's column multiplied by `s` leave the product unchanged. The division is folded into
//! what produces the channel: the RMSNorm weight (q/k/v and gate/up inputs), the value
//! projection's rows (the attention output that o_proj reads: attention is linear in the
//! values) and the up projection's rows (the SwiGLU product that down_proj reads). With
//! `s = max|x|^α / max|w|^(1-α)` the per-tensor activation quantizer no longer spends its 256
//! levels on a few outlier channels.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use crate::model::{Adapters, Linear, Llama};

/// The smoothing strength: 0.65 changed the yes/no/maybe probabilities of 100 test prompts
/// least (of 0.5, 0.65, 0.8) in a simulation of the int8 export (BENCHMARKS.md).
pub const ALPHA: f32 = 0.65;

/// Per module (`model.layers.3.mlp.down_proj`), the largest |activation| of each input channel.
type Maxima = HashMap<String, Vec<f32>>;

/// Runs the plain model and keeps, per linear layer, each input channel's largest |value|.
struct Recorder(RefCell<Maxima>);

impl Adapters for Recorder {
    fn linear(&self, module: &str, base: &Linear, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(candle_core::D::Minus1)?;
        let m = x.abs()?.reshape(((), d))?.max(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut all = self.0.borrow_mut();
        let seen = all.entry(module.to_owned()).or_insert_with(|| vec![0.0; d]);
        for (s, v) in seen.iter_mut().zip(m) {
            *s = s.max(v);
        }
        base.frozen_value(x)
    }
}

/// The largest |input| of every linear layer's channels over `prompts` (token ids).
fn maxima(model: &Llama, prompts: &[Vec<u32>]) -> Result<Maxima> {
    let rec = Recorder(RefCell::new(HashMap::new()));
    for ids in prompts.iter().filter(|p| !p.is_empty()) {
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let last = Tensor::new(&[ids.len() as u32 - 1], &Device::Cpu)?;
        model.logits_at(&input, &last, Some(&rec))?;
    }
    Ok(rec.0.into_inner())
}

/// The smoothing scale of each channel: `a^α / w^(1-α)` for activation maximum `a` and weight
/// maximum `w`, 1 where either is 0, kept within [1e-4, 1e4].
fn scales(act: &[f32], weight: &[f32], alpha: f32) -> Vec<f32> {
    act.iter()
        .zip(weight)
        .map(|(&a, &w)| if a > 0.0 && w > 0.0 { (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-4, 1e4) } else { 1.0 })
        .collect()
}

/// Each column's largest |value| over several (out, in) weights.
fn column_max(ws: &[&Tensor]) -> Result<Vec<f32>> {
    let mut m: Option<Tensor> = None;
    for w in ws {
        let c = w.abs()?.max(0)?;
        m = Some(match m {
            Some(m) => m.maximum(&c)?,
            None => c,
        });
    }
    m.map_or_else(|| Ok(Vec::new()), |m| m.to_vec1::<f32>())
}

/// Smoothed copies of `model`'s tensors (by Hugging Face name, f32): the same function, its
/// activation outliers moved into the weights, for scales of strength `alpha` measured on
/// `prompts`.
pub fn smoothed(model: &Llama, prompts: &[Vec<u32>], alpha: f32) -> Result<HashMap<String, Tensor>> {
    let act = maxima(model, prompts)?;
    let mut t: HashMap<String, Tensor> = model.tensors()?.into_iter().collect();
    let c = model.config();
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let get =
        |t: &HashMap<String, Tensor>, n: &str| t.get(n).cloned().ok_or_else(|| candle_core::Error::Msg(format!("missing weight {n}")));
    let tensor = |s: &[f32]| Tensor::new(s, &Device::Cpu);
    let recorded = |m: &str| act.get(m).ok_or_else(|| candle_core::Error::Msg(format!("calibration never reached {m}")));
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        // a norm feeding several projections: the norm weight / s, their columns · s
        for (norm, mods) in [
            ("input_layernorm", &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"][..]),
            ("post_attention_layernorm", &["mlp.gate_proj", "mlp.up_proj"][..]),
        ] {
            let names: Vec<String> = mods.iter().map(|m| format!("{p}.{m}.weight")).collect();
            let ws = names.iter().map(|n| get(&t, n)).collect::<Result<Vec<_>>>()?;
            let s = scales(recorded(&format!("{p}.{}", mods[0]))?, &column_max(&ws.iter().collect::<Vec<_>>())?, alpha);
            let s = tensor(&s)?;
            let g = format!("{p}.{norm}.weight");
            t.insert(g.clone(), get(&t, &g)?.div(&s)?);
            for (n, w) in names.into_iter().zip(ws) {
                t.insert(n, w.broadcast_mul(&s.unsqueeze(0)?)?);
            }
        }
        // o_proj reads the attention output: its channel (head h, d) is value row
        // (h / group, d), so the scale is shared by the query heads of a key/value head
        let (vn, on) = (format!("{p}.self_attn.v_proj.weight"), format!("{p}.self_attn.o_proj.weight"));
        let (v, o) = (get(&t, &vn)?, get(&t, &on)?);
        let (a_o, w_o) = (recorded(&format!("{p}.self_attn.o_proj"))?, column_max(&[&o])?);
        let group = nh / nkv;
        let row = |ch: usize| (ch / hd / group) * hd + ch % hd;
        let (mut a_v, mut w_v) = (vec![0f32; nkv * hd], vec![0f32; nkv * hd]);
        for ch in 0..nh * hd {
            a_v[row(ch)] = a_v[row(ch)].max(a_o[ch]);
            w_v[row(ch)] = w_v[row(ch)].max(w_o[ch]);
        }
        let s_v = scales(&a_v, &w_v, alpha);
        let s_o: Vec<f32> = (0..nh * hd).map(|ch| s_v[row(ch)]).collect();
        t.insert(vn, v.broadcast_div(&tensor(&s_v)?.unsqueeze(1)?)?);
        // a value bias (Qwen2's) is part of the value row it is added to
        let bn = format!("{p}.self_attn.v_proj.bias");
        if let Some(b) = t.get(&bn).cloned() {
            t.insert(bn, b.div(&tensor(&s_v)?)?);
        }
        t.insert(on, o.broadcast_mul(&tensor(&s_o)?.unsqueeze(0)?)?);
        // down_proj reads silu(gate) · up: up's rows / s, down's columns · s
        let (un, dn) = (format!("{p}.mlp.up_proj.weight"), format!("{p}.mlp.down_proj.weight"));
        let (up, down) = (get(&t, &un)?, get(&t, &dn)?);
        let s = tensor(&scales(recorded(&format!("{p}.mlp.down_proj"))?, &column_max(&[&down])?, alpha))?;
        t.insert(un, up.broadcast_div(&s.unsqueeze(1)?)?);
        t.insert(dn, down.broadcast_mul(&s.unsqueeze(0)?)?);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scale formula at its edges: balanced at α = 0.5, 1 for dead channels, clamped.
    #[test]
    fn scales_balance_activations_and_weights() {
        let s = scales(&[16.0, 0.0, 1e12, 1.0], &[1.0, 3.0, 1.0, 4.0], 0.5);
        assert_eq!(s, vec![4.0, 1.0, 1e4, 0.5]);
    }
}
