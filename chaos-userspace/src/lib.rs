//! chaos-bpf's library, in layers, each depending only on the ones below it:
//!
//! - `frontend`: the command line, run files, the agent's client, the foreground runner and
//!   experiments; `agent`: the node agent's API and ChaosFault controller. Each turns its input
//!   into the model (`chaos-model`) and calls the service, and nothing more.
//! - `service`: the one fault service: plans, checks, arms, stops, lists and follows faults.
//! - `wire`: the typed records every front end shows and reads (a fault's view, an event).
//! - `engine` and `inject` (planning) over the fault kinds (`faults`), the guard rails
//!   (`guard`), the workloads (`workload`, `scope`), the kernel side (`kernel`), network
//!   plumbing (`net`) and telemetry.
//!
//! Below `service` nothing prints or handles a signal; `termination` is the front ends' one
//! way to wait for SIGTERM and Ctrl-C.
pub mod agent;
pub mod engine;
pub mod errno;
pub mod error;
pub mod experiment;
pub mod faults;
pub mod filters;
pub mod frontend;
pub mod guard;
pub mod inject;
pub mod kernel;
pub mod net;
pub mod scope;
pub mod service;
pub mod telemetry;
pub mod termination;
pub mod wire;
pub mod workload;
