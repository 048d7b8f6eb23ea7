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
mod sandbox;
mod set;
pub mod types;
mod validate;
mod watch;

pub use builtin::{builtin, builtins, Builtin};
pub use contract::{export_name, kind_name, parse_kind, CONTRACT_VERSION};
pub use engine::PluginEngine;
pub use error::{CallError, LoadError, RecordFailure};
pub use instance::{Outcomes, Plugin, Restart};
pub use sandbox::{Grant, Sandbox};
pub use set::{wasm_files, PluginSet, SlotSpec, SwapEvent};
pub use watch::Watcher;
