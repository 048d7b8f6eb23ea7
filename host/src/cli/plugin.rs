//! `medtune plugin new|build|test|list`: the plugin author's loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use medtune::config::Config;
use medtune::data::{self, Record};
use medtune::plugin::types::{Annotated, Document, Mention, PluginKind, Prediction, Reference};
use medtune::plugin::{
    Grant, Manifest, Plugin, PluginEngine, PluginSet, Sandbox, builtin, builtins, kind_name, parse_kind, read_manifest, wasm_files,
};

use super::{EXIT_PARTIAL, scaffold};

/// The sample documents `plugin test` uses when no `--input` is given (PubMedQA, MIT).
const SAMPLE: &str = include_str!("../../../examples/data/pubmedqa/sample.jsonl");

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin crate that builds to a component.
    New {
        /// The plugin's name (lowercase, dashes), also its crate name.
        name: String,
        /// Its kind.
        #[arg(long, value_parser = ["normalizer", "disambiguator", "augmenter", "metric"])]
        kind: String,
        /// Where to create it (default: the current folder).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A medtune-plugin-sdk folder to depend on by path (default: a copy of the SDK this
        /// binary was built with, written into the crate's vendor/ folder).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate: `cargo build --target wasm32-wasip2 --release`.
    Build {
        /// The crate's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Run a plugin on sample documents and show what it returned.
    Test {
        /// A `.wasm` component, a plugin crate folder (built first), or `builtin:NAME`.
        path: PathBuf,
        /// JSONL input (`{id, question, context, answer}`); default: 8 bundled PubMedQA records.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Grant a read-only folder, as GUEST=HOST (e.g. /vocab=vocab/).
        #[arg(long = "grant", value_name = "GUEST=HOST")]
        grants: Vec<String>,
        /// A setting passed to `configure`, as KEY=VALUE.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Records per call.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Wall-clock limit of one call.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Memory cap.
        #[arg(long, default_value_t = 512)]
        memory_mib: usize,
        /// Seed for augmenters.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Annotate the records first with this config's normalizers and disambiguators (as
        /// the data stage would), so disambiguators and augmenters see mentions.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load a config's plugin set, watch its plugin folders, and after every swap (or
    /// refusal) run the sample documents through the chain: a hot-swap console.
    Watch {
        /// The run's TOML config (its `plugins.dirs` are watched).
        #[arg(long)]
        config: PathBuf,
        /// JSONL input; default: 8 bundled PubMedQA records.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Stop after this many swaps and refusals (default: run until killed).
        #[arg(long)]
        max_events: Option<usize>,
    },
    /// Show the loaded plugins with versions and content hashes.
    List {
        /// The plugin set of this config (default: the built-in plugins).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also list the plugins in this folder.
        #[arg(long)]
        dir: Vec<PathBuf>,
    },
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New { name, kind, dir, sdk } => {
            let kind = parse_kind(&kind).context("unknown kind")?;
            let path = scaffold::create(&name, kind, &dir, sdk.as_deref())?;
            println!("created {} ({} plugin)", path.display(), kind_name(kind));
            println!("next: medtune plugin test {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { path } => {
            let wasm = build(&path)?;
            println!("{}", wasm.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test { path, input, grants, settings, batch_size, timeout_ms, memory_mib, seed, config } => {
            let sandbox = Sandbox {
                memory_cap: memory_mib << 20,
                timeout: Duration::from_millis(timeout_ms),
                grants: grants.iter().map(|g| parse_grant(g)).collect::<anyhow::Result<_>>()?,
                settings: settings.iter().map(|s| parse_pair(s, "--set")).collect::<anyhow::Result<_>>()?,
                // one run on sample documents: no second instance kept ahead
                spare: false,
            };
            let mut records = input_records(input.as_deref())?;
            if let Some(config) = config {
                annotate_with(&config, &mut records, batch_size.max(1))?;
            }
            let engine = PluginEngine::new(None)?;
            let t = Instant::now();
            let mut plugin = match path.to_str().and_then(|p| p.strip_prefix("builtin:")) {
                Some(name) => {
                    let b = builtin(name).with_context(|| {
                        let names: Vec<&str> = builtins().map(|b| b.name).collect();
                        format!("no built-in plugin {name} (built in: {})", names.join(", "))
                    })?;
                    engine.load(b.wasm, &format!("builtin:{name}"), None, sandbox)?
                }
                None if path.is_dir() => engine.load_file(&build(&path)?, None, sandbox)?,
                None => engine.load_file(&path, None, sandbox)?,
            };
            println!(
                "{} ({} plugin, contract {}, sha256 {}) loaded in {:.1} ms",
                plugin.id(),
                kind_name(plugin.kind()),
                plugin.info().contract_version,
                &plugin.hash()[..12],
                t.elapsed().as_secs_f64() * 1e3
            );
            let failed = try_plugin(&mut plugin, &records, batch_size.max(1), seed);
            if failed > 0 {
                eprintln!("{failed} record(s) failed");
                return Ok(ExitCode::from(EXIT_PARTIAL));
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::List { config, dir } => list(config.as_deref(), &dir),
        PluginCommand::Watch { config, input, max_events } => watch(&config, input.as_deref(), max_events),
    }
}

/// The records of `--input`, or the bundled sample.
fn input_records(input: Option<&Path>) -> anyhow::Result<Vec<Record>> {
    let records: Vec<Record> = match input {
        Some(p) => {
            let input = data::read(p, &data::InputSpec::detected());
            for e in &input.errors {
                eprintln!("error: {e}");
            }
            input.records
        }
        None => {
            SAMPLE.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| sample_record(&v)).collect()
        }
    };
    if records.is_empty() {
        bail!("no input records");
    }
    Ok(records)
}

fn watch(config: &Path, input: Option<&Path>, max_events: Option<usize>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let records = input_records(input)?;
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
    let mut set = PluginSet::load(engine, config.slots(), config.plugin_dirs())?.with_precedence(config.plugins.precedence.clone());
    set.watch(Some(config.watch_source(|_| true)))?;
    let show = |set: &mut PluginSet| {
        let mut batch = records.clone();
        data::annotate(set, &mut batch, 64, false, |_, _| {});
        let derived = data::augment(set, &mut batch, 64, 0, |_| Vec::new(), &mut |_| {});
        for r in &batch {
            let ids: Vec<&str> = r.mentions.iter().map(|m| m.concept.id.as_str()).collect();
            let expansions: Vec<String> = r.expansions.iter().map(|e| format!("{}={}", e.abbreviation, e.long_form)).collect();
            let made: Vec<String> = derived
                .records
                .iter()
                .filter_map(|d| {
                    d.augmentation.as_ref().filter(|a| a.source == r.id).map(|a| format!("{} by {}: {}", d.id, a.plugin, a.note))
                })
                .collect();
            let failures: Vec<String> = r.failures.iter().map(|f| f.reason.clone()).collect();
            println!(
                "  {}: [{}]{}{}{}",
                r.id,
                ids.join(", "),
                if expansions.is_empty() { String::new() } else { format!(" expansions [{}]", expansions.join(", ")) },
                if made.is_empty() { String::new() } else { format!(" derived [{}]", made.join("; ")) },
                if failures.is_empty() { String::new() } else { format!(" FAILED: {}", failures.join("; ")) }
            );
        }
        // metrics score the records' answers against a constant prediction, as `plugin test` does
        let preds: Vec<Prediction> = batch.iter().map(|r| Prediction { id: r.id.clone(), label: "yes".into() }).collect();
        let refs: Vec<Reference> =
            batch.iter().map(|r| Reference { id: r.id.clone(), label: r.answer.clone().unwrap_or_default(), tags: Vec::new() }).collect();
        for p in set.plugins_mut().iter_mut().filter(|p| p.kind() == PluginKind::Metric) {
            let line = match p.compute(&preds, &refs) {
                Ok(Ok(scores)) => scores.iter().map(|s| format!("{} = {:.4}", s.name, s.value)).collect::<Vec<_>>().join(", "),
                Ok(Err(e)) => format!("FAILED: {e}"),
                Err(e) => format!("FAILED: {e}"),
            };
            println!("  {}: {line}", p.id());
        }
    };
    let ids: Vec<String> = set.plugins().iter().map(|p| p.id()).collect();
    println!(
        "watching {} with chain {}",
        config.plugin_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        ids.join(" -> ")
    );
    show(&mut set);
    let mut events = 0;
    while max_events.is_none_or(|m| events < m) {
        std::thread::sleep(Duration::from_millis(20));
        let log = set.apply_swaps();
        if log.is_empty() {
            continue;
        }
        for line in &log {
            println!("{line}");
        }
        events += log.len();
        show(&mut set);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `config`'s normalizers and disambiguators over `records`, saying what they found.
fn annotate_with(config: &Path, records: &mut [Record], batch_size: usize) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let specs = config.slots().into_iter().filter(|s| matches!(s.kind, PluginKind::Normalizer | PluginKind::Disambiguator)).collect();
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
    let mut set = PluginSet::load(engine, specs, config.plugin_dirs())?.with_precedence(config.plugins.precedence.clone());
    let report = data::annotate(&mut set, records, batch_size, false, |_, _| {});
    let ids: Vec<String> = set.plugins().iter().map(|p| p.id()).collect();
    let (mentions, expansions) = records.iter().fold((0, 0), |(m, x), r| (m + r.mentions.len(), x + r.expansions.len()));
    println!("annotated by {}: {mentions} mention(s), {expansions} expansion(s)", ids.join(" -> "));
    for f in &report.failures {
        eprintln!("warning: {f}");
    }
    Ok(())
}

fn sample_record(v: &serde_json::Value) -> Option<Record> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let meshes = v.get("meshes")?.as_array()?.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect();
    Some(Record::new(s("id")?, s("question")?, s("context")?, s("answer"), meshes, "sample".into()))
}

fn parse_pair(s: &str, flag: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s.split_once('=').with_context(|| format!("{flag} {s:?}: expected KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_grant(s: &str) -> anyhow::Result<Grant> {
    let (guest, host) = parse_pair(s, "--grant")?;
    if !Path::new(&host).is_dir() {
        bail!("--grant {s}: {host} is not a folder");
    }
    Ok(Grant { host: PathBuf::from(host), guest })
}

/// Runs `plugin` over `records` batch by batch and prints what it returned; a failed call is
/// narrowed down to the records at fault, as the data stage does.
fn try_plugin(plugin: &mut Plugin, records: &[Record], batch_size: usize, seed: u64) -> usize {
    let mut failed = 0;
    for (b, batch) in records.chunks(batch_size).enumerate() {
        let t = Instant::now();
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        let annotated: Vec<Annotated> = batch
            .iter()
            .map(|r| Annotated { document: r.document(), mentions: data::plain(&r.mentions), expansions: data::plain(&r.expansions) })
            .collect();
        let shown: Vec<Result<String, String>> = match plugin.kind() {
            PluginKind::Normalizer => {
                let docs: Vec<Document> = annotated.into_iter().map(|a| a.document).collect();
                let out = data::isolate(plugin, &docs, &ids, |p, d| p.normalize(d));
                out.into_iter().zip(&docs).map(|(r, d)| r.map(|ms| show_mentions(d, &ms)).map_err(|f| f.reason)).collect()
            }
            PluginKind::Disambiguator => {
                let out = data::isolate(plugin, &annotated, &ids, |p, d| p.disambiguate(d));
                out.into_iter()
                    .map(|r| {
                        r.map(|xs| {
                            let shown: Vec<String> = xs
                                .iter()
                                .map(|x| {
                                    format!(
                                        "{} [{}..{}] -> {} ({:.2})",
                                        x.abbreviation, x.span.start, x.span.end, x.long_form, x.confidence
                                    )
                                })
                                .collect();
                            format!("{} expansion(s)\n    {}", xs.len(), shown.join("\n    "))
                        })
                        .map_err(|f| f.reason)
                    })
                    .collect()
            }
            PluginKind::Augmenter => {
                let out = data::isolate(plugin, &annotated, &ids, |p, d| p.augment(d, seed));
                out.into_iter()
                    .zip(&annotated)
                    .map(|(r, a)| {
                        r.map(|xs| {
                            let shown: Vec<String> =
                                xs.iter().map(|x| format!("{}\n      {}", x.note, word_diff(&a.document.text, &x.text))).collect();
                            format!("{} new record(s){}", xs.len(), shown.iter().map(|l| format!("\n    {l}")).collect::<String>())
                        })
                        .map_err(|f| f.reason)
                    })
                    .collect()
            }
            PluginKind::Metric => {
                let preds: Vec<Prediction> = batch.iter().map(|r| Prediction { id: r.id.clone(), label: "yes".into() }).collect();
                let refs: Vec<Reference> = batch
                    .iter()
                    .map(|r| Reference { id: r.id.clone(), label: r.answer.clone().unwrap_or_default(), tags: Vec::new() })
                    .collect();
                let line = match plugin.compute(&preds, &refs) {
                    Ok(Ok(scores)) => Ok(scores.iter().map(|s| format!("{} = {:.4}", s.name, s.value)).collect::<Vec<_>>().join(", ")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let ms = t.elapsed().as_secs_f64() * 1e3;
                println!("batch {}: {} record(s) in {ms:.2} ms", b + 1, batch.len());
                match line {
                    Ok(l) => println!("  {l}"),
                    Err(e) => {
                        failed += batch.len();
                        println!("  FAILED: {e}");
                    }
                }
                continue;
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!("batch {}: {} record(s) in {ms:.2} ms ({:.3} ms/record)", b + 1, batch.len(), ms / batch.len() as f64);
        for (id, line) in ids.iter().zip(shown) {
            match line {
                Ok(l) => println!("  {id}: {l}"),
                Err(reason) => {
                    failed += 1;
                    println!("  {id}: FAILED: {reason}");
                }
            }
        }
    }
    failed
}

fn show_mentions(d: &Document, ms: &[Mention]) -> String {
    let chars: Vec<char> = d.text.chars().collect();
    let shown: Vec<String> = ms
        .iter()
        .map(|m| {
            let s: String = chars.get(m.span.start as usize..m.span.end as usize).unwrap_or_default().iter().collect();
            format!("{s:?} [{}..{}] -> {} {} ({:.2})", m.span.start, m.span.end, m.concept.id, m.concept.preferred_name, m.score)
        })
        .collect();
    format!("{} mention(s)\n    {}", ms.len(), shown.join("\n    "))
}

/// A derived text against its source, word by word: `[-removed-]{+added+}`, with runs of
/// unchanged words longer than a dozen cut to their ends.
fn word_diff(old: &str, new: &str) -> String {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_words(old, new);
    let mut out = String::new();
    let mut same = String::new();
    let flush_same = |same: &mut String, out: &mut String, last: bool| {
        let words: Vec<&str> = same.split_inclusive(char::is_whitespace).collect();
        if words.len() > 12 {
            let head: String = if out.is_empty() { String::new() } else { words[..4].concat() };
            let tail: String = if last { String::new() } else { words[words.len() - 4..].concat() };
            out.push_str(&format!("{head}… {tail}"));
        } else {
            out.push_str(same);
        }
        same.clear();
    };
    let mut changed = false;
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Equal => same.push_str(change.value()),
            tag => {
                flush_same(&mut same, &mut out, false);
                changed = true;
                let (open, close) = if tag == ChangeTag::Delete { ("[-", "-]") } else { ("{+", "+}") };
                out.push_str(&format!("{open}{}{close}", change.value()));
            }
        }
    }
    flush_same(&mut same, &mut out, true);
    if !changed {
        return "(text unchanged)".into();
    }
    out.replace('\n', " ")
}

/// Builds a plugin crate and returns its component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let doc: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let name = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: no package.name", manifest.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        if !wasm_target_installed() {
            bail!("cargo build of {} failed: the wasm32-wasip2 target is not installed (`rustup target add wasm32-wasip2`)", dir.display());
        }
        bail!("cargo build of {} failed: cargo's errors are above", dir.display());
    }
    let wasm = target_dir(dir).join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("the build did not produce {}", wasm.display());
    }
    Ok(wasm)
}

/// Whether the standard library for wasm32-wasip2 is where rustc looks for it.
fn wasm_target_installed() -> bool {
    let out = std::process::Command::new("rustc").args(["--print", "target-libdir", "--target", "wasm32-wasip2"]).output();
    out.ok().filter(|o| o.status.success()).is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir())
}

fn target_dir(dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| dir.join("target"))
}

fn list(config: Option<&Path>, dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    println!("{:<28} {:<10} {:<14} {:<14} origin", "plugin", "version", "kind", "sha256");
    let row = |name: &str, version: &str, kind: PluginKind, hash: &str, origin: &str, manifest: Option<&Manifest>| {
        println!("{name:<28} {version:<10} {:<14} {:<14} {origin}", kind_name(kind), &hash[..12.min(hash.len())]);
        match manifest {
            Some(m) => print!("{}", m.describe_needs()),
            None => println!("    no manifest (built without the SDK): its grants and settings are not checked"),
        }
    };
    let manifest_of = |bytes: &[u8]| read_manifest(bytes).ok().flatten();
    match config {
        Some(path) => {
            let config = Config::load(path)?;
            let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins")))?;
            let mut all_dirs = config.plugin_dirs();
            all_dirs.extend(dirs.iter().cloned());
            let set = PluginSet::load(engine, config.slots(), all_dirs)?;
            for p in set.plugins() {
                row(&p.info().name, &p.info().version, p.kind(), p.hash(), p.origin(), p.manifest());
            }
        }
        None => {
            let engine = PluginEngine::new(None)?;
            for b in builtins() {
                let (info, hash) = engine.inspect(b.wasm, &format!("builtin:{}", b.name))?;
                row(&info.name, &info.version, info.kind, &hash, &format!("builtin:{}", b.name), manifest_of(b.wasm).as_ref());
            }
            for dir in dirs {
                for f in wasm_files(dir)? {
                    let bytes = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
                    match engine.inspect(&bytes, &f.display().to_string()) {
                        Ok((info, hash)) => {
                            row(&info.name, &info.version, info.kind, &hash, &f.display().to_string(), manifest_of(&bytes).as_ref())
                        }
                        Err(e) => println!("refused: {e}"),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
