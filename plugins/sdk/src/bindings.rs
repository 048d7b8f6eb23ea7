//! The generated bindings of the one world this plugin crate was built for (a cargo feature).

#[cfg(any(
    all(feature = "normalizer", any(feature = "disambiguator", feature = "augmenter", feature = "metric")),
    all(feature = "disambiguator", any(feature = "augmenter", feature = "metric")),
    all(feature = "augmenter", feature = "metric"),
))]
compile_error!("enable exactly one kind feature of medtune-plugin-sdk: a plugin crate is one kind");

#[cfg(not(any(feature = "normalizer", feature = "disambiguator", feature = "augmenter", feature = "metric")))]
compile_error!(
    "enable one kind feature of medtune-plugin-sdk: normalizer, disambiguator, augmenter or metric"
);

#[cfg(feature = "normalizer")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "normalizer",
    // written by hand in `lower.rs`, to hand the host borrowed strings
    skip: ["normalize"],
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "medtune_plugin_sdk::__private::bindings",
});

#[cfg(feature = "disambiguator")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "disambiguator",
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "medtune_plugin_sdk::__private::bindings",
});

#[cfg(feature = "augmenter")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "augmenter",
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "medtune_plugin_sdk::__private::bindings",
});

#[cfg(feature = "metric")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "metric",
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "medtune_plugin_sdk::__private::bindings",
});
