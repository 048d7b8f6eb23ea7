//! The default plugins, compiled from plugins/ by build.rs and embedded in the binary.

/// A plugin that ships inside the `medtune` binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its name (the crate name, which is what `describe()` returns).
    pub name: &'static str,
    /// The component's bytes.
    pub wasm: &'static [u8],
}

const TABLE: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Every default plugin.
pub fn builtins() -> impl Iterator<Item = Builtin> {
    TABLE.iter().map(|&(name, wasm)| Builtin { name, wasm })
}

/// The default plugin called `name`.
pub fn builtin(name: &str) -> Option<Builtin> {
    builtins().find(|b| b.name == name)
}
