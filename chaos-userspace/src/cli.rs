//! The command line. Values are parsed by the same `FromStr`/parser functions the library uses,
//! so a bad value fails before anything is loaded, with a message naming the flag.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    errno::Errno,
    error::ChaosError,
    faults::{
        FaultSpec, Filters, packet_drop,
        socket_call::{self, SocketCall, SocketCallError},
        tc_packet::{self, LossModel, PacketAction, PacketFault},
    },
    filters::{Cidr, Direction, PortRange, Probability, Protocol},
    mechanism::Mechanism,
    runner::EventFormat,
};

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
    /// --iface eth0 --delay 100ms"); `#` starts a comment. TC faults of a run share one program
    /// per interface and direction, and combine per packet.
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Stop every fault after this long (a line's own --duration can end it sooner).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Print one line per injected fault on stdout.
        #[arg(long, value_enum, value_name = "FORMAT")]
        events: Option<EventFormat>,
        /// Events each CPU may emit per second; beyond it events are sampled, counters stay exact.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_EVENTS_PER_CPU_PER_SEC)]
        events_per_cpu_per_sec: u32,
        /// Serve every fault's counters for Prometheus at http://ADDR/metrics while running.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// The longest any fault of the run may live (the kernel enforces it); default 1h.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        max_duration: Option<Duration>,
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay: Duration,
    /// Spread around the delay: half-width (uniform) or standard deviation (normal).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub jitter: Option<Duration>,
    #[arg(long, value_enum, default_value_t = tc_packet::Distribution::Uniform)]
    pub distribution: tc_packet::Distribution,
}

/// `--mechanism`: which kernel mechanism fails the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MechanismArg {
    /// The best one this kernel supports.
    Auto,
    /// cgroup connect hooks + bpf_set_retval (connect-error only).
    #[value(name = "cgroup-sockaddr")]
    CgroupSockaddr,
    /// fmod_ret on security_socket_* (BPF trampolines).
    FmodRet,
    /// BPF LSM socket_* hooks (doctor calls it bpf-lsm; both spellings work).
    #[value(alias = "bpf-lsm")]
    Lsm,
    /// kprobe + bpf_override_return.
    KprobeOverride,
}

impl MechanismArg {
    fn mechanism(self) -> Option<Mechanism> {
        match self {
            MechanismArg::Auto => None,
            MechanismArg::CgroupSockaddr => Some(Mechanism::CgroupSockAddr),
            MechanismArg::FmodRet => Some(Mechanism::FmodRet),
            MechanismArg::Lsm => Some(Mechanism::BpfLsm),
            MechanismArg::KprobeOverride => Some(Mechanism::KprobeOverride),
        }
    }
}

/// Options every fault takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// cgroup v2 directory to scope the fault to (absolute, or relative to the cgroup2 mount).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Fraction of matching operations to fail, 0 to 1.
    #[arg(
        long,
        value_name = "P",
        default_value = "1",
        allow_negative_numbers = true
    )]
    pub probability: Probability,
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
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub proto: Option<Protocol>,
    /// Stop after this long (30s, 5m, 1h30m); without it, run until Ctrl-C, SIGTERM or
    /// --max-duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The longest a fault may live, and the lifetime of one without --duration: the kernel
    /// stops injecting at this deadline even if chaos-bpf hangs.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
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

pub const DEFAULT_EVENTS_PER_CPU_PER_SEC: u32 = 1000;
/// No rule without a deadline exists: a fault without `--duration` lives at most this long.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);

impl CommonArgs {
    /// The kernel's per-CPU event budget: 0 when events are not printed.
    pub fn events_budget(&self) -> u32 {
        match self.events {
            Some(_) => self
                .events_per_cpu_per_sec
                .unwrap_or(DEFAULT_EVENTS_PER_CPU_PER_SEC),
            None => 0,
        }
    }
}

/// One line of an experiment file: an `inject` command without `chaos-bpf inject`.
#[derive(Debug, Parser)]
#[command(name = "chaos-bpf run", no_binary_name = true)]
struct ExperimentLine {
    #[command(subcommand)]
    fault: InjectCommand,
}

/// The faults of an experiment file (`-` reads standard input) with their line numbers, each
/// checked by the same parser as `inject`; errors name the file and line.
pub fn read_experiment(path: &std::path::Path) -> Result<Vec<(usize, InjectCommand)>, ChaosError> {
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
    let mut faults = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at_line = |source: ChaosError| ChaosError::AtLine {
            file: name.clone(),
            line: number + 1,
            source: Box::new(source),
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
        let parsed = ExperimentLine::try_parse_from(&words)
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
        faults.push((number + 1, parsed.fault));
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

#[derive(Debug, Args)]
pub struct ConnectErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Errno connect() fails with, by name or number.
    #[arg(long, value_name = "ERRNO", default_value = "ECONNREFUSED", value_parser = socket_call::parse_connect_errno)]
    pub errno: Errno,
    /// Kernel mechanism; auto picks the best this kernel supports.
    #[arg(long, value_enum, default_value_t = MechanismArg::Auto)]
    pub mechanism: MechanismArg,
}

#[derive(Debug, Args)]
pub struct SocketErrorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Errno the call fails with, by name (ECONNRESET, ETIMEDOUT, EIO, EPIPE, ...) or number.
    #[arg(long, value_name = "ERRNO", value_parser = socket_call::parse_any_errno)]
    pub errno: Errno,
    /// Kernel mechanism; auto picks the best this kernel supports.
    #[arg(long, value_enum, default_value_t = MechanismArg::Auto)]
    pub mechanism: MechanismArg,
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
    /// Which packets: sent by the scope, received by it, or both (as the pod sees it with --netns).
    #[arg(long, value_enum, default_value_t = Direction::Egress)]
    pub direction: Direction,
    /// Act on this interface (TC).
    #[arg(long, value_name = "IFACE", conflicts_with = "netns")]
    pub iface: Option<String>,
    /// Act on the host-side veth of this network namespace (/var/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Only sources in these CIDRs (TC).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub src: Vec<Cidr>,
    /// Only these source ports or ranges (TC).
    #[arg(long, value_name = "N[-M]", value_delimiter = ',')]
    pub sport: Vec<PortRange>,
    /// Only TCP segments with one of these flags (TC): SYN,ACK,...
    #[arg(long, value_name = "FLAGS", value_parser = tc_packet::parse_tcp_flags)]
    pub tcp_flags: Option<u32>,
    /// How losses are spread (TC): random, every-nth:N, first:N, gilbert-elliott:P,R,H,K.
    #[arg(long, value_name = "MODEL", default_value = "random")]
    pub loss_model: LossModel,
    /// Make the sequence of decisions reproducible for a given packet sequence (TC).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How TC programs attach: tcx links (6.6+; die with the process) or clsact filters.
    #[arg(long, value_enum, default_value_t = TcMechanismArg::Auto)]
    pub mechanism: TcMechanismArg,
}

/// `--mechanism` for packet faults on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcMechanismArg {
    /// tcx where the kernel has it, else clsact.
    Auto,
    Tcx,
    #[value(name = "tc-clsact")]
    TcClsact,
}

impl PacketArgs {
    fn on_interface(&self) -> bool {
        self.iface.is_some() || self.netns.is_some()
    }

    /// The TC-only options that were given, by flag name.
    fn tc_only_options(&self) -> Option<&'static str> {
        if !self.src.is_empty() {
            Some("--src")
        } else if !self.sport.is_empty() {
            Some("--sport")
        } else if self.tcp_flags.is_some() {
            Some("--tcp-flags")
        } else if self.loss_model != LossModel::Random {
            Some("--loss-model")
        } else if self.seed.is_some() {
            Some("--seed")
        } else if self.mechanism != TcMechanismArg::Auto {
            Some("--mechanism")
        } else {
            None
        }
    }

    fn fault(&self, action: PacketAction, filters: Filters) -> FaultSpec {
        let fault = PacketFault {
            action,
            direction: self.direction,
            filters,
            sources: self.src.clone(),
            source_ports: self.sport.clone(),
            tcp_flags: self.tcp_flags.unwrap_or(0),
            loss: self.loss_model,
            seed: self.seed,
            mechanism: match self.mechanism {
                TcMechanismArg::Auto => None,
                TcMechanismArg::Tcx => Some(Mechanism::Tcx),
                TcMechanismArg::TcClsact => Some(Mechanism::TcClsact),
            },
        };
        // Preflight swaps the hooks when --netns names a pod's namespace.
        let hooks = crate::interface::InterfaceScope::plain_hooks(self.direction);
        FaultSpec::Packet(fault, hooks)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err("accepted: a positive duration such as 30s, 5m or 1h30m".into()),
    }
}

impl CommonArgs {
    fn filters(&self) -> Filters {
        Filters {
            peers: self.dst.clone(),
            ports: self.port.clone(),
            protocol: self.proto,
            probability: self.probability,
        }
    }
}

impl InjectCommand {
    pub fn common(&self) -> &CommonArgs {
        match self {
            InjectCommand::ConnectError(args) => &args.common,
            InjectCommand::RecvError(args) | InjectCommand::SendError(args) => &args.common,
            InjectCommand::Drop(args) | InjectCommand::Reset(args) => &args.common,
            InjectCommand::Delay(args) => &args.common,
            InjectCommand::Corrupt(args) => &args.common,
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

    /// The fault, or a one-line input error for combinations clap cannot check.
    pub fn spec(&self) -> Result<FaultSpec, crate::error::ChaosError> {
        match self {
            InjectCommand::ConnectError(args) => socket_call_spec(
                SocketCall::Connect,
                args.errno,
                args.mechanism,
                &args.common,
            ),
            InjectCommand::RecvError(args) => {
                socket_call_spec(SocketCall::Recv, args.errno, args.mechanism, &args.common)
            }
            InjectCommand::SendError(args) => {
                socket_call_spec(SocketCall::Send, args.errno, args.mechanism, &args.common)
            }
            // A cgroup's drop is cgroup_skb's, unless TC-only options ask for the TC layer.
            InjectCommand::Drop(args)
                if !args.packet.on_interface() && args.packet.tc_only_options().is_none() =>
            {
                if args.common.cgroup.is_none() {
                    return Err(no_scope());
                }
                Ok(FaultSpec::Drop(packet_drop::PacketDrop {
                    direction: args.packet.direction,
                    filters: args.common.filters(),
                }))
            }
            InjectCommand::Drop(args) => {
                tc_scope(&args.common, &args.packet)?;
                Ok(args.packet.fault(PacketAction::Drop, args.common.filters()))
            }
            InjectCommand::Reset(args) => {
                tc_scope(&args.common, &args.packet)?;
                Ok(args
                    .packet
                    .fault(PacketAction::Reset, args.common.filters()))
            }
            InjectCommand::Delay(args) => delay_spec(args),
            InjectCommand::Corrupt(args) => {
                tc_scope(&args.common, &args.packet)?;
                let action = PacketAction::Corrupt {
                    fix_checksum: args.fix_checksum,
                };
                Ok(args.packet.fault(action, args.common.filters()))
            }
        }
    }
}

fn delay_spec(args: &DelayArgs) -> Result<FaultSpec, crate::error::ChaosError> {
    use crate::error::ChaosError;
    tc_scope(&args.common, &args.packet)?;
    let jitter = args.jitter.unwrap_or_default();
    if jitter > args.delay {
        return Err(ChaosError::input(
            "--jitter",
            format!(
                "{} is larger than the delay",
                humantime::format_duration(jitter)
            ),
            "a jitter no larger than --delay",
        ));
    }
    if args.delay + jitter > Duration::from_nanos(chaos_common::MAX_DELAY_NS) {
        return Err(ChaosError::input(
            "--delay",
            "delay plus jitter reaches past 5s; fq drops packets beyond its 10s horizon",
            "a delay plus jitter up to 5s (several delays on one packet are capped at 5s too)",
        ));
    }
    let action = PacketAction::Delay {
        delay_ns: args.delay.as_nanos() as u64,
        jitter_ns: jitter.as_nanos() as u64,
        distribution: args.distribution,
    };
    Ok(args.packet.fault(action, args.common.filters()))
}

/// TC faults act on an interface, a pod's veth, or a cgroup's packets on every interface.
fn tc_scope(common: &CommonArgs, packet: &PacketArgs) -> Result<(), ChaosError> {
    if packet.on_interface() || common.cgroup.is_some() {
        Ok(())
    } else {
        Err(no_scope())
    }
}

fn no_scope() -> crate::error::ChaosError {
    crate::error::ChaosError::input(
        "--cgroup",
        "no scope given",
        "--cgroup PATH, --iface IFACE or --netns PATH",
    )
}

fn socket_call_spec(
    call: SocketCall,
    errno: Errno,
    mechanism: MechanismArg,
    common: &CommonArgs,
) -> Result<FaultSpec, crate::error::ChaosError> {
    if common.cgroup.is_none() {
        return Err(crate::error::ChaosError::input(
            "--cgroup",
            "missing",
            "a cgroup v2 directory: syscall faults are scoped by cgroup",
        ));
    }
    let mechanism = mechanism.mechanism();
    if let Some(forced) = mechanism
        && !call.mechanisms().contains(&forced)
    {
        let accepted: Vec<&str> = call.mechanisms().iter().map(|m| m.id()).collect();
        return Err(crate::error::ChaosError::input(
            "--mechanism",
            format!("{} cannot fail this call", forced.id()),
            format!("auto, {}", accepted.join(", ")),
        ));
    }
    Ok(FaultSpec::SocketCall(SocketCallError {
        call,
        errno,
        filters: common.filters(),
        mechanism,
    }))
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
        assert_eq!(common.duration, Some(Duration::from_secs(30)));
        assert_eq!(common.dst.len(), 2);
        let FaultSpec::SocketCall(spec) = fault.spec().unwrap() else {
            panic!()
        };
        assert_eq!(spec.errno, Errno(110));
        assert_eq!(spec.mechanism, None);
    }

    #[test]
    fn bad_values_name_the_flag_and_what_is_accepted() {
        let cases: &[(&[&str], &str)] = &[
            (&["--errno", "EFOO"], "--errno"),
            (&["--errno", "EIO"], "ECONNREFUSED (111)"),
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
        assert!(fault.spec().is_ok());
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
        let err = fault.spec().unwrap_err().to_string();
        assert_eq!(
            err,
            "--mechanism: cgroup-sockaddr cannot fail this call; accepted: auto, fmod-ret, \
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

    #[test]
    fn missing_scope_names_the_accepted_ones() {
        let cli = parse(&["inject", "drop"]).unwrap();
        let Command::Inject { fault } = cli.command else {
            panic!()
        };
        let err = fault.spec().unwrap_err().to_string();
        assert!(
            err.contains("--cgroup PATH, --iface IFACE or --netns PATH"),
            "{err}"
        );
    }

    #[test]
    fn tc_options_or_tc_faults_on_a_cgroup_use_the_tc_layer() {
        let spec = |args: &[&str]| {
            let Command::Inject { fault } = parse(args).unwrap().command else {
                panic!()
            };
            fault.spec()
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
                err.contains("--cgroup PATH, --iface IFACE or --netns PATH"),
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
        assert!(matches!(fault.spec().unwrap(), FaultSpec::Packet(..)));
        assert!(parse(&["inject", "drop", "--iface", "lo", "--netns", "/x"]).is_err());
    }
}
