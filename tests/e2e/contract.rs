//! Components for another contract version or another world, and bytes that are no
//! component at all, are refused with a message that names the mismatch.

use crate::harness::{Env, guest, jsonl};

#[test]
fn a_component_for_another_contract_version_is_refused() {
    let env = Env::new();
    let future = guest("future_contract");
    env.run(&["plugin", "test", future.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("built for contract medtune:plugin@0.2.0")
        .stderr_has("this host speaks medtune:plugin@0.1.0");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let env = Env::new();
    let input = env.write("in.jsonl", jsonl(&[("a", "text")]));
    let config = env.config(&input, "[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"disambiguator\"\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("is a normalizer plugin (exports medtune:plugin/normalizer-api@0.1.0), but the config expects a disambiguator");
}

#[test]
fn garbage_bytes_are_refused() {
    let env = Env::new();
    let junk = env.write("junk.wasm", b"\0asm not really a component");
    env.run(&["plugin", "test", junk.to_str().expect("utf-8")]).expect_code(1).stderr_has("not a valid WebAssembly component");
}
