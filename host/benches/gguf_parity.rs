//! A GGUF's tokens, chat prompt and logits as medtune computes them, for
//! `gguf_parity.py` to set beside transformers' GGUF loader (`gguf_parity.sh` runs both).
//!
//! `cargo bench -p medtune --bench gguf_parity -- MODEL.gguf OUT_DIR`
//!
//! For each prompt of [`PROMPTS`], as a one-turn chat through the model's own template:
//! the rendered text and its ids, and the last position's logits with the weights kept in
//! their GGUF blocks (what medtune trains and serves with) and dequantized to f32 (what
//! transformers computes with), as little-endian f32 files; then 16 greedy tokens of the
//! f32 model. Also the ids of each prompt as plain text. Writes OUT_DIR/medtune.json.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use medtune::model::{self, Cache, ChatMessage, LoadOptions, LoadedModel};

/// Medical prompts, with the characters pre-tokenizers differ on (digits, units, symbols,
/// accents, line breaks).
const PROMPTS: [&str; 4] = [
    "Does metformin help with weight loss in type 2 diabetes patients?",
    "A 67-year-old man has HbA1c 8.1% and eGFR 42 mL/min/1.73m². Which drug should be avoided?",
    "List three causes of acute pancreatitis.\nAnswer briefly.",
    "Is café-au-lait macule a sign of neurofibromatosis (NF1)?",
];

fn logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
    let l = m.llama.forward(&input, &mut Cache::new(&m.llama)).expect("forward");
    l.squeeze(0).and_then(|l| l.get(ids.len() - 1)).and_then(|l| l.to_vec1::<f32>()).expect("logits")
}

fn greedy(m: &LoadedModel, ids: &[u32], n: usize) -> Vec<u32> {
    let mut cache = Cache::new(&m.llama);
    let mut input = ids.to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Tensor::new(input.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
        let l = m.llama.forward(&t, &mut cache).expect("forward");
        let last = l.squeeze(0).and_then(|l| l.get(input.len() - 1)).and_then(|l| l.to_vec1::<f32>()).expect("logits");
        let next = last.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).expect("argmax");
        out.push(next);
        input = vec![next];
    }
    out
}

fn write_f32(path: &std::path::Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let (Some(model), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: gguf_parity MODEL.gguf OUT_DIR");
        std::process::exit(2);
    };
    let (model, out) = (PathBuf::from(model), PathBuf::from(out));
    std::fs::create_dir_all(&out).expect("out dir");
    let kept = model::load_with(&model, &Device::Cpu, LoadOptions { dequantize: false }).expect("load");
    let dense = model::load_with(&model, &Device::Cpu, LoadOptions { dequantize: true }).expect("load f32");
    let mut cases = Vec::new();
    for (i, prompt) in PROMPTS.iter().enumerate() {
        let chat = kept.tokenizer.chat_prompt(&[ChatMessage { role: "user".into(), content: (*prompt).into() }]).expect("chat");
        let ids = kept.tokenizer.encode(&chat).expect("ids");
        write_f32(&out.join(format!("kept-{i}.f32")), &logits(&kept, &ids));
        write_f32(&out.join(format!("f32-{i}.f32")), &logits(&dense, &ids));
        cases.push(serde_json::json!({
            "prompt": prompt,
            "plain_ids": kept.tokenizer.encode(prompt).expect("ids"),
            "chat": chat,
            "ids": ids,
            "greedy": greedy(&dense, &ids, 16),
        }));
        eprintln!("prompt {i}: {} tokens", ids.len());
    }
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "config": format!("{:?}", dense.llama.config()),
        "stop_ids": kept.tokenizer.stop_ids,
        "cases": cases,
    });
    std::fs::write(out.join("medtune.json"), serde_json::to_string_pretty(&report).expect("json")).expect("write");
}
