//! Host bindings of the four plugin worlds; `types` is generated once and shared.

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
