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
    ("annotation-metrics", "annotation_metrics"),
    ("text-metrics", "text_metrics"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ is inside the repository").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    rerun_if_changed_tree(&root.join("plugins"));
    rerun_if_changed_tree(&root.join("wit"));
    match contract_version(&root.join("wit")) {
        Ok(version) => println!("cargo:rustc-env=MEDTUNE_CONTRACT_VERSION={version}"),
        Err(message) => {
            println!("cargo::error={message}");
            return;
        }
    }
    // First, before any long compile: the wasm32-wasip2 target and a writable build folder.
    let Some(target_dir) = guest_build_ready(&root) else { return };
    let wasm = build_guests(&root.join("plugins/Cargo.toml"), DEFAULT_PLUGINS, &target_dir).unwrap_or_else(|e| fail(&e));
    let mut table = String::from("&[\n");
    for ((package, _), path) in DEFAULT_PLUGINS.iter().zip(wasm) {
        let dest = out_dir.join(format!("{package}.wasm"));
        std::fs::copy(&path, &dest).unwrap_or_else(|e| fail(&format!("copy {} to {}: {e}", path.display(), dest.display())));
        writeln!(table, "    ({package:?}, include_bytes!({:?})),", dest.display().to_string()).expect("write to String");
    }
    table.push(']');
    std::fs::write(out_dir.join("builtins.rs"), table).expect("write builtins.rs");
    crate_versions(&root.join("Cargo.lock"), &out_dir);
    sdk_files(&root, &out_dir);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx(&manifest_dir.join("src/cuda/nf4.cu"), &out_dir.join("nf4.ptx"));
        ptx(&manifest_dir.join("src/cuda/fused.cu"), &out_dir.join("fused.ptx"));
        ptx(&manifest_dir.join("src/cuda/decode.cu"), &out_dir.join("decode.ptx"));
    }
}

/// The contract version from the WIT package line (`package medtune:plugin@X;`), which every
/// file of `wit/` must state alike.
fn contract_version(wit: &Path) -> Result<String, String> {
    let mut found: Option<(String, PathBuf)> = None;
    let entries = std::fs::read_dir(wit).map_err(|e| format!("cannot read the plugin contract {}: {e}", wit.display()))?;
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wit")).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let line = text.lines().map(str::trim).find(|l| l.starts_with("package "));
        let version = line.and_then(|l| l.trim_end_matches(';').split_once("medtune:plugin@")).map(|(_, v)| v.trim().to_owned());
        let Some(version) = version else { return Err(format!("{}: no `package medtune:plugin@VERSION;` line", file.display())) };
        match &found {
            Some((v, first)) if *v != version => {
                return Err(format!("{} says version {v} and {} says {version}", first.display(), file.display()));
            }
            Some(_) => {}
            None => found = Some((version, file)),
        }
    }
    found.map(|(v, _)| v).ok_or_else(|| format!("{}: no .wit file", wit.display()))
}

/// A `cuda` feature's kernel file (NF4 dequantization, the fused training ops), compiled to
/// PTX by nvcc (which candle's kernels need too) for `CUDA_COMPUTE_CAP` (default 90).
fn ptx(source: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let status = std::process::Command::new("nvcc")
        .args(["--ptx", "-O3", &format!("-arch=sm_{cap}"), "-o"])
        .arg(out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| fail(&format!("the cuda feature needs nvcc (the CUDA toolkit) on PATH to compile {}: {e}", source.display())));
    if !status.success() {
        fail(&format!("nvcc failed on {}: its messages are above", source.display()));
    }
}

/// The files `medtune plugin new` copies into a plugin crate so that it builds anywhere: the
/// SDK, the medtext crate it uses, the contract and the guest workspace's lock file, as a
/// table of (path in the crate, bytes) keeping the repository's layout under `vendor/`.
fn sdk_files(root: &Path, out_dir: &Path) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (dir, exts) in [("plugins/sdk", &["rs", "toml"][..]), ("plugins/medtext", &["rs", "toml"][..]), ("wit", &["wit"][..])] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(&d).unwrap_or_else(|e| fail(&format!("{}: {e}", d.display()))).flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
                // the SDK builds against the current contract only; no build output
                if p.is_dir() && dir != "wit" && !rel.ends_with("/target") {
                    stack.push(p);
                } else if p.is_file() && p.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
                    files.push((format!("vendor/{rel}"), p));
                }
            }
        }
    }
    files.push(("Cargo.lock".into(), root.join("plugins/Cargo.lock")));
    let mut table = String::from("&[\n");
    for (rel, path) in files {
        writeln!(table, "    ({rel:?}, include_bytes!({:?})),", path.display().to_string()).expect("write to String");
    }
    table.push(']');
    std::fs::write(out_dir.join("sdk_files.rs"), table).expect("write sdk_files.rs");
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
