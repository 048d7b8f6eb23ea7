//! Builds the test guests (tests/guests) for wasm32-wasip2; the tests find them through
//! `GUEST_*` variables set at compile time, so a missing guest fails the build, not a test.

include!("../host/build/guests.rs");

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = dir.parent().expect("tests/ is inside the repository").to_path_buf();
    rerun_if_changed_tree(&dir.join("guests"));
    rerun_if_changed_tree(&root.join("plugins/sdk"));
    rerun_if_changed_tree(&root.join("wit"));
    let Some(target) = guest_build_ready(&root) else { return };
    let guests = [
        ("hostile", "hostile"),
        ("tagger", "tagger_v1"),
        ("stamper", "stamper_v1"),
        ("future-contract", "future_contract"),
        ("contract-0-1", "contract_0_1"),
    ];
    let mut built = build_guests(&dir.join("guests/Cargo.toml"), &guests, &target).unwrap_or_else(|e| fail(&e));
    let second = [("tagger", "tagger_v2"), ("stamper", "stamper_v2")];
    for (package, lib) in second {
        let manifest = dir.join(format!("guests/{package}-v2/Cargo.toml"));
        built.extend(build_guests(&manifest, &[(package, lib)], &target).unwrap_or_else(|e| fail(&e)));
    }
    for ((_, lib), path) in guests.iter().chain(second.iter()).zip(built) {
        println!("cargo:rustc-env=GUEST_{}={}", lib.to_uppercase(), path.display());
    }
    println!("cargo:rustc-env=MEDTUNE_REPO={}", root.display());
}
