//! A normalizer built against `medtune:plugin@0.3.0` (a frozen copy of the contract with
//! only the version changed): the host speaks 0.2.0 and 0.1.0 and must refuse it by name.

wit_bindgen::generate!({ path: "wit", world: "normalizer" });

use exports::medtune::plugin::normalizer_api::Guest;
use medtune::plugin::types::{Document, Mention, PluginError, PluginInfo, PluginKind, Setting};

struct Future;

impl Guest for Future {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "future-contract".into(),
            version: "0.1.0".into(),
            kind: PluginKind::Normalizer,
            contract_version: "0.3.0".into(),
            description: "built for a future contract".into(),
        }
    }

    fn configure(_settings: Vec<Setting>) -> Result<(), PluginError> {
        Ok(())
    }

    fn normalize(batch: Vec<Document>) -> Vec<Result<Vec<Mention>, PluginError>> {
        batch.iter().map(|_| Ok(vec![])).collect()
    }
}

export!(Future);
