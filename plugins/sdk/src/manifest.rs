//! The plugin manifest: who the plugin is, the folders it needs and the settings it accepts,
//! written at compile time into the component's custom section `medtune:manifest` (TOML), so
//! the host reads it without running the plugin. The `register_*!` macros write it from
//! Cargo's package fields and the `grants:`/`optional_grants:`/`settings:` they are given.

/// One piece of the manifest's text: `(true, s)` is written as a TOML string (quoted and
/// escaped), `(false, s)` as it is.
pub type Part = (bool, &'static str);

/// The length of the manifest `parts` make.
pub const fn len(parts: &[Part]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let (quoted, s) = parts[i];
        let b = s.as_bytes();
        if quoted {
            n += 2;
            let mut j = 0;
            while j < b.len() {
                n += escaped_len(b[j]);
                j += 1;
            }
        } else {
            n += b.len();
        }
        i += 1;
    }
    n
}

const fn escaped_len(c: u8) -> usize {
    match c {
        b'"' | b'\\' | b'\n' | b'\t' | b'\r' => 2,
        0..=0x1f | 0x7f => 6,
        _ => 1,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The manifest's bytes (`N` is [`len`] of the same parts).
pub const fn bytes<const N: usize>(parts: &[Part]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let (quoted, s) = parts[i];
        let b = s.as_bytes();
        if quoted {
            out[n] = b'"';
            n += 1;
        }
        let mut j = 0;
        while j < b.len() {
            let c = b[j];
            match (quoted, c) {
                (true, b'"' | b'\\') => {
                    out[n] = b'\\';
                    out[n + 1] = c;
                    n += 2;
                }
                (true, b'\n' | b'\t' | b'\r') => {
                    out[n] = b'\\';
                    out[n + 1] = match c {
                        b'\n' => b'n',
                        b'\t' => b't',
                        _ => b'r',
                    };
                    n += 2;
                }
                (true, 0..=0x1f | 0x7f) => {
                    let e = [b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]];
                    let mut k = 0;
                    while k < 6 {
                        out[n + k] = e[k];
                        k += 1;
                    }
                    n += 6;
                }
                _ => {
                    out[n] = c;
                    n += 1;
                }
            }
            j += 1;
        }
        if quoted {
            out[n] = b'"';
            n += 1;
        }
        i += 1;
    }
    out
}

/// Writes the manifest section of a plugin of kind `$kind` (a [`crate::PluginKind`] variant).
#[doc(hidden)]
#[macro_export]
macro_rules! __manifest {
    ($kind:ident;
        $(grants: [$($g:literal),* $(,)?] $(,)?)?
        $(optional_grants: [$($og:literal),* $(,)?] $(,)?)?
        $(settings: { $($k:ident : $t:ident = $d:literal, $desc:literal);* $(;)? } $(,)?)?
    ) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const PARTS: &[$crate::manifest::Part] = &[
                (false, "name = "), (true, env!("CARGO_PKG_NAME")),
                (false, "\nversion = "), (true, env!("CARGO_PKG_VERSION")),
                (false, "\nkind = "), (true, stringify!($kind)),
                (false, "\ncontract = "), (true, $crate::CONTRACT_VERSION),
                (false, "\ndescription = "), (true, env!("CARGO_PKG_DESCRIPTION")),
                (false, "\ngrants = ["), $($((true, $g), (false, ", "),)*)? (false, "]"),
                (false, "\noptional_grants = ["), $($((true, $og), (false, ", "),)*)? (false, "]\n"),
                $($(
                    (false, "\n[[settings]]\nkey = "), (true, stringify!($k)),
                    (false, "\ntype = "), (true, stringify!($t)),
                    (false, "\ndefault = "), (true, $d),
                    (false, "\ndescription = "), (true, $desc), (false, "\n"),
                )*)?
            ];
            const LEN: usize = $crate::manifest::len(PARTS);
            #[used]
            #[unsafe(link_section = "medtune:manifest")]
            static MANIFEST: [u8; LEN] = $crate::manifest::bytes::<LEN>(PARTS);
        };
    };
}
