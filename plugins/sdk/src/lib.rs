//! The medtune plugin SDK: implement an ordinary Rust trait, register it with one macro,
//! and `cargo build --target wasm32-wasip2 --release` gives a WebAssembly component.
//!
//! ```ignore
//! use medtune_plugin_sdk::{register_normalizer, Document, Mention, Normalizer, PluginError, Settings};
//!
//! struct Upper;
//! impl Normalizer for Upper {
//!     fn new(_settings: &Settings) -> Result<Self, PluginError> { Ok(Upper) }
//!     fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> { Ok(vec![]) }
//! }
//! register_normalizer!(Upper);
//! ```
//!
//! The macro also writes the plugin's manifest (the custom section `medtune:manifest`), which
//! the host checks the config against before any call: the read-only folders the plugin needs
//! and the settings it accepts, with their types (`string`, `integer`, `float`, `boolean`),
//! defaults and meaning:
//!
//! ```ignore
//! register_normalizer!(Drugs,
//!     grants: ["/vocab"],
//!     settings: { table: string = "/vocab/drugs.tsv", "the drug table"; min_len: integer = "4", "shortest name matched" });
//! ```
//!
//! Enable exactly one of the cargo features `normalizer`, `disambiguator`, `augmenter`,
//! `metric`: it selects the world (and so the contract) the component is built for.

#[doc(hidden)]
pub mod bindings;
mod alloc;
mod borrowed;
mod fields;
#[doc(hidden)]
pub mod manifest;
#[cfg(all(feature = "normalizer", target_arch = "wasm32"))]
#[doc(hidden)]
pub mod lower;
mod rng;
mod settings;
mod text;

pub use bindings::medtune::plugin::types::{
    Annotated, Concept, Derived, Document, Expansion, Field, Mention, PluginError, PluginInfo,
    PluginKind, Prediction, Reference, Score, Setting, Span,
};
pub use borrowed::MentionRef;
pub use fields::Rewritten;
pub use rng::Rng;
pub use settings::Settings;
pub use text::CharOffsets;

// CONTRACT_VERSION and the export names of `normalize`, from the WIT (build.rs).
include!(concat!(env!("OUT_DIR"), "/contract.rs"));

impl Document {
    /// The value of a metadata key, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A terminology normalizer: finds concept mentions in a document.
pub trait Normalizer: Sized + 'static {
    /// Builds the plugin from its settings (called on every (re-)instantiation).
    fn new(settings: &Settings) -> Result<Self, PluginError>;
    /// The mentions in one document; spans are character offsets into `doc.text`.
    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError>;
    /// The same mentions with their concept strings borrowed from the plugin where they can
    /// be (a vocabulary loaded in `new`): the host then reads them where they are, with no
    /// copy per mention. Override it when the plugin keeps its concepts' ids and names (as
    /// the default terminology normalizer does); by default it calls [`Self::normalize`].
    fn normalize_borrowed(&self, doc: &Document) -> Result<Vec<MentionRef<'_>>, PluginError> {
        Ok(self.normalize(doc)?.into_iter().map(MentionRef::from).collect())
    }
    /// A whole batch; override to share work across documents.
    fn normalize_batch(&self, batch: &[Document]) -> Vec<Result<Vec<MentionRef<'_>>, PluginError>> {
        batch.iter().map(|d| self.normalize_borrowed(d)).collect()
    }
}

/// An abbreviation disambiguator: chooses the sense of each abbreviation.
pub trait Disambiguator: Sized + 'static {
    /// Builds the plugin from its settings (called on every (re-)instantiation).
    fn new(settings: &Settings) -> Result<Self, PluginError>;
    /// The expansions in one document (with the mentions earlier plugins found).
    fn disambiguate(&self, doc: &Annotated) -> Result<Vec<Expansion>, PluginError>;
    /// A whole batch; override to share work across documents.
    fn disambiguate_batch(&self, batch: &[Annotated]) -> Vec<Result<Vec<Expansion>, PluginError>> {
        batch.iter().map(|d| self.disambiguate(d)).collect()
    }
}

/// An augmenter: makes new training records from one record.
pub trait Augmenter: Sized + 'static {
    /// Builds the plugin from its settings (called on every (re-)instantiation).
    fn new(settings: &Settings) -> Result<Self, PluginError>;
    /// New records made from `doc`; `rng` is seeded from the run's seed and the record id.
    fn augment(&self, doc: &Annotated, rng: &mut Rng) -> Result<Vec<Derived>, PluginError>;
}

/// An evaluation metric over a list of predictions.
pub trait Metric: Sized + 'static {
    /// Builds the plugin from its settings (called on every (re-)instantiation).
    fn new(settings: &Settings) -> Result<Self, PluginError>;
    /// The figures; `references[i]` belongs to `predictions[i]` (the SDK checks lengths).
    fn compute(&self, predictions: &[Prediction], references: &[Reference]) -> Result<Vec<Score>, PluginError>;
}

/// Exports a [`Normalizer`] as this crate's component.
#[macro_export]
macro_rules! register_normalizer {
    ($ty:ty $(, $($needs:tt)*)?) => {
        $crate::__manifest!(Normalizer; $($($needs)*)?);
        $crate::__register!($ty, normalizer_api, Normalizer, exports {
            // `normalize` by hand (wit-bindgen skips it): see the SDK's `lower.rs`. The names
            // carry the contract version, read from the WIT by the SDK's build.rs.
            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = $crate::__normalize_export!())]
            unsafe extern "C" fn export_normalize(batch: *mut u8, len: usize) -> *mut u8 {
                unsafe {
                    $crate::lower::normalize(batch, len, |batch, emit| {
                        $crate::__private::with_built(&PLUGIN, <$ty as $crate::Normalizer>::new, |plugin| match plugin {
                            Ok(p) => $crate::Normalizer::normalize_batch(p, batch).into_iter().for_each(|r| emit(r)),
                            Err(e) => batch.iter().for_each(|_| emit(Err(e.clone()))),
                        })
                    })
                }
            }
            #[cfg(target_arch = "wasm32")]
            #[unsafe(export_name = $crate::__normalize_post_return!())]
            unsafe extern "C" fn post_return_normalize(_results: *mut u8) {
                $crate::lower::post_return()
            }
        });
    };
}

/// Exports a [`Disambiguator`] as this crate's component.
#[macro_export]
macro_rules! register_disambiguator {
    ($ty:ty $(, $($needs:tt)*)?) => {
        $crate::__manifest!(Disambiguator; $($($needs)*)?);
        $crate::__register!($ty, disambiguator_api, Disambiguator, fn disambiguate(batch: Vec<$crate::Annotated>) -> Vec<Result<Vec<$crate::Expansion>, $crate::PluginError>> {
            $crate::__private::with_plugin(&PLUGIN, batch.len(), <$ty as $crate::Disambiguator>::new, |p: &$ty| $crate::Disambiguator::disambiguate_batch(p, &batch))
        });
    };
}

/// Exports an [`Augmenter`] as this crate's component.
#[macro_export]
macro_rules! register_augmenter {
    ($ty:ty $(, $($needs:tt)*)?) => {
        $crate::__manifest!(Augmenter; $($($needs)*)?);
        $crate::__register!($ty, augmenter_api, Augmenter, fn augment(batch: Vec<$crate::Annotated>, seed: u64) -> Vec<Result<Vec<$crate::Derived>, $crate::PluginError>> {
            $crate::__private::with_plugin(&PLUGIN, batch.len(), <$ty as $crate::Augmenter>::new, |p: &$ty| {
                batch.iter().map(|d| {
                    let mut rng = $crate::Rng::for_record(seed, &d.document.id);
                    $crate::Augmenter::augment(p, d, &mut rng)
                }).collect()
            })
        });
    };
}

/// Exports a [`Metric`] as this crate's component.
#[macro_export]
macro_rules! register_metric {
    ($ty:ty $(, $($needs:tt)*)?) => {
        $crate::__manifest!(Metric; $($($needs)*)?);
        $crate::__register!($ty, metric_api, Metric, fn compute(predictions: Vec<$crate::Prediction>, references: Vec<$crate::Reference>) -> Result<Vec<$crate::Score>, $crate::PluginError> {
            $crate::__private::with_plugin(&PLUGIN, 1, <$ty as $crate::Metric>::new, |p: &$ty| {
                if predictions.len() != references.len() {
                    return vec![Err($crate::PluginError::InvalidInput(format!(
                        "{} predictions but {} references", predictions.len(), references.len()
                    )))];
                }
                vec![$crate::Metric::compute(p, &predictions, &references)]
            }).pop().unwrap_or_else(|| Err($crate::PluginError::Internal("no result".into())))
        });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    // the batch function generated by wit-bindgen
    ($ty:ty, $api:ident, $kind:ident, fn $f:ident($($arg:ident: $argty:ty),*) -> $ret:ty $body:block) => {
        $crate::__register!(@ $ty, $api, $kind, { fn $f($($arg: $argty),*) -> $ret $body }, {});
    };
    // the batch function written out (its export items see `PLUGIN`)
    ($ty:ty, $api:ident, $kind:ident, exports { $($item:tt)* }) => {
        $crate::__register!(@ $ty, $api, $kind, {}, { $($item)* });
    };
    (@ $ty:ty, $api:ident, $kind:ident, { $($guest:tt)* }, { $($item:tt)* }) => {
        const _: () = {
            use $crate::__private::bindings::exports::medtune::plugin::$api as api;
            ::std::thread_local! {
                static PLUGIN: ::std::cell::RefCell<Option<$ty>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Export;
            impl api::Guest for Export {
                fn describe() -> $crate::PluginInfo {
                    $crate::PluginInfo {
                        name: env!("CARGO_PKG_NAME").to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        kind: $crate::PluginKind::$kind,
                        contract_version: $crate::CONTRACT_VERSION.to_owned(),
                        description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
                    }
                }
                fn configure(settings: Vec<$crate::Setting>) -> Result<(), $crate::PluginError> {
                    let plugin = $crate::__private::build(settings, <$ty as $crate::$kind>::new)?;
                    PLUGIN.with(|cell| *cell.borrow_mut() = Some(plugin));
                    Ok(())
                }
                $($guest)*
            }
            $($item)*
            $crate::__private::__export_plugin!(Export with_types_in $crate::__private::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::__export_plugin;
    pub use crate::bindings as bindings;
    use crate::{PluginError, Setting, Settings};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// Builds a plugin and refuses settings it never read.
    pub fn build<T>(settings: Vec<Setting>, new: fn(&Settings) -> Result<T, PluginError>) -> Result<T, PluginError> {
        let settings = Settings::new(settings);
        let plugin = new(&settings)?;
        settings.reject_unknown()?;
        Ok(plugin)
    }

    /// Runs `f` on the configured plugin (built with no settings if `configure` never ran),
    /// or on the error that building it gave.
    pub fn with_built<T: 'static, R>(
        cell: &'static LocalKey<RefCell<Option<T>>>,
        new: fn(&Settings) -> Result<T, PluginError>,
        f: impl FnOnce(Result<&T, PluginError>) -> R,
    ) -> R {
        cell.with(|c| {
            if c.borrow().is_none() {
                match build(Vec::new(), new) {
                    Ok(p) => *c.borrow_mut() = Some(p),
                    Err(e) => return f(Err(e)),
                }
            }
            match c.borrow().as_ref() {
                Some(p) => f(Ok(p)),
                None => f(Err(PluginError::Internal("plugin not built".into()))),
            }
        })
    }

    /// Runs `f` on the configured plugin; if it cannot be built, every record of the batch
    /// gets the error.
    pub fn with_plugin<T: 'static, R>(
        cell: &'static LocalKey<RefCell<Option<T>>>,
        batch_len: usize,
        new: fn(&Settings) -> Result<T, PluginError>,
        f: impl FnOnce(&T) -> Vec<Result<R, PluginError>>,
    ) -> Vec<Result<R, PluginError>> {
        with_built(cell, new, |plugin| match plugin {
            Ok(p) => f(p),
            Err(e) => (0..batch_len).map(|_| Err(e.clone())).collect(),
        })
    }

}
