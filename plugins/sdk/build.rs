//! Reads the contract (`wit/`) and writes what the SDK must agree with into
//! `$OUT_DIR/contract.rs`: the contract version from the WIT package line, the export names
//! of the hand-written `normalize` (they carry the version), and the canonical ABI layout
//! (wasm32) of `normalize`'s argument and result, which `lower.rs` checks at compile time
//! against the layout it writes. A field added to a WIT record then fails the build instead
//! of corrupting memory.

use std::fmt::Write as _;
use std::path::PathBuf;

use wit_parser::{Resolve, SizeAlign, Type, TypeDefKind};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit = manifest.join("../../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut resolve = Resolve::default();
    let (package, _) = match resolve.push_dir(&wit) {
        Ok(p) => p,
        Err(e) => {
            println!("cargo::error=cannot read the plugin contract in {}: {e:#}", wit.display());
            return;
        }
    };
    let name = &resolve.packages[package].name;
    let Some(version) = name.version.as_ref().map(ToString::to_string) else {
        println!("cargo::error={}: the package line names no version", wit.display());
        return;
    };
    let mut sizes = SizeAlign::default();
    if let Err(e) = sizes.fill(&resolve) {
        println!("cargo::error=the plugin contract's types have no layout: {e:#}");
        return;
    }
    let api = resolve.packages[package].interfaces.get("normalizer-api").copied();
    let normalize = api.and_then(|i| resolve.interfaces[i].functions.get("normalize"));
    let Some(normalize) = normalize else {
        println!("cargo::error={}: no normalizer-api interface with a normalize function", wit.display());
        return;
    };
    let layout = Layout { resolve: &resolve, sizes: &sizes };
    let params: Vec<String> = normalize.params.iter().map(|p| layout.describe(&p.ty)).collect();
    let result = normalize.result.as_ref().map_or_else(|| "()".to_owned(), |t| layout.describe(t));
    let abi = format!("({}) -> {result}", params.join(", "));
    let interface = format!("{}:{}/normalizer-api@{version}", name.namespace, name.name);
    let mut out = String::new();
    writeln!(out, "/// The contract version this SDK builds plugins for (the WIT package line).").ok();
    writeln!(out, "pub const CONTRACT_VERSION: &str = {version:?};").ok();
    writeln!(out, "/// `normalize`'s argument and result in the canonical ABI (wasm32), as the WIT gives them.").ok();
    writeln!(out, "#[allow(dead_code)] // read by lower.rs, which only normalizers build\npub(crate) const NORMALIZE_ABI: &str = {abi:?};").ok();
    writeln!(out, "/// The export name of `normalize`.").ok();
    writeln!(out, "#[doc(hidden)]\n#[macro_export]\nmacro_rules! __normalize_export {{ () => {{ {:?} }} }}", format!("{interface}#normalize")).ok();
    writeln!(out, "/// The export name of `normalize`'s post-return function.").ok();
    writeln!(out, "#[doc(hidden)]\n#[macro_export]\nmacro_rules! __normalize_post_return {{ () => {{ {:?} }} }}", format!("cabi_post_{interface}#normalize")).ok();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = std::fs::write(out_dir.join("contract.rs"), out) {
        println!("cargo::error=cannot write {}: {e}", out_dir.join("contract.rs").display());
    }
}

/// Describes types with their canonical ABI sizes and field offsets on wasm32.
struct Layout<'a> {
    resolve: &'a Resolve,
    sizes: &'a SizeAlign,
}

impl Layout<'_> {
    /// `name{field@offset:type,...}=size` for records, `list<T>`, `result<ok,err>=size@payload`
    /// and so on, nested.
    fn describe(&self, ty: &Type) -> String {
        let Type::Id(id) = ty else { return format!("{ty:?}").to_lowercase() };
        let def = &self.resolve.types[*id];
        let size = self.sizes.size(ty).size_wasm32();
        let name = def.name.clone().unwrap_or_default();
        match &def.kind {
            TypeDefKind::Record(r) => {
                let offsets = self.sizes.field_offsets(r.fields.iter().map(|f| &f.ty));
                let fields: Vec<String> =
                    r.fields.iter().zip(offsets).map(|(f, (at, ty))| format!("{}@{}:{}", f.name, at.size_wasm32(), self.describe(ty))).collect();
                format!("{name}{{{}}}={size}", fields.join(","))
            }
            TypeDefKind::Tuple(t) => {
                let offsets = self.sizes.field_offsets(t.types.iter());
                let fields: Vec<String> = offsets.iter().map(|(at, ty)| format!("@{}:{}", at.size_wasm32(), self.describe(ty))).collect();
                format!("tuple<{}>={size}", fields.join(","))
            }
            TypeDefKind::List(t) => format!("list<{}>", self.describe(t)),
            TypeDefKind::Result(r) => {
                let at = self.sizes.payload_offset(wit_parser::Int::U8, [r.ok.as_ref(), r.err.as_ref()]).size_wasm32();
                let part = |t: &Option<Type>| t.as_ref().map_or_else(|| "_".to_owned(), |t| self.describe(t));
                format!("result<{},{}>={size}@{at}", part(&r.ok), part(&r.err))
            }
            TypeDefKind::Variant(v) => {
                let at = self.sizes.payload_offset(v.tag(), v.cases.iter().map(|c| c.ty.as_ref())).size_wasm32();
                let cases: Vec<String> =
                    v.cases.iter().map(|c| format!("{}({})", c.name, c.ty.as_ref().map_or_else(String::new, |t| self.describe(t)))).collect();
                format!("{name}<{}>={size}@{at}", cases.join("|"))
            }
            TypeDefKind::Type(t) => self.describe(t),
            other => format!("{name}:{}={size}", other.as_str()),
        }
    }
}
