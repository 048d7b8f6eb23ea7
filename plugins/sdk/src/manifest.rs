//! The plugin manifest: who the plugin is, the folders it needs and the settings it accepts,
//! written at compile time into the component's custom section `medtune:manifest` (TOML), so
//! the host reads it without running the plugin. The `register_*!` macros write it from
//! Cargo's package fields and the `grants:`/`optional_grants:`/`settings:` they are given.

/// One piece of the manifest's text: `(true, s)` is written as a TOML string (quoted and
/// escaped), `(false, s)` as it is.
pub type Part = (bool, &'static str);

/// What byte `c` becomes in a TOML basic string (`quoted`) or as it is: up to six bytes, and
/// how many of them.
const fn escape(c: u8, quoted: bool) -> ([u8; 6], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match (quoted, c) {
        (true, b'"' | b'\\') => ([b'\\', c, 0, 0, 0, 0], 2),
        (true, b'\n') => ([b'\\', b'n', 0, 0, 0, 0], 2),
        (true, b'\t') => ([b'\\', b't', 0, 0, 0, 0], 2),
        (true, b'\r') => ([b'\\', b'r', 0, 0, 0, 0], 2),
        (true, 0..=0x1f | 0x7f) => ([b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]], 6),
        _ => ([c, 0, 0, 0, 0, 0], 1),
    }
}

/// The length of the manifest `parts` make.
pub const fn len(parts: &[Part]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let (quoted, s) = parts[i];
        let b = s.as_bytes();
        if quoted {
            n += 2;
        }
        let mut j = 0;
        while j < b.len() {
            n += escape(b[j], quoted).1;
            j += 1;
        }
        i += 1;
    }
    n
}

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
            let (e, k) = escape(b[j], quoted);
            let mut m = 0;
            while m < k {
                out[n + m] = e[m];
                m += 1;
            }
            n += k;
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
