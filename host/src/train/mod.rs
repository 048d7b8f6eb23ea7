//! QLoRA fine-tuning: LoRA adapters over a frozen (NF4 or GGUF-quantized) base, the answer-
//! token loss, AdamW with a schedule, checkpoints that resume exactly, and the run folder.

mod batch;
mod checkpoint;
pub mod eval;
pub mod examples;
mod lora;
pub mod manifest;
mod optim;
mod parallel;
pub mod ranks;
pub mod plot;
mod trainer;

pub use batch::Batch;
pub use lora::{Lora, LoraConfig, LoraSet};
pub use optim::{clip, learning_rate, AdamW};
pub use parallel::{DataParallel, ParallelError, NCCL_ID_ENV};
pub use trainer::{allocated_peak_mib, fingerprint, keep_freed_memory, memory_mib, read_rows, resumable, train, StepRow, TrainError, TrainOptions, TrainOutcome};
