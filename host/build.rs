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
}
