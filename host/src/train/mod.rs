//! QLoRA fine-tuning: LoRA adapters over a frozen (NF4 or GGUF-quantized) base, the answer-
//! token loss, AdamW with a schedule, checkpoints that resume exactly, and the run folder.

mod batch;
mod checkpoint;
pub mod eval;
pub mod examples;
mod lora;
pub mod manifest;
mod optim;
mod pack;
mod parallel;
pub mod plot;
pub mod ranks;
mod trainer;

pub use batch::Batch;
pub use lora::{Lora, LoraConfig, LoraSet};
pub use optim::{AdamW, clip, learning_rate};
pub use parallel::{DataParallel, NCCL_ID_ENV, ParallelError};
pub use trainer::{
    StepRow, TrainError, TrainOptions, TrainOutcome, allocated_peak_mib, fingerprint, keep_freed_memory, memory_mib, read_rows, resumable,
    train,
};
