//! Makes one new record per document, its note naming the crate version (`stamped by 1.0.0`,
//! `... 2.0.0`), after `spin` busy rounds per record: a slow augmenter in two versions for the
//! test that swaps one in the middle of a data stage's augmentation.

use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings};

struct Stamper {
    spin: u64,
}

impl Augmenter for Stamper {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Stamper { spin: settings.parse_or("spin", 0)? })
    }

    fn augment(&self, doc: &Annotated, _rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        let mut x = 0u64;
        for i in 0..self.spin {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        Ok(vec![Derived {
            text: doc.document.text.clone(),
            fields: doc.document.fields.clone(),
            metadata: vec![("spun".into(), (x % 2).to_string())],
            note: format!("stamped by {}", env!("CARGO_PKG_VERSION")),
        }])
    }
}

register_augmenter!(Stamper, settings: { spin: integer = "0", "busy rounds per record (to make a run slow)" });
