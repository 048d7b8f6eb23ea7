//! The data stage: records in (JSON, JSONL, CSV, Parquet; question-answer, multiple-choice,
//! labelled, instruction or chat), the plugin chain over them, annotated JSONL out.

mod chain;
mod fields;
mod formats;
mod input;
mod labels;
mod layout;
pub mod pyrandom;
mod record;
mod split;
mod stage;

pub use chain::{AugmentReport, ChainReport, annotate, augment, isolate};
pub use fields::Part;
pub use formats::InputFormat;
pub use input::{DEFAULT_QUESTION, Input, InputError, InputSpec, read};
pub use labels::PUBMEDQA_LABELS;
pub use layout::{FieldMap, IndexBase, Layout, MAX_OPTIONS, OptionsField, Reader, letter};
pub use record::{Augmentation, Message, Provenance, Record, Role, Sourced, Split, plain, read_jsonl};
pub use split::official_folds;
pub use stage::{DataError, DataReport, run};
