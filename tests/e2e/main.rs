//! End-to-end tests of the `medtune` binary: one test binary, one module per area.
//! (Declared as a test target of host/ so that cargo builds the binary first.)

mod adapters;
mod annotate;
mod contract;
mod data_stage;
mod families;
mod harness;
mod hot_swap;
mod medical;
mod model;
mod openai_client;
mod own_data;
mod pipeline;
mod plugin_cli;
mod report;
mod sandbox;
mod serve;
mod train;
mod vocab;
