//! chaos-bpf on Kubernetes, without the engine: the `ChaosFault` resource (its `fault` is the
//! fault model every other front end produces), which pods of the cluster a resource chooses, and
//! the status entry each node's agent writes. The agent (chaos-userspace) watches, arms and
//! patches; everything here is data and pure logic, tested without a cluster.
pub mod pods;
pub mod resource;
pub mod select;
pub mod status;

pub use resource::{ChaosFault, ChaosFaultSpec, ChaosFaultStatus, Mode, TargetSelector, crd_yaml};
