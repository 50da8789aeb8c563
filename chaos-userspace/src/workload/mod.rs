//! The node's workloads: processes, containers and pods, found in the cgroup tree the kubelet
//! lays out (`cgroups`) and named by the container runtime's CRI API (`cri`) or, in the agent, by
//! the Kubernetes API.
pub mod cgroups;
pub mod cri;
pub mod names;
pub mod resolve;

pub use cgroups::{NotFound, container, containers, pod, pods, process};
pub use names::PodNames;
