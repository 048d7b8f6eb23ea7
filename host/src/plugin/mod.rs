//! WebAssembly component plugins: loading, contract checks, the sandbox, calls, hot swap.
//!
//! Invariant: wasmtime types never leave this module; the rest of medtune sees
//! [`PluginEngine`], [`Plugin`], [`PluginSet`] and the plain data types of the contract.

mod bindings;
mod builtin;
mod contract;
mod engine;
mod error;
mod instance;
mod manifest;
mod resolve;
mod sandbox;
mod set;
pub mod types;
mod v0_1;
mod validate;
mod watch;

pub use builtin::{Builtin, builtin, builtins};
pub use contract::{CONTRACT_VERSION, Contract, export_name, kind_name, parse_kind};
pub use engine::PluginEngine;
pub use error::{CallError, LoadError, RecordFailure};
pub use instance::{Outcomes, Plugin, Restart};
pub use manifest::{Manifest, SettingDecl, SettingType, read as read_manifest};
pub use sandbox::{Grant, Sandbox};
pub use set::{PluginSet, SlotSpec, SwapEvent, wasm_files};
pub use watch::{ConfigSource, Watcher};
