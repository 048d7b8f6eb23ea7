//! The plugin manifest: the custom section `medtune:manifest` (TOML) the SDK writes into the
//! component, naming the plugin and declaring the read-only folders it needs and the settings
//! it accepts. It is read without running the plugin, and a config is checked against it
//! before any call. Components built without the SDK may have none: they are not checked.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::contract::kind_name;
use super::sandbox::Sandbox;
use super::types::PluginInfo;

/// The custom section's name.
pub const SECTION: &str = "medtune:manifest";

/// What a plugin says it is and needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name (its crate's).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its kind, as the SDK names it (`Normalizer`, ...).
    pub kind: String,
    /// The contract version it was built for.
    pub contract: String,
    /// What it does.
    pub description: String,
    /// Guest paths of read-only folders it cannot run without.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Guest paths of read-only folders it reads when granted.
    #[serde(default)]
    pub optional_grants: Vec<String>,
    /// The settings it accepts.
    #[serde(default)]
    pub settings: Vec<SettingDecl>,
}

/// One accepted setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingDecl {
    /// The key.
    pub key: String,
    /// The type of its value.
    #[serde(rename = "type")]
    pub ty: SettingType,
    /// The value used when the config sets none (empty: none).
    pub default: String,
    /// What it does.
    pub description: String,
}

/// The type of a setting's value (settings travel as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingType {
    /// Any text.
    String,
    /// A whole number.
    Integer,
    /// A number.
    Float,
    /// `true` or `false`.
    Boolean,
}

impl SettingType {
    fn name(self) -> &'static str {
        match self {
            SettingType::String => "string",
            SettingType::Integer => "integer",
            SettingType::Float => "float",
            SettingType::Boolean => "boolean",
        }
    }

    fn a_name(self) -> &'static str {
        match self {
            SettingType::Integer => "an integer",
            SettingType::String => "a string",
            SettingType::Float => "a float",
            SettingType::Boolean => "a boolean",
        }
    }

    fn accepts(self, value: &str) -> bool {
        match self {
            SettingType::String => true,
            SettingType::Integer => value.trim().parse::<i64>().is_ok(),
            SettingType::Float => value.trim().parse::<f64>().is_ok(),
            SettingType::Boolean => matches!(value.trim(), "true" | "false"),
        }
    }
}

/// The manifest of a component, if it carries one (a nested core module's custom section).
pub fn read(bytes: &[u8]) -> Result<Option<Manifest>, String> {
    let mut found: Option<Manifest> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("cannot read its sections: {e}"))?;
        let wasmparser::Payload::CustomSection(section) = payload else { continue };
        if section.name() != SECTION {
            continue;
        }
        if found.is_some() {
            return Err(format!("two {SECTION} sections (two copies of the SDK linked in?)"));
        }
        let text = std::str::from_utf8(section.data()).map_err(|e| format!("its {SECTION} section is not UTF-8: {e}"))?;
        let manifest: Manifest = toml::from_str(text).map_err(|e| format!("its {SECTION} section is not a manifest: {e}"))?;
        for s in &manifest.settings {
            if !s.default.is_empty() && !s.ty.accepts(&s.default) {
                return Err(format!("its manifest gives setting `{}` the default {:?}, which is not {}", s.key, s.default, s.ty.a_name()));
            }
        }
        found = Some(manifest);
    }
    Ok(found)
}

impl Manifest {
    /// Whether the manifest agrees with what the running plugin says of itself.
    pub fn agrees_with(&self, info: &PluginInfo) -> Result<(), String> {
        let pairs = [
            ("name", &self.name, &info.name),
            ("version", &self.version, &info.version),
            ("contract", &self.contract, &info.contract_version),
        ];
        for (what, manifest, describe) in pairs {
            if manifest != describe {
                return Err(format!("its manifest says {what} {manifest:?} but describe() says {describe:?}"));
            }
        }
        if !self.kind.eq_ignore_ascii_case(kind_name(info.kind)) {
            return Err(format!("its manifest says kind {:?} but describe() says {}", self.kind, kind_name(info.kind)));
        }
        Ok(())
    }

    /// Checks grants and settings against what the plugin declares: a folder it needs and is
    /// not granted, a folder granted that it does not declare, a setting it does not accept or
    /// a value not of the setting's type.
    pub fn check(&self, sandbox: &Sandbox) -> Result<(), String> {
        let declared: Vec<&str> = self.grants.iter().chain(&self.optional_grants).map(String::as_str).collect();
        for need in &self.grants {
            if !sandbox.grants.iter().any(|g| g.guest == *need) {
                return Err(format!(
                    "needs the read-only folder {need}, which is not granted (grants = {{ \"{need}\" = \"FOLDER\" }} in the config, --grant {need}=FOLDER on the command line)"
                ));
            }
        }
        for g in &sandbox.grants {
            if !declared.contains(&g.guest.as_str()) {
                return Err(format!(
                    "is granted {} ({}), which it does not declare (it declares: {})",
                    g.guest,
                    g.host.display(),
                    list(&declared)
                ));
            }
        }
        for (key, value) in &sandbox.settings {
            let Some(decl) = self.settings.iter().find(|s| s.key == *key) else {
                let keys: Vec<&str> = self.settings.iter().map(|s| s.key.as_str()).collect();
                return Err(format!("has no setting `{key}` (it declares: {})", list(&keys)));
            };
            if !decl.ty.accepts(value) {
                return Err(format!("setting `{key}` = {value:?} is not {}", decl.ty.a_name()));
            }
        }
        Ok(())
    }

    /// The grants and settings, as `plugin list` shows them (indented lines).
    pub fn describe_needs(&self) -> String {
        let mut out = String::new();
        let needs: Vec<String> = self
            .grants
            .iter()
            .map(|g| format!("{g} (read-only)"))
            .chain(self.optional_grants.iter().map(|g| format!("{g} (read-only, optional)")))
            .collect();
        let _ = writeln!(out, "    grants: {}", if needs.is_empty() { "none".to_owned() } else { needs.join(", ") });
        for s in &self.settings {
            let default = if s.default.is_empty() { String::new() } else { format!(" = {}", s.default) };
            let _ = writeln!(out, "    setting {}: {}{default} — {}", s.key, s.ty.name(), s.description);
        }
        out
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::plugin::{Grant, PluginEngine, builtins};

    #[test]
    fn every_builtin_carries_a_manifest_that_agrees_with_describe() {
        let engine = PluginEngine::new(None).expect("engine");
        for b in builtins() {
            let m = read(b.wasm).expect("readable").unwrap_or_else(|| panic!("{} has no manifest", b.name));
            let (info, _) = engine.inspect(b.wasm, b.name).expect("inspect");
            m.agrees_with(&info).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert!(!m.description.is_empty(), "{}", b.name);
        }
        let m = read(crate::plugin::builtin("terminology-normalizer").expect("built in").wasm).expect("read").expect("manifest");
        assert_eq!(m.grants, ["/vocab"]);
        let min_score = m.settings.iter().find(|s| s.key == "min_score").expect("declared");
        assert_eq!((min_score.ty, min_score.default.as_str()), (SettingType::Float, "0"));
    }

    #[test]
    fn grants_and_settings_are_checked_against_the_declarations() {
        let m = read(crate::plugin::builtin("synonym-swap").expect("built in").wasm).expect("read").expect("manifest");
        let vocab = Grant { host: PathBuf::from("/srv/vocab"), guest: "/vocab".into() };
        let with = |grants: Vec<Grant>, settings: &[(&str, &str)]| Sandbox {
            grants,
            settings: settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Sandbox::default()
        };
        m.check(&with(vec![vocab.clone()], &[("rate", "0.3"), ("variants", "2")])).expect("declared grant and settings");
        let err = m.check(&with(vec![], &[])).expect_err("missing grant");
        assert!(err.contains("needs the read-only folder /vocab, which is not granted"), "{err}");
        let extra = Grant { host: PathBuf::from("/srv/data"), guest: "/data".into() };
        let err = m.check(&with(vec![vocab.clone(), extra], &[])).expect_err("extra grant");
        assert!(err.contains("is granted /data (/srv/data), which it does not declare (it declares: /vocab)"), "{err}");
        let err = m.check(&with(vec![vocab.clone()], &[("ratio", "1")])).expect_err("unknown key");
        assert!(err.contains("has no setting `ratio` (it declares: rate, variants, vocab)"), "{err}");
        let err = m.check(&with(vec![vocab], &[("variants", "two")])).expect_err("wrong type");
        assert!(err.contains("setting `variants` = \"two\" is not an integer"), "{err}");
    }
}
