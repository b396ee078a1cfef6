//! Shared pieces of the integration tests: a frame builder, the reference
//! model, a `BPF_PROG_TEST_RUN` harness, network namespaces joined by veths
//! (`netns`), UDP traffic between them (`udp`), the `shieldd` harness of
//! the daemon tests and the lab (`daemon`), and the three-host lab with
//! real SIP software (`lab`); a private CrowdSec LAPI (`crowdsec`) and the
//! fleet of SBCs around it (`fleet`) for the bouncer tests.

pub mod baseline;
pub mod crowdsec;
pub mod csum;
pub mod daemon;
pub mod fleet;
pub mod frames;
pub mod gen;
pub mod kernel;
pub mod lab;
pub mod model;
pub mod netns;
pub mod packet;
pub mod paths;
pub mod pki;
pub mod process;
pub mod promtool;
pub mod udp;
