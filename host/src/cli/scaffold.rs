//! `medtune plugin new`: a plugin crate for one kind, ready to build and test.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use medtune::plugin::kind_name;
use medtune::plugin::types::PluginKind;

/// The SDK this binary was built beside.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// Creates `dir/name/` with Cargo.toml, src/lib.rs and README.md.
pub fn create(name: &str, kind: PluginKind, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("plugin name {name:?}: use lowercase letters, digits and dashes, starting with a letter");
    }
    let sdk = match sdk {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(BUILT_SDK),
    };
    let sdk = sdk.canonicalize().with_context(|| format!("medtune-plugin-sdk not found at {} (pass --sdk PATH)", sdk.display()))?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let kind_s = kind_name(kind);
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A medtune {kind_s} plugin"

[lib]
crate-type = ["cdylib"]

[dependencies]
medtune-plugin-sdk = {{ path = {sdk:?}, features = ["{kind_s}"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# A plugin is a workspace of its own: it builds for wasm32-wasip2, apart from any host.
[workspace]
"#,
        sdk = sdk.display().to_string()
    );
    let readme = format!(
        "# {name}\n\nA medtune {kind_s} plugin.\n\n```sh\nmedtune plugin build .        # cargo build --target wasm32-wasip2 --release\nmedtune plugin test .         # run it on bundled PubMedQA samples\n```\n\nDrop `target/wasm32-wasip2/release/{}.wasm` into a plugin folder of a running host to swap it in.\n",
        name.replace('-', "_")
    );
    std::fs::create_dir_all(root.join("src")).with_context(|| format!("cannot create {}", root.display()))?;
    for (file, text) in [("Cargo.toml", manifest), ("README.md", readme), ("src/lib.rs", source(name, kind))] {
        let path = root.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
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
