// The wasm32-wasip2 standard library, checked before any guest is built: when it is missing
// and rustup is there, it is added for the active toolchain (one line says so); otherwise the
// build stops with one line naming what to run. Shared by host/build.rs and tests/build.rs
// via include!, and unit-tested from tests/src/lib.rs.

/// The target the plugins build for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// What the check found or did.
#[derive(Debug, PartialEq, Eq)]
enum WasmTarget {
    /// The target's standard library was there already.
    Present,
    /// rustup added it for this toolchain.
    Added { toolchain: String },
}

/// Makes sure `rustc` has the wasm32-wasip2 standard library, adding it with `rustup` (the
/// program to run; `None` for the one on PATH) for the toolchain `rustup_toolchain` names
/// (`RUSTUP_TOOLCHAIN`, which rustup's proxies set) or the sysroot's folder name when the
/// sysroot is inside rustup's `toolchains/`. `lock` serializes concurrent build scripts. The
/// error is one line saying what is missing and what to run.
fn ensure_wasm_target(
    rustc: &Path,
    rustup: Option<&Path>,
    rustup_toolchain: Option<String>,
    lock: &Path,
) -> Result<WasmTarget, String> {
    let libdir = wasm_libdir(rustc)?;
    if has_std(&libdir) {
        return Ok(WasmTarget::Present);
    }
    // Two build scripts (host and tests) may get here at once: one adds, the other waits.
    let _guard = lock.parent().and_then(|dir| std::fs::create_dir_all(dir).ok()).and_then(|()| {
        let file = std::fs::File::create(lock).ok()?;
        file.lock().ok()?;
        Some(file)
    });
    if has_std(&libdir) {
        return Ok(WasmTarget::Present);
    }
    let manual = format!("`rustup target add {WASM_TARGET}`");
    let sysroot = libdir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_default();
    let toolchain = rustup_toolchain.filter(|t| !t.is_empty()).or_else(|| {
        let in_rustup = sysroot.parent().and_then(Path::file_name).is_some_and(|n| n == "toolchains");
        in_rustup.then(|| sysroot.file_name()?.to_str().map(str::to_owned)).flatten()
    });
    let rustup_program = rustup.map_or_else(|| PathBuf::from("rustup"), Path::to_path_buf);
    let Some(toolchain) = toolchain else {
        return Err(format!(
            "the plugins build for {WASM_TARGET}, whose standard library is not installed for the Rust in {} \
             (not a rustup toolchain): install it, with rustup {manual}",
            sysroot.display()
        ));
    };
    let output = match Command::new(&rustup_program).args(["target", "add", WASM_TARGET, "--toolchain", &toolchain]).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the plugins build for {WASM_TARGET}, which toolchain {toolchain} lacks, and rustup is not on PATH \
                 to add it: install the target ({manual}, or your distribution's rust-std for {WASM_TARGET})"
            ));
        }
        Err(e) => return Err(format!("cannot run {}: {e}; add the target yourself: {manual}", rustup_program.display())),
    };
    if !output.status.success() || !has_std(&libdir) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
        return Err(format!(
            "the plugins build for {WASM_TARGET}, which toolchain {toolchain} lacks, and \
             `rustup target add {WASM_TARGET} --toolchain {toolchain}` failed ({last}): run it again with network access"
        ));
    }
    Ok(WasmTarget::Added { toolchain })
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

/// The build script's side: checks (and adds) the target, printing one cargo warning when it
/// was added; on failure prints one cargo error and returns false (the script then stops).
fn wasm_target_ready(target_dir: &Path) -> bool {
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let rustc = std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    match ensure_wasm_target(&rustc, None, toolchain, &target_dir.join(".add-target.lock")) {
        Ok(WasmTarget::Present) => true,
        Ok(WasmTarget::Added { toolchain }) => {
            // cargo shows this again on later builds until the script runs again: past tense
            println!("cargo::warning=the {WASM_TARGET} target the plugins build for was missing from toolchain {toolchain}: this build added it with rustup");
            true
        }
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
