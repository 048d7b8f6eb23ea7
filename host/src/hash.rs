//! Content hashes: the sha256 of bytes and of files, and the short digests that stage
//! fingerprints are made of. Every hash medtune writes or compares comes from here.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The sha256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's sha256 in hex, or `unreadable` when it cannot be read; read a block at a time,
/// so a large input is never held whole.
pub fn file_sha256(path: &Path) -> String {
    let hashed = std::fs::File::open(path).and_then(|mut f| {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(h.finalize())
    });
    match hashed {
        Ok(d) => d.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => "unreadable".into(),
    }
}

/// A short digest (16 hex digits of sha256) of `parts`, kept apart by a separator no part
/// holds.
pub fn short_digest<S: AsRef<str>>(parts: &[S]) -> String {
    let joined: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
    sha256_hex(joined.join("\n\u{1f}").as_bytes())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(short_digest(&["abc"]), "ba7816bf8f01cfea");
        assert_ne!(short_digest(&["a", "bc"]), short_digest(&["ab", "c"]));
        assert_eq!(file_sha256(Path::new("/nonexistent/file")), "unreadable");
    }
}
