//! `medtune plugin new`: a plugin crate for one kind, ready to build and test.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use medtune::plugin::kind_name;
use medtune::plugin::types::PluginKind;

/// The SDK, the medtext crate it uses, the contract and the guest lock file, embedded by
/// build.rs as (path in the plugin crate, bytes): a scaffold builds anywhere, from any copy of
/// the binary.
const SDK_FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The guest workspace's manifest: the package fields and dependency versions the vendored
/// crates inherit.
const GUEST_WORKSPACE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/Cargo.toml"));

/// Creates `dir/name/` with Cargo.toml, src/lib.rs and README.md, and the SDK under `vendor/`
/// (or a path dependency on `sdk`, a medtune-plugin-sdk folder, when given).
pub fn create(name: &str, kind: PluginKind, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("plugin name {name:?}: use lowercase letters, digits and dashes, starting with a letter");
    }
    let sdk_path = match sdk {
        Some(p) => {
            let p = p.canonicalize().with_context(|| format!("--sdk {}: no such folder", p.display()))?;
            if !p.join("Cargo.toml").is_file() {
                bail!("--sdk {}: not a crate folder (no Cargo.toml)", p.display());
            }
            p.display().to_string()
        }
        None => "vendor/plugins/sdk".to_owned(),
    };
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let kind_s = kind_name(kind);
    let workspace = if sdk.is_some() { "[workspace]\n".to_owned() } else { vendored_workspace()? };
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A medtune {kind_s} plugin"

[lib]
crate-type = ["cdylib"]

[dependencies]
medtune-plugin-sdk = {{ path = {sdk_path:?}, features = ["{kind_s}"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# A plugin is a workspace of its own: it builds for wasm32-wasip2, apart from any host.
{workspace}"#
    );
    let readme = format!(
        "# {name}\n\nA medtune {kind_s} plugin.\n\n```sh\nmedtune plugin build .        # cargo build --target wasm32-wasip2 --release\nmedtune plugin test .         # run it on bundled PubMedQA samples\n```\n\nDrop `target/wasm32-wasip2/release/{}.wasm` into a plugin folder of a running host to swap it in.\n",
        name.replace('-', "_")
    );
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("Cargo.toml".into(), manifest.into_bytes()),
        ("README.md".into(), readme.into_bytes()),
        ("src/lib.rs".into(), source(name, kind).into_bytes()),
    ];
    if sdk.is_none() {
        for (rel, bytes) in SDK_FILES {
            let bytes = match *rel {
                // medtext belongs to the repository's root workspace there; here to the plugin's
                "vendor/plugins/medtext/Cargo.toml" => String::from_utf8_lossy(bytes).replace("workspace = \"../..\"\n", "").into_bytes(),
                _ => bytes.to_vec(),
            };
            files.push(((*rel).to_owned(), bytes));
        }
    }
    for (file, bytes) in files {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

/// The `[workspace]` of a plugin crate with the vendored SDK: the package fields and
/// dependency versions of the guest workspace medtune was built with.
fn vendored_workspace() -> anyhow::Result<String> {
    let doc: toml::Table = GUEST_WORKSPACE.parse().context("the embedded guest workspace manifest")?;
    let ws = doc.get("workspace").and_then(toml::Value::as_table).context("the embedded guest manifest has no [workspace]")?;
    let package = ws.get("package").and_then(toml::Value::as_table).context("no [workspace.package]")?;
    let deps = ws.get("dependencies").and_then(toml::Value::as_table).context("no [workspace.dependencies]")?;
    let mut out = String::from(
        "# The SDK and the crate it uses are in vendor/ (copied by `medtune plugin new`).\n[workspace]\n\n[workspace.package]\n",
    );
    out.push_str(&toml::to_string(package).context("workspace.package")?);
    out.push_str("\n[workspace.dependencies]\n");
    for (name, spec) in deps {
        match name.as_str() {
            "medtune-plugin-sdk" => {}
            "medtext" => out.push_str("medtext = { path = \"vendor/plugins/medtext\" }\n"),
            _ => out.push_str(&format!("{name} = {spec}\n")),
        }
    }
    Ok(out)
}

fn source(name: &str, kind: PluginKind) -> String {
    let body = match kind {
        PluginKind::Normalizer => NORMALIZER,
        PluginKind::Disambiguator => DISAMBIGUATOR,
        PluginKind::Augmenter => AUGMENTER,
        PluginKind::Metric => METRIC,
    };
    format!("//! {name}: a medtune {} plugin.\n{body}", kind_name(kind))
}

const NORMALIZER: &str = r#"
use medtune_plugin_sdk::{
    register_normalizer, CharOffsets, Concept, Document, Mention, Normalizer, PluginError, Settings,
};

/// What to find: (text, concept id, preferred name). Replace with your vocabulary, or read
/// one from a folder the host grants (`std::fs::read_to_string("/vocab/...")`).
const TERMS: &[(&str, &str, &str)] = &[
    ("myocardial infarction", "D009203", "Myocardial Infarction"),
    ("diabetes", "D003920", "Diabetes Mellitus"),
    ("aspirin", "D001241", "Aspirin"),
    ("cell death", "D002470", "Cell Death"),
];

struct Plugin {
    min_len: usize,
}

impl Normalizer for Plugin {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self { min_len: settings.parse_or("min_len", 3)? })
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        // ASCII lowercasing keeps byte offsets; spans are converted to characters below.
        let lower = doc.text.to_ascii_lowercase();
        let offsets = CharOffsets::new(&doc.text);
        let mut found = Vec::new();
        for (term, id, name) in TERMS.iter().filter(|t| t.0.len() >= self.min_len) {
            for (start, _) in lower.match_indices(term) {
                found.push(Mention {
                    span: offsets.span(start, start + term.len()),
                    concept: Concept { id: (*id).into(), preferred_name: (*name).into() },
                    score: 1.0,
                });
            }
        }
        found.sort_by_key(|m| m.span.start);
        Ok(found)
    }
}

// the manifest: what the host checks the config against (add `grants: ["/vocab"],` when the
// plugin reads a granted folder)
register_normalizer!(Plugin,
    settings: { min_len: integer = "3", "shortest text matched" });
"#;

const DISAMBIGUATOR: &str = r#"
use medtune_plugin_sdk::{
    register_disambiguator, Annotated, CharOffsets, Disambiguator, Expansion, PluginError, Settings,
};

/// Senses of `MI` and words that point to each.
const SENSES: &[(&str, &[&str])] = &[
    ("myocardial infarction", &["cardiac", "heart", "coronary", "troponin", "chest"]),
    ("microinfarction", &["brain", "cerebral", "cortical", "dementia", "mri"]),
];

struct Plugin {
    threshold: f32,
}

impl Disambiguator for Plugin {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self { threshold: settings.parse_or("threshold", 0.5)? })
    }

    fn disambiguate(&self, doc: &Annotated) -> Result<Vec<Expansion>, PluginError> {
        let text = &doc.document.text;
        let lower = text.to_ascii_lowercase();
        let votes: Vec<usize> =
            SENSES.iter().map(|(_, cues)| cues.iter().map(|c| lower.matches(c).count()).sum()).collect();
        let total: usize = votes.iter().sum();
        let Some((best, &n)) = votes.iter().enumerate().max_by_key(|(_, n)| **n) else { return Ok(vec![]) };
        let confidence = if total == 0 { 0.0 } else { n as f32 / total as f32 };
        if confidence < self.threshold {
            return Ok(vec![]);
        }
        let offsets = CharOffsets::new(text);
        let bytes = text.as_bytes();
        Ok(text
            .match_indices("MI")
            .filter(|(i, _)| {
                let before = *i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
                let after = i + 2 >= bytes.len() || !bytes[i + 2].is_ascii_alphanumeric();
                before && after
            })
            .map(|(i, _)| Expansion {
                span: offsets.span(i, i + 2),
                abbreviation: "MI".into(),
                long_form: SENSES[best].0.into(),
                confidence,
            })
            .collect())
    }
}

register_disambiguator!(Plugin,
    settings: { threshold: float = "0.5", "lowest confidence of an expansion kept" });
"#;

const AUGMENTER: &str = r#"
use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings};

/// Swaps a word for a synonym with probability `rate`, making one new record.
struct Plugin {
    rate: f64,
}

const SYNONYMS: &[(&str, &str)] = &[("patients", "subjects"), ("study", "trial"), ("children", "paediatric patients")];

impl Augmenter for Plugin {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let rate: f64 = settings.parse_or("rate", 0.5)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(PluginError::Config(format!("rate {rate} is not in [0, 1]")));
        }
        Ok(Self { rate })
    }

    fn augment(&self, doc: &Annotated, rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        // every field of the record: question, context, options, chat turns
        let mut swapped = Vec::new();
        let new = doc.document.map_fields(|field, text| {
            let mut text = text.to_owned();
            for (from, to) in SYNONYMS {
                if text.contains(from) && rng.next_f64() < self.rate {
                    text = text.replace(from, to);
                    swapped.push(format!("{from}->{to} in {}", field.name));
                }
            }
            text
        });
        if swapped.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![new.into_derived(format!("synonyms: {}", swapped.join(", ")))])
    }
}

register_augmenter!(Plugin,
    settings: { rate: float = "0.5", "chance that a word is swapped" });
"#;

const METRIC: &str = r#"
use medtune_plugin_sdk::{register_metric, Metric, PluginError, Prediction, Reference, Score, Settings};

/// The share of predictions equal to their reference.
struct Plugin;

impl Metric for Plugin {
    fn new(_settings: &Settings) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    fn compute(&self, predictions: &[Prediction], references: &[Reference]) -> Result<Vec<Score>, PluginError> {
        if predictions.is_empty() {
            return Err(PluginError::InvalidInput("no predictions".into()));
        }
        let right = predictions.iter().zip(references).filter(|(p, r)| p.label == r.label).count();
        Ok(vec![Score { name: "accuracy".into(), value: right as f64 / predictions.len() as f64 }])
    }
}

register_metric!(Plugin);
"#;
