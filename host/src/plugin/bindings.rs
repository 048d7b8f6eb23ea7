//! Host bindings of the four plugin worlds; `types` is generated once and shared. The frozen
//! contract 0.1.0 has bindings of its own (`v0_1`), which share every type that did not change.

pub mod normalizer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "normalizer",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub mod disambiguator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "disambiguator",
        with: { "medtune:plugin/types": super::normalizer::medtune::plugin::types },
    });
}

pub mod augmenter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "augmenter",
        with: { "medtune:plugin/types": super::normalizer::medtune::plugin::types },
    });
}

pub mod metric {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "metric",
        with: { "medtune:plugin/types": super::normalizer::medtune::plugin::types },
    });
}

pub use normalizer::medtune::plugin::types;

/// Contract `medtune:plugin@0.1.0`, frozen in `wit/0.1.0/`.
pub mod v0_1 {
    /// Its types: the three whose shape 0.2.0 changed (they had no `fields`), and the
    /// current ones for the rest (the component model compares records by shape, not by name).
    pub mod types {
        use wasmtime::component::{ComponentType, Lift, Lower};

        // the interface has no functions: its (empty) host trait and linker are the current one's
        pub use crate::plugin::bindings::types::{
            Expansion, Host, HostWithStore, Mention, PluginError, PluginInfo, Prediction, Reference, Score, Setting, add_to_linker,
        };

        /// A document of 0.1.0: no fields.
        #[derive(ComponentType, Lift, Lower, Clone, Debug)]
        #[component(record)]
        pub struct Document {
            pub id: String,
            pub text: String,
            pub metadata: Vec<(String, String)>,
        }

        /// An annotated document of 0.1.0.
        #[derive(ComponentType, Lift, Lower, Clone, Debug)]
        #[component(record)]
        pub struct Annotated {
            pub document: Document,
            pub mentions: Vec<Mention>,
            pub expansions: Vec<Expansion>,
        }

        /// A derived record of 0.1.0: no fields.
        #[derive(ComponentType, Lift, Lower, Clone, Debug)]
        #[component(record)]
        pub struct Derived {
            pub text: String,
            pub metadata: Vec<(String, String)>,
            pub note: String,
        }
    }

    pub mod normalizer {
        wasmtime::component::bindgen!({
            path: "../wit/0.1.0",
            world: "normalizer",
            with: { "medtune:plugin/types": super::types },
        });
    }

    pub mod disambiguator {
        wasmtime::component::bindgen!({
            path: "../wit/0.1.0",
            world: "disambiguator",
            with: { "medtune:plugin/types": super::types },
        });
    }

    pub mod augmenter {
        wasmtime::component::bindgen!({
            path: "../wit/0.1.0",
            world: "augmenter",
            with: { "medtune:plugin/types": super::types },
        });
    }

    pub mod metric {
        wasmtime::component::bindgen!({
            path: "../wit/0.1.0",
            world: "metric",
            with: { "medtune:plugin/types": super::types },
        });
    }
}
