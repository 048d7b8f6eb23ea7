//! `medtune serve`: the HTTP API over a config's model (with its fine-tuned adapter when the
//! run has one) and its plugin chain; more adapters served beside it as models of their own
//! (`--adapter NAME=DIR`, `--adapters-dir`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::ConfigArg;
use super::console::Console;
use medtune::config::Config;
use medtune::engine::EngineKind;
use medtune::pipeline;
use medtune::plugin::types::PluginKind;
use medtune::plugin::{PluginEngine, PluginSet, SlotSpec};
use medtune::prompt::PromptOptions;
use medtune::serve::{AdapterFolder, AdapterSpec, AppState, ServeOptions, serve};

/// Requests in a row on which a plugin times out before it is taken out of the chain.
const BENCH_AFTER: u32 = 3;

/// `medtune serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Where to listen (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// `DIR`: the served model's own adapter, merged (default: runs/<name>/adapter). `NAME=DIR`
    /// (as many as wanted): DIR's adapter served beside it as the model NAME; adapters are then
    /// kept apart from the weights, and requests of different models share a batch.
    #[arg(long = "adapter", value_name = "[NAME=]DIR")]
    pub adapters: Vec<String>,
    /// Serve the base model without the run's adapter.
    #[arg(long)]
    pub base: bool,
    /// A folder of adapters, one subfolder each, served as models named after the subfolders,
    /// and watched: adapters added, replaced or removed there are while serving.
    #[arg(long, value_name = "DIR")]
    pub adapters_dir: Option<PathBuf>,
    /// The engine: `candle`, or `ort` (ONNX Runtime over the export in --onnx).
    #[arg(long, value_enum, default_value_t = EngineKind::Candle)]
    pub engine: EngineKind,
    /// The export folder for --engine ort (default: runs/<name>/onnx, from `medtune export`).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Largest max_tokens a request may ask for (and the default).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Per-request time limit in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
    /// Requests admitted at once (running or waiting); more are answered 429.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Sequences decoded together in one model step (continuous batching, candle engine).
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Milliseconds a client may take to send a request's headers (then the connection is
    /// closed).
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
}

pub fn serve_cmd(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let in_chain = |s: &SlotSpec| matches!(s.kind, PluginKind::Normalizer | PluginKind::Disambiguator);
    let specs = config.slots().into_iter().filter(in_chain).collect();
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
    let mut chain = PluginSet::load(engine, specs, config.plugin_dirs())
        .context("loading the plugin chain")?
        .with_precedence(config.plugins.precedence.clone())
        .bench_after(BENCH_AFTER);
    if config.plugins.watch {
        chain.watch(Some(config.watch_source(in_chain))).context("watching the plugin folders")?;
    }
    if let Some(opts) = config.vocab_options() {
        pipeline::ensure_vocab(&opts, &mut Console::default()).context("vocabulary")?;
    }
    let (own, named): (Vec<&String>, Vec<AdapterSpec>) = {
        let mut own = Vec::new();
        let mut named = Vec::new();
        for a in &args.adapters {
            match AdapterSpec::parse(a) {
                Some(spec) => named.push(spec),
                None => own.push(a),
            }
        }
        (own, named)
    };
    if own.len() > 1 || (args.base && !own.is_empty()) {
        anyhow::bail!("--adapter: one DIR at most for the served model itself (and none with --base); name the others: --adapter NAME=DIR");
    }
    let unmerged = !named.is_empty() || args.adapters_dir.is_some();
    if unmerged && args.engine == EngineKind::Ort {
        anyhow::bail!("--adapter NAME=DIR and --adapters-dir need --engine candle: an ONNX export has its one adapter merged in");
    }
    let adapter = pipeline::default_adapter(&config, own.first().map(|d| std::path::Path::new(d.as_str())), args.base);
    let folder = match &args.adapters_dir {
        Some(dir) => Some(AdapterFolder::watch(dir)?),
        None => None,
    };
    let opts = ServeOptions {
        addr: args.addr,
        model_name: config.name.clone(),
        max_body_bytes: args.max_body_bytes,
        max_tokens: args.max_tokens,
        timeout: Duration::from_millis(args.timeout_ms),
        queue: args.queue,
        max_batch: args.max_batch,
        unmerged,
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        prompts: PromptOptions::of(config.train.as_ref()),
        task: medtune::artifacts::TaskLabels::of(&config),
    };
    let state = AppState::new(opts, chain);
    let loader = state.clone();
    let onnx = args.onnx.clone().unwrap_or_else(|| config.run_dir().join("onnx"));
    let engine = args.engine;
    std::thread::spawn(move || {
        let models = loader.models().clone();
        let loaded = (|| -> anyhow::Result<medtune::engine::Engine> {
            if engine == EngineKind::Ort {
                return Ok(pipeline::ort_engine_for(&config, &onnx)?);
            }
            let (_, mut m) = pipeline::load_model(&config)?;
            match &adapter {
                Some(dir) if unmerged => {
                    let lora = medtune::serve::load_adapter(dir, &m.llama).with_context(|| format!("adapter {}", dir.display()))?;
                    models.set_main(lora);
                    eprintln!("serving {} with adapter {} (unmerged)", config.name, dir.display());
                }
                Some(dir) => {
                    pipeline::merge_adapter(&mut m, dir)?;
                    eprintln!("serving {} with adapter {}", config.name, dir.display());
                }
                None => {}
            }
            for spec in &named {
                models.add_given(spec, &m.llama).map_err(anyhow::Error::msg)?;
                eprintln!("serving {} with adapter {}", spec.name, spec.dir.display());
            }
            if let Some(f) = &folder {
                models.rescan(f.dir(), &m.llama, &mut |line| eprintln!("{line}"));
            }
            Ok(medtune::engine::Engine::Candle(m))
        })();
        if let Err(e) = &loaded {
            eprintln!("error: the model failed to load: {e:#}");
        } else {
            eprintln!("model loaded");
        }
        loader.set_model(loaded.map_err(|e| format!("{e:#}")));
        if let (Some(f), Some(engine)) = (folder, loader.engine())
            && let Err(e) = f.serve(engine, models)
        {
            eprintln!("error: the adapters folder is not watched: {e}");
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime
        .block_on(serve(state, |addr| {
            println!("listening on http://{addr}");
            let _ = std::io::stdout().flush();
        }))
        .with_context(|| format!("serving on {}", args.addr))?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
