//! Builds the default plugins (the guest workspace in plugins/) and embeds them in the binary.

use std::fmt::Write as _;

include!("build/guests.rs");

/// (package, cdylib name) of every default plugin.
const DEFAULT_PLUGINS: &[(&str, &str)] = &[
    ("terminology-normalizer", "terminology_normalizer"),
    ("abbreviation-disambiguator", "abbreviation_disambiguator"),
    ("synonym-swap", "synonym_swap"),
    ("entity-mask", "entity_mask"),
    ("rare-concept-oversampler", "rare_concept_oversampler"),
    ("label-balancer", "label_balancer"),
    ("classification-metrics", "classification_metrics"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ is inside the repository").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    rerun_if_changed_tree(&root.join("plugins"));
    rerun_if_changed_tree(&root.join("wit"));
    let target_dir = root.join("target").join("wasm");
    let wasm = build_guests(&root.join("plugins/Cargo.toml"), DEFAULT_PLUGINS, &target_dir);
    let mut table = String::from("&[\n");
    for ((package, _), path) in DEFAULT_PLUGINS.iter().zip(wasm) {
        let dest = out_dir.join(format!("{package}.wasm"));
        std::fs::copy(&path, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        writeln!(table, "    ({package:?}, include_bytes!({:?})),", dest.display().to_string()).expect("write to String");
    }
    table.push(']');
    std::fs::write(out_dir.join("builtins.rs"), table).expect("write builtins.rs");
    crate_versions(&root.join("Cargo.lock"), &out_dir);
}

/// The versions of the crates a run's manifest names, from Cargo.lock, as a Rust table.
fn crate_versions(lock: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut table = String::from("&[\n");
    for name in ["candle-core", "candle-nn", "tokenizers", "wasmtime", "safetensors"] {
        let needle = format!("name = \"{name}\"\nversion = \"");
        if let Some(at) = text.find(&needle) {
            let rest = &text[at + needle.len()..];
            let version = rest.split('"').next().unwrap_or("");
            writeln!(table, "    ({name:?}, {version:?}),").expect("write to String");
        }
    }
    table.push(']');
    std::fs::write(out_dir.join("crate_versions.rs"), table).expect("write crate_versions.rs");
}
