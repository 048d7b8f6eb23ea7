//! The plugins' global allocator: talc, in place of the standard library's dlmalloc.
//!
//! A normalizer's batch allocates and frees a few small strings per mention (the mentions'
//! names, and the inputs the host writes into the guest); talc does that faster than dlmalloc
//! inside WebAssembly (BENCHMARKS.md, plugin boundary). It grows the linear memory the same
//! way (`memory.grow`, refused past the sandbox's cap), so the memory limit works as before.
//! Off with the SDK's default features, for a plugin that brings its own allocator.

#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static TALC: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
