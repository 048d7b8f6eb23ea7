//! The test guests (hostile plugins, a future-contract plugin, two versions of a plugin),
//! built for wasm32-wasip2 by build.rs, for the end-to-end tests in `e2e/`.

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("MEDTUNE_REPO"))
}

/// A test guest built by build.rs (`hostile`, `tagger_v1`, `tagger_v2`, `future_contract`).
pub fn guest(name: &str) -> PathBuf {
    let path = match name {
        "hostile" => env!("GUEST_HOSTILE"),
        "tagger_v1" => env!("GUEST_TAGGER_V1"),
        "tagger_v2" => env!("GUEST_TAGGER_V2"),
        "stamper_v1" => env!("GUEST_STAMPER_V1"),
        "stamper_v2" => env!("GUEST_STAMPER_V2"),
        "future_contract" => env!("GUEST_FUTURE_CONTRACT"),
        "contract_0_1" => env!("GUEST_CONTRACT_0_1"),
        other => panic!("no guest {other}"),
    };
    PathBuf::from(path)
}

#[cfg(test)]
mod build_check;
