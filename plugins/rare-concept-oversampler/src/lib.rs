//! Rare-concept oversampling: a record whose concepts are rare in the training split gets
//! extra copies, so the model sees rare concepts more often. The host passes each record's
//! concepts with their training-split document counts in the metadata `concept_counts`
//! (`id:count|id:count`).
//!
//! Settings: `max_count` (a concept seen in at most this many training records is rare,
//! default 2), `copies` (copies per rare concept, default 1), `max_copies` (default 3).

use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings};

struct RareConcepts {
    max_count: u32,
    copies: usize,
    max_copies: usize,
}

impl Augmenter for RareConcepts {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self {
            max_count: settings.parse_or("max_count", 2)?,
            copies: settings.parse_or("copies", 1)?,
            max_copies: settings.parse_or("max_copies", 3)?,
        })
    }

    fn augment(&self, doc: &Annotated, _rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        let Some(counts) = doc.document.meta("concept_counts") else { return Ok(vec![]) };
        let mut rare = Vec::new();
        for pair in counts.split('|').filter(|p| !p.is_empty()) {
            let (id, n) = pair
                .rsplit_once(':')
                .ok_or_else(|| PluginError::InvalidInput(format!("concept_counts entry {pair:?} is not id:count")))?;
            let n: u32 = n.parse().map_err(|_| PluginError::InvalidInput(format!("concept_counts entry {pair:?}")))?;
            if n <= self.max_count {
                rare.push(id.to_owned());
            }
        }
        let copies = (rare.len() * self.copies).min(self.max_copies);
        Ok((0..copies)
            .map(|k| doc.document.copy(format!("rare-concept copy {}/{copies}: {}", k + 1, rare.join(", "))))
            .collect())
    }
}

register_augmenter!(RareConcepts,
    settings: {
        max_count: integer = "2", "a concept in at most this many training documents is rare";
        copies: integer = "1", "copies of a record per rare concept";
        max_copies: integer = "3", "most copies of one record";
    });
