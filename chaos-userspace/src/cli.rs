//! The command line. Values are parsed by the same `FromStr`/parser functions the library uses,
//! so a bad value fails before anything is loaded, with a message naming the flag.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    errno::Errno,
    faults::{
        FaultSpec, Filters, packet_drop,
        socket_call::{self, SocketCall, SocketCallError},
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
        fault: InjectCommand,
    },
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
    /// Drop packets of the scope's sockets.
    Drop(DropArgs),
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
    /// BPF LSM socket_* hooks.
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
    pub cgroup: PathBuf,
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
    /// Only these peer ports or ranges (repeat or comma-separate).
    #[arg(long, value_name = "N[-M]", value_delimiter = ',')]
    pub port: Vec<PortRange>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub proto: Option<Protocol>,
    /// Stop after this long (30s, 5m, 1h30m); without it, run until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print one line per injected fault on stdout.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventFormat>,
    /// Events each CPU may emit per second; beyond it events are sampled, counters stay exact.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub events_per_cpu_per_sec: u32,
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
    /// Which packets: sent by the scope, received by it, or both.
    #[arg(long, value_enum, default_value_t = Direction::Egress)]
    pub direction: Direction,
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
            InjectCommand::Drop(args) => &args.common,
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
            InjectCommand::Drop(args) => Ok(FaultSpec::Drop(packet_drop::PacketDrop {
                direction: args.direction,
                filters: args.common.filters(),
            })),
        }
    }
}

fn socket_call_spec(
    call: SocketCall,
    errno: Errno,
    mechanism: MechanismArg,
    common: &CommonArgs,
) -> Result<FaultSpec, crate::error::ChaosError> {
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
        assert!(
            err.starts_with("--mechanism: cgroup-sockaddr cannot fail this call"),
            "{err}"
        );
        assert!(
            parse(&["inject", "recv-error", "--cgroup", "x"]).is_err(),
            "--errno is required"
        );
    }

    #[test]
    fn missing_cgroup_is_one_line() {
        let err = parse(&["inject", "drop"]).unwrap_err();
        let line = one_line_usage_error(&err);
        assert!(line.contains("--cgroup"), "{line}");
    }
}
