//! Plain-Rust medical text algorithms with no dependencies: dictionary matching,
//! abbreviation definitions and edits of a text made of fields. The default plugins run them inside WebAssembly components,
//! and the host's benchmarks run the very same code natively.

pub mod abbrev;
pub mod fields;
mod fuzzy;
mod local;
mod matcher;
mod nearest;
mod rewrite;
mod salts;
mod table;
mod token;
mod vocab;
mod word;

pub use local::link_defined_abbreviations;
pub use matcher::{FxBuild, FxHasher, Match, Matcher, Options};
pub use rewrite::Rewrites;
pub use salts::fold_salts;
pub use token::{Token, Tokens, is_caps_acronym_s, normalize_name, normalize_token, normalize_token_into, normalize_word, tokens};
pub use vocab::{ConceptRow, VocabError, parse_concepts};
