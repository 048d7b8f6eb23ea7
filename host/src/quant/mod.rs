//! Weight quantization for QLoRA: NF4 with double quantization, as bitsandbytes does it.

#[cfg(feature = "cuda")]
mod cuda;
mod dynamic;
mod nf4;
mod weight;

pub use dynamic::dynamic_map;
pub use nf4::{Nf4, NF4_CODE};
pub use weight::Nf4Weight;
