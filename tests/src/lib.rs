//! Shared pieces of the integration tests: a frame builder, the reference
//! model, a `BPF_PROG_TEST_RUN` harness and network-namespace labs.

pub mod baseline;
pub mod frames;
pub mod gen;
pub mod kernel;
pub mod model;
pub mod netns;
