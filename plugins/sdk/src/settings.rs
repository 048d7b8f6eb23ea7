//! The settings a plugin set passes to `configure`, read by name, with unknown keys refused.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::str::FromStr;

use crate::{PluginError, Setting};

/// The settings from the host's config. Every key must be read by the plugin's `new`:
/// a key it never asked for is refused as unknown, so a typo in a config is an error.
pub struct Settings {
    entries: Vec<Setting>,
    read: RefCell<BTreeSet<String>>,
}

impl Settings {
    /// Wraps the settings the host sent.
    pub fn new(entries: Vec<Setting>) -> Self {
        Self { entries, read: RefCell::new(BTreeSet::new()) }
    }

    /// The raw text of a setting, if the config set it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.read.borrow_mut().insert(key.to_owned());
        self.entries.iter().rev().find(|s| s.key == key).map(|s| s.value.as_str())
    }

    /// A setting parsed as `T`, or `default` when it is not set.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, PluginError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| PluginError::Config(format!("setting `{key}` = {raw:?}: {e}"))),
        }
    }

    /// Refuses keys that were never read (called by the SDK after `new`).
    pub(crate) fn reject_unknown(&self) -> Result<(), PluginError> {
        let read = self.read.borrow();
        let unknown: Vec<&str> =
            self.entries.iter().map(|s| s.key.as_str()).filter(|k| !read.contains(*k)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let known: Vec<&str> = read.iter().map(String::as_str).collect();
        Err(PluginError::Config(format!(
            "unknown setting(s) {} (this plugin reads: {})",
            unknown.join(", "),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )))
    }
}
