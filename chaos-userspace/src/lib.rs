//! chaos-bpf's library: the fault engine, planning, kernel programs and mechanisms, network
//! plumbing and telemetry. It prints nothing and handles no signal; the binary's front ends
//! (`cli`, the agent) do.
pub mod doctor;
pub mod engine;
pub mod errno;
pub mod error;
pub mod faults;
pub mod filters;
pub mod fmod_ret;
pub mod fq;
pub mod inject;
pub mod instance;
pub mod interface;
pub mod kernel_btf;
pub mod mechanism;
pub mod metrics;
pub mod netlink;
pub mod object;
pub mod probe;
pub mod programs;
pub mod rule_index;
pub mod scope;
pub mod sys;
pub mod tc_records;
pub mod telemetry;
