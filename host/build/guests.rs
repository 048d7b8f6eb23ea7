// Builds guest crates for wasm32-wasip2 with a nested cargo, one package per invocation
// (each plugin enables a different kind feature of the SDK, so they must not be unified).
// Shared by host/build.rs (default plugins) and tests/build.rs (test guests) via include!.

use std::path::{Path, PathBuf};
use std::process::Command;

include!("wasm_target.rs");

/// Builds `packages` of the workspace at `manifest` into `target_dir`; returns the
/// `.wasm` path of each package's cdylib (named `lib_name`s). A failed build is one line
/// naming the guest, after the compiler's own messages.
fn build_guests(manifest: &Path, packages: &[(&str, &str)], target_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut out = Vec::new();
    for (package, lib_name) in packages {
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--release", "--target", WASM_TARGET, "--manifest-path"])
            .arg(manifest)
            .args(["-p", package, "--target-dir"])
            .arg(target_dir);
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
            cmd.env_remove(var);
        }
        let status = cmd.status().map_err(|e| format!("cannot run {cargo} to build the guest {package}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building the guest {package} ({}) for {WASM_TARGET} failed: cargo's messages are above",
                manifest.display()
            ));
        }
        out.push(target_dir.join(WASM_TARGET).join("release").join(format!("{lib_name}.wasm")));
    }
    Ok(out)
}

/// The guests' build folder with the wasm32-wasip2 target in place, or `None` after one
/// cargo error line (the build script then returns: cargo stops the build).
fn guest_build_ready(root: &Path) -> Option<PathBuf> {
    let dir = match guest_target_dir(root) {
        Ok(dir) => dir,
        Err(message) => {
            println!("cargo::error={message}");
            return None;
        }
    };
    wasm_target_ready().then_some(dir)
}

/// Stops the build script after a failed guest build: the message on stderr, which cargo
/// shows after the compiler's messages, and exit status 1 (no panic, no backtrace).
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// Tells cargo to re-run the build script when anything under `dir` changes.
fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
}
