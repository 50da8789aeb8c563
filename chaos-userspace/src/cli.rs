//! The command line: flags become the fault model (`chaos_model::Fault`), the same data the
//! agent's JSON and fault files are, and go through the same validation. Every value is parsed
//! by the model's own `FromStr`, so a bad value fails before anything is loaded, with a message
//! naming the flag; errors that name a model path (`scope.cgroup`) are shown with the flag.
use std::collections::BTreeMap;
use std::{path::PathBuf, time::Duration};

use chaos::error::ChaosError;
use chaos_model::{
    Cidr, Direction, Distribution, Errno, Events, Fault, FaultKind, Format, HumanDuration,
    LossModel, Match, MechanismRequest, PortRange, Probability, Protocol, Scope, TcpFlags,
    ValueError, validate::CONNECT_ERRNOS,
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
    /// --iface eth0 --delay 100ms"); `#` starts a comment. A FILE ending in .json, .yaml or .yml
    /// holds the fault model instead: {"faults": [...]}, each as `chaos-bpf schema` describes.
    /// TC faults of a run share one program per interface and direction, and combine per packet.
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Stop every fault after this long (a line's own --duration can end it sooner).
        #[arg(long, value_name = "DURATION")]
        duration: Option<HumanDuration>,
        /// Print one line per injected fault on stdout.
        #[arg(long, value_enum, value_name = "FORMAT")]
        events: Option<EventFormat>,
        /// Events each CPU may emit per second; beyond it events are sampled, counters stay exact.
        #[arg(long, value_name = "N", default_value_t = Events::DEFAULT_PER_CPU_PER_SEC)]
        events_per_cpu_per_sec: u32,
        /// Serve every fault's counters for Prometheus at http://ADDR/metrics while running.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// The longest any fault of the run may live (the kernel enforces it); default 1h.
        #[arg(long, value_name = "DURATION")]
        max_duration: Option<HumanDuration>,
        #[command(flatten)]
        cri: CriArgs,
    },
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
    Agent {
        /// HOST:PORT, or unix:/PATH for a Unix socket (root only).
        #[arg(long, value_name = "ADDR", default_value = crate::agent::DEFAULT_LISTEN)]
        listen: crate::agent::Listen,
        /// A file holding the bearer token the API requires (mode 0600). Needed to listen
        /// anywhere but loopback or a Unix socket.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// The longest a fault may live, and the lifetime of one without a duration.
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        max_duration: HumanDuration,
        /// Faults armed at once; one more is refused (HTTP 429).
        #[arg(long, value_name = "N", default_value_t = 1024)]
        max_faults: usize,
        #[command(flatten)]
        cri: CriArgs,
        /// Arm the cluster's ChaosFaults on this node's pods (in-cluster credentials, or
        /// KUBECONFIG), naming pods from the API server.
        #[arg(long)]
        kubernetes: bool,
        /// This node's name (from the downward API's spec.nodeName).
        #[arg(long, value_name = "NAME", env = "NODE_NAME")]
        node_name: Option<String>,
    },
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
    /// SIGKILL every process of a cgroup, container or pod: once, or --count times --interval
    /// apart (cgroup.kill where the kernel has it).
    Kill(KillArgs),
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
        visible_alias = "peer",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub dst: Vec<Cidr>,
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

impl InjectCommand {
    pub fn common(&self) -> &CommonArgs {
        match self {
            InjectCommand::ConnectError(args) => &args.common,
            InjectCommand::RecvError(args) | InjectCommand::SendError(args) => &args.common,
            InjectCommand::Drop(args) | InjectCommand::Reset(args) => &args.common,
            InjectCommand::Delay(args) => &args.common,
            InjectCommand::Corrupt(args) => &args.common,
            InjectCommand::Kill(args) => &args.common,
        }
    }

    /// The interface options, for packet faults.
    pub fn packet(&self) -> Option<&PacketArgs> {
        match self {
            InjectCommand::Drop(args) | InjectCommand::Reset(args) => Some(&args.packet),
            InjectCommand::Delay(args) => Some(&args.packet),
            InjectCommand::Corrupt(args) => Some(&args.packet),
            _ => None,
        }
    }

    /// The fault these flags describe, as the model has it. Not yet validated: the engine runs
    /// the one validation every front end goes through.
    pub fn to_fault(&self) -> Fault {
        let common = self.common();
        let mut fault = Fault {
            kind: self.kind(),
            scope: Scope {
                cgroup: common.cgroup.clone(),
                iface: self.packet().and_then(|p| p.iface.clone()),
                netns: self.packet().and_then(|p| p.netns.clone()),
                pid: common.pid,
                container: common.container.clone(),
                pod_uid: common.pod_uid.clone(),
                pod: common.pod.clone(),
                selector: common.selector.clone().unwrap_or_default(),
                namespace: common.namespace.clone(),
                container_name: common.container_name.clone(),
            },
            matches: Match {
                dst: common.dst.clone(),
                port: common.port.clone(),
                proto: common.proto,
                exclude_dst: common.exclude_dst.clone(),
                exclude_port: common.exclude_port.clone(),
                ..Match::default()
            },
            probability: common.probability,
            force: common.force,
            dry_run: common.dry_run,
            duration: common.duration,
            events: common.events.map(|_| Events {
                per_cpu_per_sec: common
                    .events_per_cpu_per_sec
                    .unwrap_or(Events::DEFAULT_PER_CPU_PER_SEC),
            }),
            ..Fault::default()
        };
        match self {
            InjectCommand::ConnectError(args) => {
                fault.errno = args.errno;
                fault.mechanism = args.mechanism;
            }
            InjectCommand::RecvError(args) | InjectCommand::SendError(args) => {
                fault.errno = Some(args.errno);
                fault.mechanism = args.mechanism;
            }
            InjectCommand::Delay(args) => {
                fault.delay = Some(args.delay);
                fault.jitter = args.jitter;
                fault.distribution = args.distribution;
            }
            InjectCommand::Corrupt(args) => fault.fix_checksum = args.fix_checksum,
            InjectCommand::Kill(args) => {
                fault.count = args.count;
                fault.interval = args.interval;
            }
            InjectCommand::Drop(_) | InjectCommand::Reset(_) => {}
        }
        if let Some(packet) = self.packet() {
            fault.direction = packet.direction;
            fault.matches.src = packet.src.clone();
            fault.matches.sport = packet.sport.clone();
            fault.matches.exclude_src = packet.exclude_src.clone();
            fault.matches.exclude_sport = packet.exclude_sport.clone();
            fault.matches.tcp_flags = packet.tcp_flags;
            fault.loss = packet.loss_model;
            fault.seed = packet.seed;
            fault.mechanism = packet.mechanism;
        }
        fault
    }

    fn kind(&self) -> FaultKind {
        match self {
            InjectCommand::ConnectError(_) => FaultKind::ConnectError,
            InjectCommand::RecvError(_) => FaultKind::RecvError,
            InjectCommand::SendError(_) => FaultKind::SendError,
            InjectCommand::Drop(_) => FaultKind::Drop,
            InjectCommand::Reset(_) => FaultKind::Reset,
            InjectCommand::Delay(_) => FaultKind::Delay,
            InjectCommand::Corrupt(_) => FaultKind::Corrupt,
            InjectCommand::Kill(_) => FaultKind::Kill,
        }
    }
}

/// The flag that sets a model field, for errors on the command line (`match.port[0]` is
/// `--port`). Paths without a flag of their own are shown as they are.
pub fn flag_for(path: &str) -> Option<&'static str> {
    let field = path.split('[').next().unwrap_or(path);
    Some(match field {
        "kind" => return None,
        "scope.cgroup" => "--cgroup",
        "scope.iface" => "--iface",
        "scope.netns" => "--netns",
        "scope.pid" => "--pid",
        "scope.container" => "--container",
        "scope.podUid" => "--pod-uid",
        "scope.pod" => "--pod",
        "scope.selector" => "--selector",
        "scope.namespace" => "--namespace",
        "scope.containerName" => "--container-name",
        "match.dst" => "--dst",
        "match.port" => "--port",
        "match.proto" => "--proto",
        "match.src" => "--src",
        "match.sport" => "--sport",
        "match.tcpFlags" => "--tcp-flags",
        "match.excludeDst" => "--exclude-dst",
        "match.excludePort" => "--exclude-port",
        "match.excludeSrc" => "--exclude-src",
        "match.excludeSport" => "--exclude-sport",
        "loss" => "--loss-model",
        "fixChecksum" => "--fix-checksum",
        "errno" => "--errno",
        "probability" => "--probability",
        "seed" => "--seed",
        "delay" => "--delay",
        "jitter" => "--jitter",
        "distribution" => "--distribution",
        "mechanism" => "--mechanism",
        "duration" => "--duration",
        "direction" => "--direction",
        "count" => "--count",
        "interval" => "--interval",
        "force" => "--force",
        "dryRun" => "--dry-run",
        _ => return None,
    })
}

/// Model paths in a message (`scope.cgroup, scope.iface or scope.netns`) as flags.
fn flags_in(text: &str) -> String {
    text.split_inclusive(' ')
        .map(|word| {
            // The path without what surrounds it: "(scope.pid," or "scope.podUid),".
            let start = word.len() - word.trim_start_matches('(').len();
            let bare = word[start..].trim_end_matches([' ', ',', ')', ';', '.']);
            match flag_for(bare) {
                Some(flag) if bare.contains('.') => {
                    format!("{}{flag}{}", &word[..start], &word[start + bare.len()..])
                }
                _ => word.to_string(),
            }
        })
        .collect()
}

/// A library error as the command line shows it: model paths become the flags that set them.
pub fn on_the_command_line(error: ChaosError) -> ChaosError {
    match error {
        ChaosError::Field(mut field) => {
            if let Some(flag) = flag_for(&field.path) {
                field.path = flag.to_string();
            }
            field.problem = flags_in(&field.problem);
            field.accepted = flags_in(&field.accepted);
            ChaosError::Field(field)
        }
        ChaosError::Input {
            field,
            problem,
            accepted,
        } => ChaosError::Input {
            field: flag_for(field).unwrap_or(field),
            problem: flags_in(&problem),
            accepted: flags_in(&accepted),
        },
        ChaosError::AtLine {
            file,
            line,
            problem,
        } => ChaosError::AtLine {
            file,
            line,
            problem: Box::new(on_the_command_line(*problem)),
        },
        other => other,
    }
}

/// One line of a run file: an `inject` command without `chaos-bpf inject`.
#[derive(Debug, Parser)]
#[command(name = "chaos-bpf run", no_binary_name = true)]
struct RunLine {
    #[command(subcommand)]
    fault: InjectCommand,
}

/// Where a fault of a `run` file came from, for errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of a file of `inject` lines.
    Line(usize),
    /// `faults[N]` of a JSON or YAML fault set.
    Index(usize),
}

/// Whether a run file is a fault set (JSON or YAML, as `chaos-bpf schema` describes) rather
/// than fault lines, told by its content, whatever its name: the first line that is not blank
/// or a comment opens an object or list (`{`, `[`, `---`) or is a YAML key (`faults:`), which
/// a fault line, a kind and its flags, never is.
pub fn is_fault_set(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .is_some_and(|line| {
            line.starts_with(['{', '['])
                || line.starts_with("---")
                || line
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| word.ends_with(':'))
        })
}

/// The faults of a `run` file (`-` reads standard input), in the model, with where each came
/// from: lines are checked by the same parser as `inject`, JSON and YAML by the model's. Errors
/// name the file and the line or field.
pub fn read_run_file(path: &std::path::Path) -> Result<Vec<(Origin, Fault)>, ChaosError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|err| {
        ChaosError::input(
            "FILE",
            format!("{name}: {err}"),
            "a readable file of fault lines, or - for standard input",
        )
    })?;
    if is_fault_set(&text) {
        let set =
            chaos_model::parse_fault_set(&text, Format::of(Some(&name), &text)).map_err(|err| {
                ChaosError::InFile {
                    file: name.clone(),
                    problem: Box::new(ChaosError::Field(err)),
                }
            })?;
        return Ok(set
            .faults
            .into_iter()
            .enumerate()
            .map(|(index, fault)| (Origin::Index(index), fault))
            .collect());
    }
    let mut faults = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at_line = |problem: ChaosError| ChaosError::AtLine {
            file: name.clone(),
            line: number + 1,
            problem: Box::new(problem),
        };
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = shlex::split(line).ok_or_else(|| {
            at_line(ChaosError::input(
                "FILE",
                "unbalanced quotes",
                "words as a shell would split them",
            ))
        })?;
        // "chaos-bpf inject drop ..." and "inject drop ..." read as "drop ...".
        let skip = words
            .iter()
            .take(2)
            .take_while(|w| *w == "chaos-bpf" || *w == "inject")
            .count();
        words.drain(..skip);
        let parsed = RunLine::try_parse_from(&words)
            .map_err(|err| at_line(ChaosError::Usage(one_line_usage_error(&err))))?;
        let common = parsed.fault.common();
        if common.events.is_some() || common.events_per_cpu_per_sec.is_some() {
            return Err(at_line(ChaosError::input(
                "--events",
                "events are printed for the whole run",
                "chaos-bpf run --events json FILE",
            )));
        }
        if common.metrics.is_some() {
            return Err(at_line(ChaosError::input(
                "--metrics",
                "one endpoint serves the whole run",
                "chaos-bpf run --metrics ADDR FILE",
            )));
        }
        if common.max_duration.is_some() {
            return Err(at_line(ChaosError::input(
                "--max-duration",
                "the limit is the whole run's",
                "chaos-bpf run --max-duration D FILE (a line may set its own --duration)",
            )));
        }
        faults.push((Origin::Line(number + 1), parsed.fault.to_fault()));
    }
    if faults.is_empty() {
        return Err(ChaosError::input(
            "FILE",
            format!("{name} has no fault lines"),
            "one fault per line, as for inject",
        ));
    }
    Ok(faults)
}

/// clap's error as one line: "invalid value 'x' for '--probability <P>': ...".
pub fn one_line_usage_error(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: "));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaos::{errno::Errno, faults::FaultSpec};

    /// A run file's format comes from its content: the bench's JSON file has no extension.
    #[test]
    fn run_files_are_told_apart_by_content() {
        for set in [
            "{\"faults\": []}",
            "  [1]",
            "# a fault set\nfaults:\n  - kind: drop\n",
            "---\nfaults: []",
        ] {
            assert!(is_fault_set(set), "{set:?}");
        }
        for lines in [
            "drop --iface lo --probability 0.3",
            "# two rules\n\nconnect-error --cgroup /x --port 5432 # comment",
            "",
        ] {
            assert!(!is_fault_set(lines), "{lines:?}");
        }
    }

    /// What the engine makes of a command: the model's validation, errors shown with flags.
    fn spec_of(fault: &InjectCommand) -> Result<FaultSpec, ChaosError> {
        FaultSpec::from_model(&fault.to_fault())
            .map_err(|err| on_the_command_line(ChaosError::Field(err)))
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chaos-bpf").chain(args.iter().copied()))
    }

    #[test]
    fn connect_error_parses_every_option() {
        let cli = parse(&[
            "inject",
            "connect-error",
            "--cgroup",
            "x",
            "--errno",
            "ETIMEDOUT",
            "--probability",
            "0.3",
            "--dst",
            "10.1.0.0/16,::1",
            "--port",
            "5432",
            "--duration",
            "30s",
            "--events",
            "json",
        ])
        .unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        let common = fault.common();
        assert_eq!(common.duration.map(|d| d.0), Some(Duration::from_secs(30)));
        assert_eq!(common.dst.len(), 2);
        let FaultSpec::SocketCall(spec) = spec_of(&fault).unwrap() else {
            panic!()
        };
        assert_eq!(spec.errno, Errno(110));
        assert_eq!(spec.mechanism, None);
    }

    #[test]
    fn bad_values_name_the_flag_and_what_is_accepted() {
        let cases: &[(&[&str], &str)] = &[
            (&["--errno", "EFOO"], "--errno"),
            (&["--errno", "EFOO"], "ECONNREFUSED (111)"),
            (&["--probability", "1.5"], "outside [0, 1]"),
            (&["--dst", "10.0.0.0/40"], "--dst"),
            (&["--port", "70000"], "--port"),
            (&["--duration", "soon"], "--duration"),
        ];
        for (extra, expected) in cases {
            let mut args = vec!["inject", "connect-error", "--cgroup", "x"];
            args.extend_from_slice(extra);
            let err = parse(&args).unwrap_err();
            let line = one_line_usage_error(&err);
            assert!(line.contains(expected), "{line}");
            assert!(!line.contains('\n'));
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn recv_error_takes_any_errno_and_rejects_cgroup_sockaddr() {
        let cli = parse(&[
            "inject",
            "recv-error",
            "--cgroup",
            "x",
            "--errno",
            "EIO",
            "--peer",
            "10.0.0.0/8",
        ])
        .unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        assert!(spec_of(&fault).is_ok());
        let cli = parse(&[
            "inject",
            "send-error",
            "--cgroup",
            "x",
            "--errno",
            "EPIPE",
            "--mechanism",
            "cgroup-sockaddr",
        ])
        .unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        let err = spec_of(&fault).unwrap_err().to_string();
        assert_eq!(
            err,
            "--mechanism: cgroup-sockaddr cannot realise send-error; accepted: auto, fmod-ret, \
             bpf-lsm, kprobe-override"
        );
        // Every value the message offers is one the flag takes.
        for offered in ["auto", "fmod-ret", "bpf-lsm", "lsm", "kprobe-override"] {
            let args = ["inject", "send-error", "--cgroup", "x", "--errno", "EPIPE"];
            let mut with = args.to_vec();
            with.extend(["--mechanism", offered]);
            assert!(parse(&with).is_ok(), "{offered}");
        }
        assert!(
            parse(&["inject", "recv-error", "--cgroup", "x"]).is_err(),
            "--errno is required"
        );
    }

    /// Values clap accepts but the model's rules refuse, named by their flag.
    #[test]
    fn rule_errors_name_the_flag() {
        for (args, expected) in [
            (
                &["inject", "connect-error", "--cgroup", "x", "--errno", "EIO"][..],
                "--errno: connect() does not fail with EIO (5); accepted: ECONNREFUSED (111)",
            ),
            (
                &[
                    "inject", "delay", "--iface", "lo", "--delay", "1ms", "--jitter", "2ms",
                ],
                "--jitter: 2ms is larger than the delay",
            ),
        ] {
            let Command::Inject { fault } = parse(args).unwrap().command else {
                panic!()
            };
            let err = spec_of(&fault).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
            assert_eq!(spec_of(&fault).unwrap_err().exit_code(), 2);
        }
    }

    #[test]
    fn missing_scope_names_the_accepted_ones() {
        let cli = parse(&["inject", "drop"]).unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        let err = spec_of(&fault).unwrap_err().to_string();
        assert!(
            err.contains(
                "--cgroup (or --pid, --container, --pod-uid, --pod, --selector), --iface or --netns"
            ),
            "{err}"
        );
    }

    #[test]
    fn tc_options_or_tc_faults_on_a_cgroup_use_the_tc_layer() {
        let spec = |args: &[&str]| {
            let Command::Inject { fault } = parse(args).unwrap().command else {
                panic!()
            };
            spec_of(&fault)
        };
        // A plain cgroup drop is cgroup_skb's; TC-only options move it to the TC layer.
        assert!(matches!(
            spec(&["inject", "drop", "--cgroup", "x"]).unwrap(),
            FaultSpec::Drop(_)
        ));
        assert!(matches!(
            spec(&["inject", "drop", "--cgroup", "x", "--seed", "7"]).unwrap(),
            FaultSpec::Packet(..)
        ));
        for kind in ["reset", "corrupt"] {
            assert!(matches!(
                spec(&["inject", kind, "--cgroup", "x"]).unwrap(),
                FaultSpec::Packet(..)
            ));
            let err = spec(&["inject", kind]).unwrap_err().to_string();
            assert!(
                err.contains(
                "--cgroup (or --pid, --container, --pod-uid, --pod, --selector), --iface or --netns"
            ),
                "{err}"
            );
        }
        let cli = parse(&[
            "inject",
            "drop",
            "--iface",
            "lo",
            "--loss-model",
            "every-nth:3",
            "--sport",
            "80",
        ])
        .unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        assert!(matches!(spec_of(&fault).unwrap(), FaultSpec::Packet(..)));
        assert!(parse(&["inject", "drop", "--iface", "lo", "--netns", "/x"]).is_err());
    }
}
