//! medtune: fine-tune LLaMA-family models for medical question answering, with the medical
//! text handling in sandboxed WebAssembly component plugins.

pub mod artifacts;
pub mod atomic;
pub mod config;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod data;
pub mod engine;
pub mod export;
pub mod hash;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod prompt;
pub mod quant;
pub mod report;
pub mod serve;
pub mod train;
pub mod vocab;
pub mod wheel;
