//! Errors of the plugin host: loading a component, and calling one.

use std::path::PathBuf;

/// A component that cannot be made into a running plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The bytes are not a valid WebAssembly component.
    #[error("{origin}: not a valid WebAssembly component: {reason}")]
    Compile { origin: String, reason: String },
    /// The component was built for another world or contract version.
    #[error("{origin}: refused: {detail}")]
    Contract { origin: String, detail: String },
    /// The component could not be instantiated in the sandbox.
    #[error("{origin}: cannot instantiate: {reason}")]
    Instantiate { origin: String, reason: String },
    /// `describe()` failed or returned something inconsistent with the component.
    #[error("{origin}: describe(): {reason}")]
    Describe { origin: String, reason: String },
    /// The config's grants or settings do not match what the plugin's manifest declares.
    #[error("{entry}plugin {origin} {detail}")]
    Needs { entry: String, origin: String, detail: String },
    /// `configure()` refused the settings of the plugin set.
    #[error("plugin {plugin}: configure refused its settings: {reason}")]
    Configure { plugin: String, reason: String },
    /// A read-only folder the config grants cannot be opened.
    #[error("plugin {origin}: cannot grant folder {host} as {guest}: {reason}")]
    Grant { origin: String, host: PathBuf, guest: String, reason: String },
    /// The compiled-code cache could not be written.
    #[error("compile cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// Why a whole batch failed: the plugin's instance is thrown away and re-created.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its wall-clock limit and was interrupted.
    #[error("plugin {plugin} timed out after {limit_ms} ms")]
    Timeout { plugin: String, limit_ms: u64 },
    /// The guest tried to grow its memory past the cap.
    #[error("plugin {plugin} hit its memory cap of {cap_mib} MiB (asked for {asked_mib} MiB)")]
    Memory { plugin: String, cap_mib: usize, asked_mib: usize },
    /// The guest trapped (a panic, an out-of-bounds access, `unreachable`...).
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    /// The plugin returned a result list of the wrong length.
    #[error("plugin {plugin} returned {got} results for a batch of {expected}")]
    Shape { plugin: String, expected: usize, got: usize },
    /// A fresh instance could not be made (e.g. `configure` failed).
    #[error("plugin {plugin} cannot be restarted: {reason}")]
    Restart { plugin: String, reason: String },
}

/// Why one record has no output from a plugin: the record itself is kept and marked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordFailure {
    /// The plugin, as `name@version`.
    pub plugin: String,
    /// The record's id.
    pub record: String,
    /// What went wrong.
    pub reason: String,
    /// Whether the plugin ran out of time on it.
    pub timed_out: bool,
}

impl std::fmt::Display for RecordFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {} on record {}: {}", self.plugin, self.record, self.reason)
    }
}
