//! Label balancing: records of minority answers are copied until each answer is about as
//! frequent as the majority one. The host passes the training split's answer counts in the
//! metadata `label_counts` (`yes=249,no=152,maybe=49`) and each record's `answer`.
//! A label with count `c` under a majority `m` gets `m/c - 1` copies per record on average
//! (the fractional part decided by the record's seeded generator).
//!
//! Settings: `max_copies` (default 8).

use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings};

struct LabelBalancer {
    max_copies: usize,
}

impl Augmenter for LabelBalancer {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self { max_copies: settings.parse_or("max_copies", 8)? })
    }

    fn augment(&self, doc: &Annotated, rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        let (Some(answer), Some(counts)) = (doc.document.meta("answer"), doc.document.meta("label_counts")) else {
            return Ok(vec![]);
        };
        let mut mine = None;
        let mut majority = 0u32;
        for pair in counts.split(',') {
            let (label, n) = pair
                .split_once('=')
                .ok_or_else(|| PluginError::InvalidInput(format!("label_counts entry {pair:?} is not label=count")))?;
            let n: u32 = n.trim().parse().map_err(|_| PluginError::InvalidInput(format!("label_counts entry {pair:?}")))?;
            majority = majority.max(n);
            if label.trim() == answer {
                mine = Some(n);
            }
        }
        let Some(mine) = mine.filter(|&n| n > 0) else { return Ok(vec![]) };
        let want = f64::from(majority) / f64::from(mine) - 1.0;
        let copies = (want.floor() as usize + usize::from(rng.next_f64() < want.fract())).min(self.max_copies);
        Ok((0..copies)
            .map(|k| doc.document.copy(format!("label balance copy {}/{copies} of a '{answer}' record ({mine} vs {majority})", k + 1)))
            .collect())
    }
}

register_augmenter!(LabelBalancer,
    settings: { max_copies: integer = "8", "most copies of one record" });
