//! Unit tests of the wasm32-wasip2 checks, with stand-in `rustc` and `rustup` programs over a
//! scratch sysroot: the rustc wrapper that adds the target at the start of a build
//! (`host/build/rustc-wrapper.sh`: present, added, rustup failing, rustup missing, a Rust
//! outside rustup) and the build scripts' own check (`host/build/wasm_target.rs`).
#![allow(dead_code)] // the build scripts' side of the included file is not exercised here

use std::path::{Path, PathBuf};
use std::process::Command;

include!("../../host/build/wasm_target.rs");

/// A scratch folder holding a sysroot at `sysroot_rel`, a stand-in rustc in the sysroot's
/// `bin/` that reports it (and answers `-vV`), and a `path/` folder for stand-in programs.
struct Scratch {
    dir: PathBuf,
    sysroot: PathBuf,
    rustc: PathBuf,
}

impl Scratch {
    fn new(name: &str, sysroot_rel: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("medtune-build-check-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sysroot = dir.join(sysroot_rel);
        std::fs::create_dir_all(sysroot.join("bin")).expect("scratch sysroot");
        std::fs::create_dir_all(dir.join("path")).expect("scratch PATH");
        let rustc = sysroot.join("bin/rustc");
        let libdir = sysroot.join("lib/rustlib/wasm32-wasip2/lib");
        script(&rustc, &format!("if [ \"$1\" = -vV ]; then echo 'rustc 1.95.0'; else echo {}; fi", libdir.display()));
        Scratch { dir, sysroot, rustc }
    }

    fn libdir(&self) -> PathBuf {
        self.sysroot.join("lib/rustlib/wasm32-wasip2/lib")
    }

    fn install_std(&self) {
        std::fs::create_dir_all(self.libdir()).expect("libdir");
        std::fs::write(self.libdir().join("libcore-0123abcd.rlib"), b"").expect("libcore");
    }

    /// A stand-in rustup on the wrapper's PATH.
    fn rustup(&self, body: &str) {
        script(&self.dir.join("path/rustup"), body);
    }

    /// A rustup that records its arguments and installs the target.
    fn working_rustup(&self) {
        self.rustup(&format!(
            "echo \"$@\" > {}/args; mkdir -p {lib}; touch {lib}/libcore-1.rlib",
            self.dir.display(),
            lib = self.libdir().display()
        ));
    }

    /// Runs the wrapper as cargo's first call does (`wrapper rustc -vV`), with only the scratch
    /// PATH (and the shell's tools) and `toolchain` as RUSTUP_TOOLCHAIN.
    fn wrapper(&self, toolchain: Option<&str>) -> (bool, String, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/build/rustc-wrapper.sh");
        // in a session of its own: no terminal, so its one line comes to stderr
        let mut cmd = Command::new("setsid");
        cmd.arg("sh").arg(script).arg(&self.rustc).arg("-vV");
        cmd.env("PATH", format!("{}:/usr/bin:/bin", self.dir.join("path").display())).env_remove("RUSTUP_TOOLCHAIN");
        if let Some(t) = toolchain {
            cmd.env("RUSTUP_TOOLCHAIN", t);
        }
        let out = cmd.output().expect("run the wrapper");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

#[test]
fn the_wrapper_leaves_a_present_target_alone_and_runs_the_compiler() {
    let s = Scratch::new("present", "toolchains/stable-x");
    s.install_std();
    s.rustup("echo called > \"$0.called\"; exit 1");
    let (ok, stdout, _) = s.wrapper(Some("stable-x"));
    assert!(ok && stdout.contains("rustc 1.95.0"), "the compiler's answer passes through: {stdout}");
    assert!(!s.dir.join("path/rustup.called").exists(), "rustup must not run when the target is there");
}

#[test]
fn the_wrapper_adds_a_missing_target_for_the_active_toolchain_and_says_so() {
    let s = Scratch::new("added", "elsewhere/sysroot");
    s.working_rustup();
    let (ok, stdout, stderr) = s.wrapper(Some("stable-x"));
    assert!(ok && stdout.contains("rustc 1.95.0"), "{stdout}{stderr}");
    let args = std::fs::read_to_string(s.dir.join("args")).expect("rustup ran");
    assert_eq!(args.trim(), "target add wasm32-wasip2 --toolchain stable-x");
    assert!(has_std(&s.libdir()));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("added it with rustup") && stderr.contains("stable-x"), "{stderr}");
}

#[test]
fn the_wrapper_reads_the_toolchain_from_a_rustup_sysroot_when_the_variable_is_unset() {
    let s = Scratch::new("inferred", "toolchains/1.95.0-x86_64-unknown-linux-gnu");
    s.working_rustup();
    let (ok, _, stderr) = s.wrapper(None);
    assert!(ok, "{stderr}");
    let args = std::fs::read_to_string(s.dir.join("args")).expect("rustup ran");
    assert_eq!(args.trim(), "target add wasm32-wasip2 --toolchain 1.95.0-x86_64-unknown-linux-gnu");
}

#[test]
fn a_failing_rustup_stops_the_build_with_one_line_giving_its_reason_and_the_command() {
    let s = Scratch::new("offline", "toolchains/stable-x");
    s.rustup("echo 'info: downloading component rust-std' >&2; echo 'error: could not download file' >&2; exit 1");
    let (ok, stdout, stderr) = s.wrapper(Some("stable-x"));
    assert!(!ok && stdout.is_empty(), "the compiler must not run: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("could not download file"), "{stderr}");
    assert!(stderr.contains("rustup target add wasm32-wasip2 --toolchain stable-x"), "{stderr}");
}

#[test]
fn without_rustup_the_wrapper_names_the_command_to_run() {
    let s = Scratch::new("norustup", "toolchains/stable-x");
    let (ok, _, stderr) = s.wrapper(Some("stable-x"));
    assert!(!ok, "the build must stop");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("rustup is not on PATH") && stderr.contains("`rustup target add wasm32-wasip2`"), "{stderr}");
}

#[test]
fn a_rust_outside_rustup_is_told_to_install_the_target_itself() {
    let s = Scratch::new("distro", "usr");
    let (ok, _, stderr) = s.wrapper(None);
    assert!(!ok && stderr.contains("not a rustup toolchain") && stderr.contains("rustup target add wasm32-wasip2"), "{stderr}");
    let err = check_wasm_target(&s.rustc, None).expect_err("not rustup's");
    assert!(!err.contains('\n') && err.contains("not a rustup toolchain"), "{err}");
}

#[test]
fn the_build_scripts_check_passes_a_present_target_and_names_the_command_for_a_missing_one() {
    let s = Scratch::new("scripts", "toolchains/stable-x");
    let err = check_wasm_target(&s.rustc, None).expect_err("missing");
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("rustup target add wasm32-wasip2 --toolchain stable-x"), "{err}");
    s.install_std();
    assert_eq!(check_wasm_target(&s.rustc, Some("stable-x".into())), Ok(()));
}
