//! The plain data types of the contract (`medtune:plugin/types`), shared with the rest of
//! medtune: generated from the WIT, with serde derives.

pub use super::bindings::types::{
    Annotated, Concept, Derived, Document, Expansion, Field, Mention, PluginError, PluginInfo, PluginKind, Prediction, Reference, Score,
    Setting, Span,
};
