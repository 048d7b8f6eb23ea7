//! The contract check: which world a component was built for, and for which version.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::types::PluginKind;

/// The contract version this host speaks: the WIT package line (`package
/// medtune:plugin@X;`, read by build.rs).
pub const CONTRACT_VERSION: &str = env!("MEDTUNE_CONTRACT_VERSION");

const PACKAGE: &str = "medtune:plugin";

/// The contract versions this host loads: the current one, and the frozen ones it adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// [`CONTRACT_VERSION`], the WIT in `wit/`.
    Current,
    /// `0.1.0`, frozen in `wit/0.1.0/`: documents without fields (`plugin/v0_1.rs` adapts it).
    V0_1,
}

impl Contract {
    /// Every version this host loads, newest first.
    pub const ALL: [Contract; 2] = [Contract::Current, Contract::V0_1];

    /// The version, as the WIT package line writes it.
    pub fn version(self) -> &'static str {
        match self {
            Contract::Current => CONTRACT_VERSION,
            Contract::V0_1 => "0.1.0",
        }
    }
}

/// The name of the interface a plugin of `kind` exports, e.g.
/// `medtune:plugin/normalizer-api@0.2.0`.
pub fn export_name(kind: PluginKind) -> String {
    format!("{PACKAGE}/{}-api@{CONTRACT_VERSION}", kind_name(kind))
}

/// The kind's name as the config and the WIT world spell it.
pub fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Normalizer => "normalizer",
        PluginKind::Disambiguator => "disambiguator",
        PluginKind::Augmenter => "augmenter",
        PluginKind::Metric => "metric",
    }
}

/// Parses a kind name.
pub fn parse_kind(name: &str) -> Option<PluginKind> {
    [PluginKind::Normalizer, PluginKind::Disambiguator, PluginKind::Augmenter, PluginKind::Metric]
        .into_iter()
        .find(|k| kind_name(*k) == name)
}

/// Finds the world of a component and its contract version from its exports, or says in
/// words why it has none this host accepts. `expected` narrows the check to one kind.
pub fn check(engine: &Engine, component: &Component, expected: Option<PluginKind>) -> Result<(PluginKind, Contract), String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let ours: Vec<(&str, &str)> = exports
        .iter()
        .filter_map(|e| e.strip_prefix(PACKAGE).and_then(|rest| rest.strip_prefix('/')))
        .filter_map(|rest| rest.split_once('@'))
        .collect();
    let wanted = expected.map(export_name);
    let want_text = wanted.clone().unwrap_or_else(|| format!("one of {PACKAGE}/<kind>-api@{CONTRACT_VERSION}"));
    let Some(&(iface, version)) = ours.first() else {
        return Err(format!(
            "exports no {PACKAGE} interface (it exports: {}); expected {want_text}: was it built with medtune-plugin-sdk?",
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        ));
    };
    if ours.len() > 1 {
        return Err(format!("exports several plugin interfaces ({}); a plugin is one kind", exports.join(", ")));
    }
    let Some(contract) = Contract::ALL.into_iter().find(|c| c.version() == version) else {
        let frozen: Vec<&str> = Contract::ALL[1..].iter().map(|c| c.version()).collect();
        return Err(format!(
            "built for contract {PACKAGE}@{version} ({PACKAGE}/{iface}@{version}); this host speaks {PACKAGE}@{CONTRACT_VERSION}, still loads {}, and expected {want_text}",
            frozen.join(", ")
        ));
    };
    let kind = iface
        .strip_suffix("-api")
        .and_then(parse_kind)
        .ok_or_else(|| format!("exports unknown interface {PACKAGE}/{iface}@{version}; expected {want_text}"))?;
    if let Some(expected) = expected
        && expected != kind
    {
        return Err(format!(
            "is a {} plugin (exports {}), but the config expects a {} (export {})",
            kind_name(kind),
            export_name(kind),
            kind_name(expected),
            export_name(expected)
        ));
    }
    let foreign: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|n| !n.starts_with("wasi:") && !n.starts_with(&format!("{PACKAGE}/types@")))
        .collect();
    if !foreign.is_empty() {
        return Err(format!("imports {} which this host does not provide", foreign.join(", ")));
    }
    Ok((kind, contract))
}
