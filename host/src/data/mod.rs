//! The data stage: records in (JSON, JSONL, CSV, Parquet, PubTator, BioC XML; question-answer,
//! multiple-choice, labelled, instruction, chat or annotated documents), the plugin chain over
//! them, annotated JSONL out.

mod annotated;
mod chain;
mod corpus;
mod fields;
mod formats;
mod input;
mod labels;
mod layout;
pub mod pyrandom;
mod record;
mod split;
mod stage;

pub use annotated::{GoldMention, Relation};
pub use chain::{AugmentReport, ChainReport, annotate, augment, isolate};
pub use fields::{Part, slice};
pub use formats::InputFormat;
pub use input::{DEFAULT_QUESTION, Input, InputError, InputSpec, read};
pub use labels::PUBMEDQA_LABELS;
pub use layout::{FieldMap, IndexBase, Layout, MAX_OPTIONS, OptionsField, Reader, letter};
pub use record::{Augmentation, Message, Provenance, Record, Role, Sourced, Split, plain, read_jsonl};
pub use split::official_folds;
pub use stage::{DataError, DataReport, run};
