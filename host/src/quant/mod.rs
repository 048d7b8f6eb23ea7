//! Weight quantization for QLoRA: NF4 with double quantization, as bitsandbytes does it.

mod dynamic;
mod nf4;
mod weight;

pub use dynamic::dynamic_map;
pub use nf4::{NF4_CODE, Nf4};
pub use weight::Nf4Weight;
