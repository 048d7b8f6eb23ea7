// Builds guest crates for wasm32-wasip2 with a nested cargo, one package per invocation
// (each plugin enables a different kind feature of the SDK, so they must not be unified).
// Shared by host/build.rs (default plugins) and tests/build.rs (test guests) via include!.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` of the workspace at `manifest` into `target_dir`; returns the
/// `.wasm` path of each package's cdylib (named `lib_name`s).
fn build_guests(manifest: &Path, packages: &[(&str, &str)], target_dir: &Path) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut out = Vec::new();
    for (package, lib_name) in packages {
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(manifest)
            .args(["-p", package, "--target-dir"])
            .arg(target_dir);
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
            cmd.env_remove(var);
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        if !status.success() {
            panic!(
                "building guest {package} ({}) for wasm32-wasip2 failed; is the target installed? \
                 (`rustup target add wasm32-wasip2`)",
                manifest.display()
            );
        }
        out.push(target_dir.join("wasm32-wasip2/release").join(format!("{lib_name}.wasm")));
    }
    out
}

/// Tells cargo to re-run the build script when anything under `dir` changes.
fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
}
