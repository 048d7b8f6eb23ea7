// The wasm32-wasip2 standard library, checked by the build scripts before any guest is built.
// The repository's rustc wrapper (host/build/rustc-wrapper.sh, named in .cargo/config.toml)
// adds it with rustup at the start of every build; this check is for builds that bypass the
// wrapper: it stops the build with one line naming what to run. Shared by host/build.rs and
// tests/build.rs via include!, and unit-tested from tests/src/build_check.rs.

/// The target the plugins build for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Whether `rustc` has the wasm32-wasip2 standard library; the error is one line saying what
/// is missing and what to run (for the toolchain `rustup_toolchain` names, `RUSTUP_TOOLCHAIN`
/// as rustup's proxies set it, or the sysroot's folder when it is inside rustup's
/// `toolchains/`).
fn check_wasm_target(rustc: &Path, rustup_toolchain: Option<String>) -> Result<(), String> {
    let libdir = wasm_libdir(rustc)?;
    if has_std(&libdir) {
        return Ok(());
    }
    let sysroot = libdir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_default();
    let toolchain = rustup_toolchain.filter(|t| !t.is_empty()).or_else(|| {
        let in_rustup = sysroot.parent().and_then(Path::file_name).is_some_and(|n| n == "toolchains");
        in_rustup.then(|| sysroot.file_name()?.to_str().map(str::to_owned)).flatten()
    });
    Err(match toolchain {
        Some(toolchain) => format!(
            "the plugins build for {WASM_TARGET}, which toolchain {toolchain} lacks: run `rustup target add {WASM_TARGET} --toolchain {toolchain}` \
             (the repository's rustc wrapper adds it by itself unless RUSTC_WRAPPER replaces it)"
        ),
        None => format!(
            "the plugins build for {WASM_TARGET}, whose standard library is not installed for the Rust in {} \
             (not a rustup toolchain): install it, with rustup `rustup target add {WASM_TARGET}`",
            sysroot.display()
        ),
    })
}

/// Where `rustc` keeps the wasm32-wasip2 standard library (whether or not it is there).
fn wasm_libdir(rustc: &Path) -> Result<PathBuf, String> {
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rustc.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().next().map(str::trim) {
        Some(dir) if output.status.success() && !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err(format!(
            "{} does not know the {WASM_TARGET} target (Rust 1.82 or later has it): {}",
            rustc.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// Whether `libdir` holds a standard library (`libcore-*.rlib`).
fn has_std(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("libcore-") && n.ends_with(".rlib")))
    })
}

/// The build script's side: true when the target is there; else one cargo error line and
/// false (the script then stops).
fn wasm_target_ready() -> bool {
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let rustc = std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
    match check_wasm_target(&rustc, std::env::var("RUSTUP_TOOLCHAIN").ok()) {
        Ok(()) => true,
        Err(message) => {
            println!("cargo::error={message}");
            false
        }
    }
}

/// The folder the guests are built in: `$CARGO_TARGET_DIR/wasm` when that is set, else
/// `target/wasm` in the repository. Created here, so that a read-only source tree is one line
/// saying what to do.
fn guest_target_dir(root: &Path) -> Result<PathBuf, String> {
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let base = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let dir = base.join("wasm");
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!("cannot create the plugins' build folder {}: {e}; set CARGO_TARGET_DIR to a writable folder", dir.display())
    })?;
    Ok(dir)
}
