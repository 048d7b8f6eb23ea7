//! Unit tests of the build scripts' wasm32-wasip2 check (`host/build/wasm_target.rs`), with
//! stand-in `rustc` and `rustup` programs over a scratch sysroot: present, added by rustup,
//! rustup failing, rustup missing, and a Rust that rustup does not manage.
#![allow(dead_code)] // the build scripts' side of the included file is not exercised here

use std::path::{Path, PathBuf};
use std::process::Command;

include!("../../host/build/wasm_target.rs");

/// A scratch folder holding `sysroot_rel` as a sysroot, a stand-in rustc that reports it,
/// and a place for a stand-in rustup.
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
        std::fs::create_dir_all(&sysroot).expect("scratch sysroot");
        let rustc = dir.join("rustc");
        script(&rustc, &format!("echo {}/lib/rustlib/wasm32-wasip2/lib", sysroot.display()));
        Scratch { dir, sysroot, rustc }
    }

    fn libdir(&self) -> PathBuf {
        self.sysroot.join("lib/rustlib/wasm32-wasip2/lib")
    }

    fn install_std(&self) {
        std::fs::create_dir_all(self.libdir()).expect("libdir");
        std::fs::write(self.libdir().join("libcore-0123abcd.rlib"), b"").expect("libcore");
    }

    fn check(&self, rustup: &Path, toolchain: Option<&str>) -> Result<WasmTarget, String> {
        ensure_wasm_target(&self.rustc, Some(rustup), toolchain.map(str::to_owned), &self.dir.join("lock"))
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
fn a_present_target_is_left_alone() {
    let s = Scratch::new("present", "toolchains/stable-x");
    s.install_std();
    let rustup = s.dir.join("rustup");
    script(&rustup, "echo called > \"$0.called\"; exit 1");
    assert_eq!(s.check(&rustup, Some("stable-x")), Ok(WasmTarget::Present));
    assert!(!s.dir.join("rustup.called").exists(), "rustup must not run when the target is there");
}

#[test]
fn a_missing_target_is_added_for_the_active_toolchain() {
    let s = Scratch::new("added", "elsewhere/sysroot");
    let rustup = s.dir.join("rustup");
    script(
        &rustup,
        &format!("echo \"$@\" > {}/args; mkdir -p {lib}; touch {lib}/libcore-1.rlib", s.dir.display(), lib = s.libdir().display()),
    );
    assert_eq!(s.check(&rustup, Some("stable-x")), Ok(WasmTarget::Added { toolchain: "stable-x".into() }));
    let args = std::fs::read_to_string(s.dir.join("args")).expect("rustup ran");
    assert_eq!(args.trim(), "target add wasm32-wasip2 --toolchain stable-x");
}

#[test]
fn the_toolchain_is_read_from_a_rustup_sysroot_when_the_variable_is_unset() {
    let s = Scratch::new("inferred", "toolchains/1.95.0-x86_64-unknown-linux-gnu");
    let rustup = s.dir.join("rustup");
    script(
        &rustup,
        &format!("echo \"$@\" > {}/args; mkdir -p {lib}; touch {lib}/libcore-1.rlib", s.dir.display(), lib = s.libdir().display()),
    );
    let added = s.check(&rustup, None);
    assert_eq!(added, Ok(WasmTarget::Added { toolchain: "1.95.0-x86_64-unknown-linux-gnu".into() }));
}

#[test]
fn a_failing_rustup_is_one_line_with_its_reason_and_the_command() {
    let s = Scratch::new("offline", "toolchains/stable-x");
    let rustup = s.dir.join("rustup");
    script(&rustup, "echo 'info: downloading component rust-std' >&2; echo 'error: could not download file' >&2; exit 1");
    let err = s.check(&rustup, Some("stable-x")).expect_err("rustup failed");
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("could not download file"), "{err}");
    assert!(err.contains("rustup target add wasm32-wasip2 --toolchain stable-x"), "{err}");
}

#[test]
fn without_rustup_the_error_names_the_command_to_run() {
    let s = Scratch::new("norustup", "toolchains/stable-x");
    let err = s.check(&s.dir.join("no-such-rustup"), Some("stable-x")).expect_err("no rustup");
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("rustup is not on PATH") && err.contains("`rustup target add wasm32-wasip2`"), "{err}");
}

#[test]
fn a_rust_outside_rustup_is_told_to_install_the_target_itself() {
    let s = Scratch::new("distro", "usr");
    let err = s.check(&s.dir.join("no-such-rustup"), None).expect_err("not rustup's");
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("not a rustup toolchain") && err.contains("rustup target add wasm32-wasip2"), "{err}");
}
