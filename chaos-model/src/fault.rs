//! A fault as data: what it does, where, to which traffic, how often, for how long. Every front
//! end (CLI flags, `run` files, the agent's JSON, experiment YAML, the Kubernetes resource)
//! produces this, and [`crate::validate`] checks it the same way whatever produced it.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{
    ByteSize, Cidr, ConnectionRate, CpuShare, Direction, Distribution, DnsName, DnsQtype, DnsRcode,
    Errno, FaultKind, FileOp, HumanDuration, LossModel, MechanismRequest, MemorySize, PortRange,
    Probability, Protocol, Rate, TcpFlags,
};

/// One fault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    /// What the fault does.
    pub kind: FaultKind,
    /// connect-error, recv-error, send-error, connection-limit, io-error: the errno the call
    /// fails with (connect-error and connection-limit: ECONNREFUSED unless given; io-error: EIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    /// Where it acts.
    #[serde(default, skip_serializing_if = "Scope::is_empty")]
    pub scope: Scope,
    /// Which traffic it acts on; empty matches everything in scope.
    #[serde(default, rename = "match", skip_serializing_if = "Match::is_empty")]
    pub matches: Match,
    /// Packet faults: sent, received or both (default egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// The share of matching operations that fail (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<Probability>,
    /// TC packet faults: how losses are spread (default random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossModel>,
    /// TC packet faults: makes the decisions reproducible for a given packet sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// dns-error, dns-delay: the names whose queries are hit (exact, `*.DOMAIN`, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<DnsName>,
    /// dns-error, dns-delay: the query type to hit (default any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<DnsQtype>,
    /// dns-error: the answer's response code, or timeout for no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<DnsRcode>,
    /// bandwidth: the most the scope's matching packets may send, all flows together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// bandwidth: how much may leave at once after a quiet spell (default 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<ByteSize>,
    /// cpu-pressure: the most CPU time the scope may use (0.2: a fifth of one CPU; 200m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuShare>,
    /// memory-pressure: above this the scope's memory is reclaimed, and it is slowed down
    /// (cgroup v2 memory.high; v1's soft limit, which acts under the node's pressure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<MemorySize>,
    /// memory-pressure: above this the OOM killer acts in the scope (memory.max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<MemorySize>,
    /// connection-limit: the most connections the scope may hold to the matching peers at once
    /// (from connect() until the socket is closed); more fail with the errno. A database pool
    /// run dry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// connection-limit: the most new connections per unit of time; more fail with the errno.
    /// A rate-limited third party, as the network sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<ConnectionRate>,
    /// connection-limit with connectionRate: how many may connect at once after a quiet spell
    /// (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_burst: Option<u32>,
    /// io-error: the files hit: every file under these directories (or these files), as the
    /// scope's processes see them (inside their container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// io-error: the operations that fail (default open, read and write).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<FileOp>,
    /// delay, dns-delay: how much later matching packets leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// delay, dns-delay: the spread around it (at most the delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
    /// delay, dns-delay: how the jitter is spread (default uniform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// partition: only new connections are cut (TCP SYNs are lost); flows established before
    /// the fault keep working. Other protocols have no connection to keep and pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_established: bool,
    /// corrupt: fix the L4 checksum so the corruption reaches the application.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fix_checksum: bool,
    /// The kernel mechanism (default auto: the best this kernel supports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<MechanismRequest>,
    /// How long the fault lives; the kernel stops it then even if chaos-bpf hangs. Without it, the
    /// agent's or run's maximum (1h unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// kill: how many times the scope's processes are killed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// kill: the time between two kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// Report each injection as an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Events>,
    /// Shadow mode in the kernel: the programs attach and count what the fault would hit (its
    /// blast radius, on live traffic) and report it, but inject nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Accept a scope wider than half of the node (the blast-radius guard). Never lifts the
    /// protection of chaos-bpf, PID 1, the kubelet, the runtime and kube-system.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Where a fault acts. Socket-call faults need a cgroup, given as a directory or by the workload
/// in it (a process, a container, a pod); packet faults take those, an interface, or a network
/// namespace (its host-side veth).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    /// A cgroup v2 directory, absolute or relative to the cgroup2 mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// An interface in chaos-bpf's network namespace (TC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// A network namespace (/var/run/netns/NAME, /proc/PID/ns/net): its host-side veth (TC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// A process: its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A container of this node, by id (full, or a unique prefix): its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A pod of this node, by uid: its cgroup, so every container of it, including ones that
    /// start later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// A pod of this node, by `NAMESPACE/NAME` (names come from the container runtime's CRI API
    /// or the Kubernetes API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pods of this node whose labels include all of these (`{"app": "redis"}`), in
    /// `namespace`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The namespace `selector` looks in (default `default`, as kubectl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Narrows a pod scope (`podUid`, `pod`, `selector`) to its containers of this name: their
    /// own cgroups, so the pod's other containers are spared, packets included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

impl Scope {
    /// The fields that name a cgroup, by path, with whether each is given.
    pub fn cgroup_sources(&self) -> [(&'static str, bool); 6] {
        [
            ("scope.cgroup", self.cgroup.is_some()),
            ("scope.pid", self.pid.is_some()),
            ("scope.container", self.container.is_some()),
            ("scope.podUid", self.pod_uid.is_some()),
            ("scope.pod", self.pod.is_some()),
            ("scope.selector", !self.selector.is_empty()),
        ]
    }

    /// Whether the scope names pods, which `containerName` can narrow.
    pub fn names_pods(&self) -> bool {
        self.pod_uid.is_some() || self.pod.is_some() || !self.selector.is_empty()
    }

    /// Whether resolving the scope needs the names of the node's workloads (CRI or Kubernetes),
    /// not just the cgroup tree.
    pub fn needs_names(&self) -> bool {
        self.pod.is_some() || !self.selector.is_empty() || self.container_name.is_some()
    }

    /// Whether a cgroup is named, one way or another.
    pub fn names_a_cgroup(&self) -> bool {
        self.cgroup_sources().iter().any(|(_, given)| *given)
    }
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self == &Scope::default()
    }
}

/// Which traffic: every list is "any of these"; all given filters must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    /// The remote peer's address (syscall and cgroup faults), or the packet's destination (TC).
    #[serde(default, alias = "peer", skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<Cidr>,
    /// The pods whose addresses are peers besides `dst`, by their labels (`{"app": "db"}`), in
    /// `peerNamespace`: resolved to their pod IPs and followed while the fault runs, as pods
    /// come and go (partition, socket-call faults, cgroup drop).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_selector: BTreeMap<String, String>,
    /// The namespace `peerSelector` looks in (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_namespace: Option<String>,
    /// The remote peer's port (syscall and cgroup faults), or the destination port (TC).
    #[serde(default, alias = "dport", skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Protocol>,
    /// TC: the packet's source address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<Cidr>,
    /// TC: the packet's source port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sport: Vec<PortRange>,
    /// TC, TCP only: segments with any of these flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlags>,
    /// Never these peers or destinations (DNS, a metrics endpoint, the agent's own API), whatever
    /// else matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_dst: Vec<Cidr>,
    /// Never these remote or destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_port: Vec<PortRange>,
    /// TC: never packets from these sources (a peer's answers, beside `excludeDst` for what is
    /// sent to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_src: Vec<Cidr>,
    /// TC: never packets from these source ports (a server's replies, beside `excludePort` for
    /// its requests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_sport: Vec<PortRange>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self == &Match::default()
    }
}

impl Fault {
    /// Whether planning needs the names of the node's workloads (CRI or Kubernetes): for its
    /// scope, or for peers given by selector.
    pub fn needs_names(&self) -> bool {
        self.scope.needs_names() || !self.matches.peer_selector.is_empty()
    }
}

/// Events for each injection, limited per CPU per second (the counters stay exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Events {
    #[serde(default = "Events::default_per_cpu_per_sec")]
    pub per_cpu_per_sec: u32,
}

impl Events {
    pub const DEFAULT_PER_CPU_PER_SEC: u32 = 1000;

    fn default_per_cpu_per_sec() -> u32 {
        Self::DEFAULT_PER_CPU_PER_SEC
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            per_cpu_per_sec: Self::DEFAULT_PER_CPU_PER_SEC,
        }
    }
}

// The keyword macro's enums derive no Default; a fault's default kind is only for `..Default`.
#[allow(clippy::derivable_impls)]
impl Default for FaultKind {
    fn default() -> Self {
        FaultKind::ConnectError
    }
}

/// Several faults at once: a `run` file, an experiment's faults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSet {
    pub faults: Vec<Fault>,
}
