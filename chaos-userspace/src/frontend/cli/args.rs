//! The command line's arguments (clap): what `chaos-bpf --help` shows. Flags become the model
//! in `flags`; run files are read in `run_file`.
use std::collections::BTreeMap;
use std::{path::PathBuf, time::Duration};

use crate::error::ChaosError;
use chaos_model::{
    ByteSize, Cidr, ConnectionRate, CpuShare, Direction, Distribution, DnsName, DnsQtype, DnsRcode,
    Errno, Events, FileOp, HumanDuration, LossModel, MechanismRequest, MemorySize, PortRange,
    Probability, Protocol, Rate, TcpFlags, ValueError, validate::CONNECT_ERRNOS,
};
use clap::{Args, Parser, Subcommand};

/// How injections are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "chaos-bpf",
    version,
    about = "Kernel-level fault injection with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inject one fault into a scope until --duration passes or Ctrl-C/SIGTERM arrives.
    Inject {
        #[command(subcommand)]
        fault: Box<InjectCommand>,
    },
    /// Run several faults at once, each with its own id, counters and deadline.
    ///
    /// FILE (or - for standard input) has one fault per line, written as for `inject` ("delay
    /// --iface eth0 --delay 100ms"); `#` starts a comment. A FILE that opens with an object or a
    /// YAML key holds the fault model instead: {"faults": [...]}, each as `chaos-bpf schema`
    /// describes.
    /// TC faults of a run share one program per interface and direction, and combine per packet.
    Run(RunArgs),
    /// Remove TC filters and clsact qdiscs left by chaos-bpf runs that were killed (only the clsact
    /// path can leave any; tcx links and everything else die with the process).
    Cleanup,
    /// Report which fault mechanisms this kernel supports, by loading probe programs.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the fault model (what the agent's API and fault files take), or
    /// of experiment files.
    Schema {
        #[arg(value_enum, default_value = "fault")]
        of: SchemaOf,
    },
    /// Run experiments: steady state, hypothesis, faults on schedule, abort, verdict.
    Experiment {
        #[command(subcommand)]
        command: ExperimentCommand,
    },
    /// Print the ChaosFault CustomResourceDefinition (deploy/crd.yaml), generated from the types.
    Crd,
    /// Run as a node agent: an HTTP JSON API that arms and stops faults in this process.
    Agent(AgentArgs),
    /// Talk to a running agent: create, list, show and stop faults, follow its events.
    Fault {
        /// The agent: HOST:PORT or unix:/PATH.
        #[arg(long, value_name = "ADDR", default_value = crate::agent::DEFAULT_LISTEN, env = "CHAOS_AGENT", global = true)]
        agent: crate::agent::Listen,
        /// The agent's bearer token, in a file.
        #[arg(long, value_name = "PATH", env = "CHAOS_TOKEN_FILE", global = true)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: FaultCommand,
    },
}

/// `chaos-bpf run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Stop every fault after this long (a line's own --duration can end it sooner).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<HumanDuration>,
    /// Print one line per injected fault on stdout.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventFormat>,
    /// Events each CPU may emit per second; beyond it events are sampled, counters stay exact.
    #[arg(long, value_name = "N", default_value_t = Events::DEFAULT_PER_CPU_PER_SEC)]
    pub events_per_cpu_per_sec: u32,
    /// Serve every fault's counters for Prometheus at http://ADDR/metrics while running.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The longest any fault of the run may live (the kernel enforces it); default 1h.
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<HumanDuration>,
    #[command(flatten)]
    pub cri: CriArgs,
}

/// `chaos-bpf agent`'s arguments.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// unix:/PATH for a Unix socket only root can open, or HOST:PORT (then --token-file is
    /// required).
    #[arg(long, value_name = "ADDR", default_value = crate::agent::DEFAULT_LISTEN)]
    pub listen: crate::agent::Listen,
    /// A file holding the bearer token the API requires (mode 0600). Required with a TCP
    /// --listen, loopback included.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, and the probes /healthz and /readyz
    /// (no fault route is served there).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The longest a fault may live, and the lifetime of one without a duration.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub max_duration: HumanDuration,
    /// Faults armed at once; one more is refused (HTTP 429).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_faults: usize,
    #[command(flatten)]
    pub cri: CriArgs,
    /// Arm the cluster's ChaosFaults on this node's pods (in-cluster credentials, or
    /// KUBECONFIG), naming pods from the API server.
    #[arg(long)]
    pub kubernetes: bool,
    /// This node's name (from the downward API's spec.nodeName).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

impl AgentArgs {
    /// The agent's options: the metrics port bound, the node named when in a cluster.
    pub fn into_options(self) -> Result<crate::agent::AgentOptions, ChaosError> {
        let kubernetes_node = match (self.kubernetes, self.node_name) {
            (false, _) => None,
            (true, Some(node)) => Some(node),
            (true, None) => {
                return Err(ChaosError::input(
                    "--node-name",
                    "missing: --kubernetes arms the ChaosFaults of one node",
                    "--node-name NAME or NODE_NAME (the downward API's spec.nodeName)",
                ));
            }
        };
        Ok(crate::agent::AgentOptions {
            listen: self.listen,
            token_file: self.token_file,
            metrics: self
                .metrics
                .map(crate::telemetry::metrics::MetricsListener::bind)
                .transpose()?,
            max_duration: self.max_duration.0,
            max_faults: self.max_faults,
            names: crate::workload::PodNames::cri(self.cri.cri_socket.as_deref()),
            kubernetes_node,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaOf {
    Fault,
    Experiment,
}

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Run FILE (YAML, as `chaos-bpf schema experiment` describes). Exit 0: the hypothesis held;
    /// 1: it did not; 3: aborted, or the steady state did not hold before injection; 2: bad input.
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the whole report as JSON.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// Write JUnit XML: one testcase per hypothesis condition per phase.
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
        /// Write one self-contained HTML page with the timeline.
        #[arg(long, value_name = "PATH")]
        html: Option<PathBuf>,
        /// Every fault in shadow mode: the report shows what each would have hit (its blast
        /// radius, on live traffic), and nothing is injected.
        #[arg(long)]
        dry_run: bool,
        /// Arm the faults in this node agent (HOST:PORT or unix:/PATH) instead of in-process.
        #[arg(long, value_name = "ADDR")]
        agent: Option<crate::agent::Listen>,
        /// The agent's bearer token, in a file.
        #[arg(long, value_name = "PATH", env = "CHAOS_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        cri: CriArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Arm the fault in FILE (JSON or YAML, as `chaos-bpf schema` describes; - for stdin).
    Create {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Every fault the agent holds, armed and recently ended.
    List {
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One fault with its counters.
    Show { id: u32 },
    /// Stop one fault, or every fault (the kill switch).
    Stop {
        #[arg(required_unless_present = "all")]
        id: Option<u32>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// The agent's events as JSON lines: the recent ones, and with --follow every new one.
    Events {
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InjectCommand {
    /// Fail connect() with an errno.
    ConnectError(ConnectErrorArgs),
    /// Fail read(), recv(), recvfrom() and recvmsg() on IPv4/IPv6 sockets with an errno.
    RecvError(SocketErrorArgs),
    /// Fail write(), send(), sendto() and sendmsg() on IPv4/IPv6 sockets with an errno.
    SendError(SocketErrorArgs),
    /// Drop packets: of a cgroup's sockets (cgroup_skb), or on an interface or pod veth (TC).
    Drop(DropArgs),
    /// Turn matching TCP segments into RSTs on an interface or pod veth (TC).
    Reset(DropArgs),
    /// Delay matching packets leaving an interface (EDT under fq; installs fq over a default root).
    Delay(DelayArgs),
    /// Flip a random payload bit of matching TCP/UDP packets on an interface or pod veth (TC).
    Corrupt(CorruptArgs),
    /// Hold the scope's matching packets, all flows together, to a rate as they leave (an EDT
    /// token bucket under fq; installs fq over a default root) (TC).
    Bandwidth(BandwidthArgs),
    /// Send a share of matching packets twice, as they leave an interface or pod veth (TC).
    Duplicate(DropArgs),
    /// Fail DNS lookups of some names: matching queries get an answer with --rcode, made in the
    /// kernel and sent back to the asking socket, or with --rcode timeout none at all (TC).
    DnsError(DnsErrorArgs),
    /// Delay DNS queries of some names as they leave (EDT under fq, as delay) (TC).
    DnsDelay(DnsDelayArgs),
    /// Cut a cgroup, container or pods off from peers (--dst/--from-peers CIDRs, or pods by
    /// --peer-selector, followed as they come and go): their packets are lost both ways, so
    /// connections time out as in a real partition (cgroup-skb).
    Partition(PartitionArgs),
    /// Limit a cgroup's, container's or pods' TCP connections to peers: --max held at once (a
    /// pool run dry) or --rate new ones per second (a rate-limited third party); the rest fail
    /// with --errno, counted in the kernel (cgroup sock_addr).
    ConnectionLimit(ConnectionLimitArgs),
    /// Fail a cgroup's, container's or pods' opens, reads and writes of files under --path with
    /// --errno (EIO, ENOSPC, EDQUOT, EROFS, EACCES), through file hooks (fmod-ret or BPF LSM).
    IoError(IoErrorArgs),
    /// Starve a cgroup, container or pods of CPU time through their own cgroup knob (cpu.max, or
    /// v1 cpu.cfs_quota_us): no stressor runs. Put back when it ends.
    CpuPressure(CpuPressureArgs),
    /// Push a cgroup, container or pods into reclaim (memory.high) or the OOM killer
    /// (memory.max) through their own cgroup knobs (v1: soft limit, limit). Put back when it
    /// ends.
    MemoryPressure(MemoryPressureArgs),
    /// SIGKILL every process of a cgroup, container or pod: once, or --count times --interval
    /// apart (cgroup.kill where the kernel has it).
    Kill(KillArgs),
}

#[derive(Debug, Args)]
pub struct IoErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A directory (every file under it) or a file, as the scope's processes see it; repeatable.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// The operations that fail: open, read, write (default all three).
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub ops: Vec<FileOp>,
    /// Errno the operation fails with: EIO (default), ENOSPC, EDQUOT, EROFS, EACCES.
    #[arg(long, value_name = "ERRNO")]
    pub errno: Option<Errno>,
    /// Kernel mechanism: auto (the best this kernel supports), fmod-ret, bpf-lsm (or lsm).
    #[arg(long, value_name = "MECHANISM")]
    pub mechanism: Option<MechanismRequest>,
}

/// One of --max and --rate: the one validation of the model says so, as for every front end.
#[derive(Debug, Args)]
pub struct ConnectionLimitArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The most connections held at once, from connect() until the socket is closed: 5.
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// The most new connections per unit of time: 50/s, 3000/min.
    #[arg(long, value_name = "N/s")]
    pub rate: Option<ConnectionRate>,
    /// With --rate: how many may connect at once after a quiet spell (default 1).
    #[arg(long, value_name = "B")]
    pub burst: Option<u32>,
    /// Errno the refused connect() fails with: ECONNREFUSED (default), ETIMEDOUT or EAGAIN.
    #[arg(long, value_name = "ERRNO")]
    pub errno: Option<Errno>,
}

#[derive(Debug, Args)]
pub struct CpuPressureArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The most CPU time the scope may use: 0.2 (a fifth of one CPU), 1.5, or 200m.
    #[arg(long, value_name = "CPUS")]
    pub cpu: CpuShare,
}

#[derive(Debug, Args)]
pub struct MemoryPressureArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Reclaim the scope's memory above this, slowing it down: 64Mi, 1Gi.
    #[arg(long, value_name = "SIZE")]
    pub high: Option<MemorySize>,
    /// The OOM killer acts in the scope above this: 128Mi.
    #[arg(long, value_name = "SIZE")]
    pub max: Option<MemorySize>,
}

#[derive(Debug, Args)]
pub struct PartitionArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// to (the scope's packets to its peers), from (the peers' packets to it), or both
    /// (default).
    #[arg(long, value_name = "DIRECTION")]
    pub direction: Option<Direction>,
    /// Only new connections fail (their SYNs are lost); connections open before the fault keep
    /// working. UDP and other protocols then pass.
    #[arg(long)]
    pub keep_established: bool,
}

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    /// The most that leaves: 1mbit, 500kbit, 10gbit (bits per second) or 125kbps (bytes, as tc).
    #[arg(long, value_name = "RATE")]
    pub rate: Rate,
    /// How much may leave at once after a quiet spell: 32kb, 1500b (default none).
    #[arg(long, value_name = "SIZE")]
    pub burst: Option<ByteSize>,
}

/// Which DNS queries: by name and type. The server is --dst, its port --port (default 53).
#[derive(Debug, Args)]
pub struct DnsQueryArgs {
    /// A name whose queries are hit: exact (payments.example.com), every name under a domain
    /// (*.svc.cluster.local), or every name (*). Case-insensitive; repeatable.
    #[arg(long = "name", value_name = "NAME", required = true)]
    pub names: Vec<DnsName>,
    /// Only queries of this type: a, aaaa or any (default).
    #[arg(long, value_name = "TYPE")]
    pub qtype: Option<DnsQtype>,
}

#[derive(Debug, Args)]
pub struct DnsErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    #[command(flatten)]
    pub query: DnsQueryArgs,
    /// The answer: nxdomain (getaddrinfo: EAI_NONAME), servfail (EAI_AGAIN), refused, or
    /// timeout (no answer; the query is lost).
    #[arg(long, value_name = "RCODE")]
    pub rcode: DnsRcode,
}

#[derive(Debug, Args)]
pub struct DnsDelayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    #[command(flatten)]
    pub query: DnsQueryArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How many times (default 1).
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// The time between two kills.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<HumanDuration>,
}

#[derive(Debug, Args)]
pub struct CorruptArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    /// Update the TCP/UDP checksum so the corruption reaches the application; without it a
    /// receiver that verifies checksums drops the packet.
    #[arg(long)]
    pub fix_checksum: bool,
}

#[derive(Debug, Args)]
pub struct DelayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// delay's and dns-delay's timing.
#[derive(Debug, Args)]
pub struct TimingArgs {
    /// How much later matching packets leave (200ms, 1s).
    #[arg(long, value_name = "DURATION")]
    pub delay: HumanDuration,
    /// Spread around the delay: half-width (uniform) or standard deviation (normal).
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<HumanDuration>,
    /// uniform, normal or pareto.
    #[arg(long, value_name = "DIST")]
    pub distribution: Option<Distribution>,
}

/// Where names of pods and containers come from.
#[derive(Debug, Args, Clone)]
pub struct CriArgs {
    /// The container runtime's CRI socket, for pods and containers by name (default:
    /// containerd's or CRI-O's, where present).
    #[arg(long, value_name = "PATH", env = "CHAOS_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,
}

fn selector_arg(text: &str) -> Result<BTreeMap<String, String>, String> {
    chaos_model::parse_selector(text)
}

/// Options every fault takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// cgroup v2 directory to scope the fault to (absolute, or relative to the cgroup2 mount).
    #[arg(long, value_name = "PATH", group = "cgroup_scope")]
    pub cgroup: Option<String>,
    /// Scope to this process's cgroup.
    #[arg(long, value_name = "PID", group = "cgroup_scope")]
    pub pid: Option<u32>,
    /// Scope to a container of this node, by id (full, or a unique prefix).
    #[arg(long, value_name = "ID", group = "cgroup_scope")]
    pub container: Option<String>,
    /// Scope to a pod of this node, by uid: every container of it, also ones started later.
    #[arg(long, value_name = "UID", group = "cgroup_scope")]
    pub pod_uid: Option<String>,
    /// Scope to a pod of this node by name (names come from --cri-socket).
    #[arg(long, value_name = "NAMESPACE/NAME", group = "cgroup_scope")]
    pub pod: Option<String>,
    /// Scope to the pods of this node with all these labels, in --namespace.
    #[arg(long, value_name = "KEY=VALUE,...", group = "cgroup_scope", value_parser = selector_arg)]
    pub selector: Option<BTreeMap<String, String>>,
    /// The namespace --selector looks in (default: default).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Narrow --pod-uid, --pod or --selector to the pods' containers of this name (their own
    /// cgroups: the pod's other containers are spared, packets included).
    #[arg(long, value_name = "NAME")]
    pub container_name: Option<String>,
    #[command(flatten)]
    pub cri: CriArgs,
    /// Attach and count what the fault would hit (in the kernel), but inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a scope wider than half of this node's cgroups (never lifts the protection of
    /// chaos-bpf, PID 1, the kubelet, the container runtime and kube-system).
    #[arg(long)]
    pub force: bool,
    /// Never these peers or destinations (DNS, a metrics endpoint, the agent's API); repeatable.
    #[arg(long, value_name = "CIDR")]
    pub exclude_dst: Vec<Cidr>,
    /// Never these ports; repeatable.
    #[arg(long, value_name = "PORT[-PORT]")]
    pub exclude_port: Vec<PortRange>,
    /// Fraction of matching operations to fail, 0 to 1 (or a percentage: 30%).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub probability: Option<Probability>,
    /// Only peers in these CIDRs (repeat or comma-separate; IPv4 and IPv6).
    #[arg(
        long = "dst",
        visible_aliases = ["peer", "from-peers"],
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub dst: Vec<Cidr>,
    /// Also the pods with all these labels as peers, in --peer-namespace: their pod IPs, followed
    /// while the fault runs (partition, socket-call faults, cgroup drop).
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = selector_arg)]
    pub peer_selector: Option<BTreeMap<String, String>>,
    /// The namespace --peer-selector looks in (default: default).
    #[arg(long, value_name = "NAMESPACE")]
    pub peer_namespace: Option<String>,
    /// Only these peer ports or ranges (repeat or comma-separate); for TC faults the destination port.
    #[arg(
        long,
        visible_alias = "dport",
        value_name = "N[-M]",
        value_delimiter = ','
    )]
    pub port: Vec<PortRange>,
    /// Only this protocol: tcp or udp.
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<Protocol>,
    /// Stop after this long (30s, 5m, 1h30m); without it, run until Ctrl-C, SIGTERM or
    /// --max-duration.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<HumanDuration>,
    /// The longest a fault may live, and the lifetime of one without --duration: the kernel
    /// stops injecting at this deadline even if chaos-bpf hangs.
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<HumanDuration>,
    /// Print one line per injected fault on stdout.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventFormat>,
    /// Events each CPU may emit per second; beyond it events are sampled, counters stay exact.
    #[arg(long, value_name = "N")]
    pub events_per_cpu_per_sec: Option<u32>,
    /// Serve the fault's counters for Prometheus at http://ADDR/metrics while running.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// No rule without a deadline exists: a fault without `--duration` lives at most this long.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Args)]
pub struct ConnectErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Errno connect() fails with, by name or number (default ECONNREFUSED).
    #[arg(long, value_name = "ERRNO", value_parser = parse_connect_errno)]
    pub errno: Option<Errno>,
    /// Kernel mechanism: auto (the best this kernel supports), cgroup-sockaddr, fmod-ret,
    /// bpf-lsm (or lsm), kprobe-override.
    #[arg(long, value_name = "MECHANISM")]
    pub mechanism: Option<MechanismRequest>,
}

#[derive(Debug, Args)]
pub struct SocketErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Errno the call fails with, by name (ECONNRESET, ETIMEDOUT, EIO, EPIPE, ...) or number.
    #[arg(long, value_name = "ERRNO")]
    pub errno: Errno,
    /// Kernel mechanism: auto (the best this kernel supports), fmod-ret, bpf-lsm (or lsm),
    /// kprobe-override.
    #[arg(long, value_name = "MECHANISM")]
    pub mechanism: Option<MechanismRequest>,
}

#[derive(Debug, Args)]
pub struct DropArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub packet: PacketArgs,
}

/// Where and how packet faults act at the TC layer.
#[derive(Debug, Args)]
pub struct PacketArgs {
    /// Which packets: sent by the scope, received by it, or both (as the pod sees it with
    /// --netns): egress (default), ingress, both.
    #[arg(long, value_name = "DIRECTION")]
    pub direction: Option<Direction>,
    /// Act on this interface (TC).
    #[arg(long, value_name = "IFACE", conflicts_with = "netns")]
    pub iface: Option<String>,
    /// Act on the host-side veth of this network namespace (/var/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<String>,
    /// Only sources in these CIDRs (TC).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub src: Vec<Cidr>,
    /// Only these source ports or ranges (TC).
    #[arg(long, value_name = "N[-M]", value_delimiter = ',')]
    pub sport: Vec<PortRange>,
    /// Never packets from these sources (TC); repeatable.
    #[arg(long, value_name = "CIDR")]
    pub exclude_src: Vec<Cidr>,
    /// Never packets from these source ports (TC); repeatable.
    #[arg(long, value_name = "PORT[-PORT]")]
    pub exclude_sport: Vec<PortRange>,
    /// Only TCP segments with one of these flags (TC): SYN,ACK,...
    #[arg(long, value_name = "FLAGS")]
    pub tcp_flags: Option<TcpFlags>,
    /// How losses are spread (TC): random, every-nth:N, first:N, gilbert-elliott:P,R,H,K.
    #[arg(long, value_name = "MODEL")]
    pub loss_model: Option<LossModel>,
    /// Make the sequence of decisions reproducible for a given packet sequence (TC).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How TC programs attach: auto, tcx (6.6+; links die with the process) or tc-clsact.
    #[arg(long, value_name = "MECHANISM")]
    pub mechanism: Option<MechanismRequest>,
}

/// `--errno` of connect-error: the same parser as every errno, with connect's list in the error.
fn parse_connect_errno(text: &str) -> Result<Errno, ValueError> {
    text.parse::<Errno>().map_err(|err| {
        ValueError::new(
            err.problem,
            chaos_model::errno::describe_list(CONNECT_ERRNOS),
        )
    })
}
