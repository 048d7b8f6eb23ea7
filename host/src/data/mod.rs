//! The data stage: PubMedQA in, the plugin chain over it, annotated JSONL out.

mod chain;
mod input;
pub mod pyrandom;
mod record;
mod split;
mod stage;

pub use chain::{annotate, augment, AugmentReport, ChainReport};
pub use input::{read, InputError};
pub use record::{read_jsonl, Augmentation, Provenance, Record, Split};
pub use split::official_folds;
pub use stage::{run, DataError, DataReport};
