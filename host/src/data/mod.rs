//! The data stage: PubMedQA in, the plugin chain over it, annotated JSONL out.

mod chain;
mod input;
pub mod pyrandom;
mod record;
mod split;
mod stage;

pub use chain::{AugmentReport, ChainReport, annotate, augment};
pub use input::{InputError, read};
pub use record::{Augmentation, Provenance, Record, Split, read_jsonl};
pub use split::official_folds;
pub use stage::{DataError, DataReport, run};
