//! Flags → the fault model (`chaos_model::Fault`), the same data the agent's JSON and fault
//! files are, through the same validation. Every value is parsed by the model's own `FromStr`,
//! so a bad value fails before anything is loaded; errors that name a model path
//! (`scope.cgroup`) are shown with the flag that sets it, from one table (`flag_for`).
use chaos_model::{Events, Fault, FaultKind, Match, Scope};

use super::args::{CommonArgs, InjectCommand, PacketArgs};
use crate::error::ChaosError;

impl super::args::TimingArgs {
    fn apply(&self, fault: &mut Fault) {
        fault.delay = Some(self.delay);
        fault.jitter = self.jitter;
        fault.distribution = self.distribution;
    }
}

impl InjectCommand {
    pub fn common(&self) -> &CommonArgs {
        match self {
            InjectCommand::ConnectError(args) => &args.common,
            InjectCommand::RecvError(args) | InjectCommand::SendError(args) => &args.common,
            InjectCommand::Drop(args)
            | InjectCommand::Reset(args)
            | InjectCommand::Duplicate(args) => &args.common,
            InjectCommand::Delay(args) => &args.common,
            InjectCommand::Corrupt(args) => &args.common,
            InjectCommand::DnsError(args) => &args.common,
            InjectCommand::Bandwidth(args) => &args.common,
            InjectCommand::DnsDelay(args) => &args.common,
            InjectCommand::Kill(args) => &args.common,
            InjectCommand::Partition(args) => &args.common,
            InjectCommand::CpuPressure(args) => &args.common,
            InjectCommand::ConnectionLimit(args) => &args.common,
            InjectCommand::IoError(args) => &args.common,
            InjectCommand::MemoryPressure(args) => &args.common,
        }
    }

    /// The interface options, for packet faults.
    pub fn packet(&self) -> Option<&PacketArgs> {
        match self {
            InjectCommand::Drop(args)
            | InjectCommand::Reset(args)
            | InjectCommand::Duplicate(args) => Some(&args.packet),
            InjectCommand::Delay(args) => Some(&args.packet),
            InjectCommand::Corrupt(args) => Some(&args.packet),
            InjectCommand::DnsError(args) => Some(&args.packet),
            InjectCommand::Bandwidth(args) => Some(&args.packet),
            InjectCommand::DnsDelay(args) => Some(&args.packet),
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
                peer_selector: common.peer_selector.clone().unwrap_or_default(),
                peer_namespace: common.peer_namespace.clone(),
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
            InjectCommand::Delay(args) => args.timing.apply(&mut fault),
            InjectCommand::Corrupt(args) => fault.fix_checksum = args.fix_checksum,
            InjectCommand::DnsError(args) => {
                fault.names = args.query.names.clone();
                fault.qtype = args.query.qtype;
                fault.rcode = Some(args.rcode);
            }
            InjectCommand::Bandwidth(args) => {
                fault.rate = Some(args.rate);
                fault.burst = args.burst;
            }
            InjectCommand::DnsDelay(args) => {
                fault.names = args.query.names.clone();
                fault.qtype = args.query.qtype;
                args.timing.apply(&mut fault);
            }
            InjectCommand::Kill(args) => {
                fault.count = args.count;
                fault.interval = args.interval;
            }
            InjectCommand::Partition(args) => {
                fault.direction = args.direction;
                fault.keep_established = args.keep_established;
            }
            InjectCommand::CpuPressure(args) => fault.cpu = Some(args.cpu),
            InjectCommand::IoError(args) => {
                fault.paths = args.paths.clone();
                fault.ops = args.ops.clone();
                fault.errno = args.errno;
                fault.mechanism = args.mechanism;
            }
            InjectCommand::ConnectionLimit(args) => {
                fault.max_connections = args.max;
                fault.connection_rate = args.rate;
                fault.connection_burst = args.burst;
                fault.errno = args.errno;
            }
            InjectCommand::MemoryPressure(args) => {
                fault.memory_high = args.high;
                fault.memory_max = args.max;
            }
            InjectCommand::Drop(_) | InjectCommand::Reset(_) | InjectCommand::Duplicate(_) => {}
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
            InjectCommand::Duplicate(_) => FaultKind::Duplicate,
            InjectCommand::Bandwidth(_) => FaultKind::Bandwidth,
            InjectCommand::Delay(_) => FaultKind::Delay,
            InjectCommand::Corrupt(_) => FaultKind::Corrupt,
            InjectCommand::DnsError(_) => FaultKind::DnsError,
            InjectCommand::DnsDelay(_) => FaultKind::DnsDelay,
            InjectCommand::Kill(_) => FaultKind::Kill,
            InjectCommand::Partition(_) => FaultKind::Partition,
            InjectCommand::CpuPressure(_) => FaultKind::CpuPressure,
            InjectCommand::ConnectionLimit(_) => FaultKind::ConnectionLimit,
            InjectCommand::IoError(_) => FaultKind::IoError,
            InjectCommand::MemoryPressure(_) => FaultKind::MemoryPressure,
        }
    }
}

/// The flag that sets each model field: one table, for errors on the command line. A test
/// checks that every flag here is one `inject` takes.
const FLAGS: &[(&str, &str)] = &[
    ("scope.cgroup", "--cgroup"),
    ("scope.iface", "--iface"),
    ("scope.netns", "--netns"),
    ("scope.pid", "--pid"),
    ("scope.container", "--container"),
    ("scope.podUid", "--pod-uid"),
    ("scope.pod", "--pod"),
    ("scope.selector", "--selector"),
    ("scope.namespace", "--namespace"),
    ("scope.containerName", "--container-name"),
    ("match.dst", "--dst"),
    ("match.port", "--port"),
    ("match.proto", "--proto"),
    ("match.src", "--src"),
    ("match.sport", "--sport"),
    ("match.tcpFlags", "--tcp-flags"),
    ("match.excludeDst", "--exclude-dst"),
    ("match.excludePort", "--exclude-port"),
    ("match.excludeSrc", "--exclude-src"),
    ("match.excludeSport", "--exclude-sport"),
    ("match.peerSelector", "--peer-selector"),
    ("match.peerNamespace", "--peer-namespace"),
    ("keepEstablished", "--keep-established"),
    ("cpu", "--cpu"),
    ("memoryHigh", "--high"),
    ("memoryMax", "--max"),
    ("loss", "--loss-model"),
    ("fixChecksum", "--fix-checksum"),
    ("errno", "--errno"),
    ("probability", "--probability"),
    ("seed", "--seed"),
    ("delay", "--delay"),
    ("jitter", "--jitter"),
    ("distribution", "--distribution"),
    ("names", "--name"),
    ("qtype", "--qtype"),
    ("rcode", "--rcode"),
    ("rate", "--rate"),
    ("burst", "--burst"),
    ("maxConnections", "--max"),
    ("connectionRate", "--rate"),
    ("connectionBurst", "--burst"),
    ("paths", "--path"),
    ("ops", "--ops"),
    ("mechanism", "--mechanism"),
    ("duration", "--duration"),
    ("direction", "--direction"),
    ("count", "--count"),
    ("interval", "--interval"),
    ("force", "--force"),
    ("dryRun", "--dry-run"),
];

/// The flag that sets a model field (`match.port[0]` is `--port`). Paths without a flag of
/// their own are shown as they are.
pub fn flag_for(path: &str) -> Option<&'static str> {
    let field = path.split('[').next().unwrap_or(path);
    FLAGS
        .iter()
        .find(|(model, _)| *model == field)
        .map(|(_, flag)| *flag)
}

/// Model paths in a message (`scope.cgroup, scope.iface or scope.netns`) as flags.
fn flags_in(text: &str) -> String {
    text.split_inclusive(' ')
        .map(|word| {
            // The path without what surrounds it: "(scope.pid," or "scope.podUid),".
            let start = word.len() - word.trim_start_matches('(').len();
            let bare = word[start..].trim_end_matches([' ', ',', ')', ';', '.']);
            match flag_for(bare) {
                // Paths (scope.cgroup) and camelCase fields (connectionRate); plain words such as
                // "rate" or "delay" in prose stay words.
                Some(flag)
                    if bare.contains('.') || bare.contains(|c: char| c.is_ascii_uppercase()) =>
                {
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
    /// Every flag of the table is a flag of some `inject` kind, so a renamed flag cannot leave
    /// errors naming one that does not exist.
    #[test]
    fn every_flag_in_the_table_exists() {
        use clap::CommandFactory as _;
        let cli = Cli::command();
        let inject = cli.find_subcommand("inject").expect("inject");
        let longs: Vec<String> = inject
            .get_subcommands()
            .flat_map(|kind| kind.get_arguments())
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        assert!(FLAGS.len() > 30, "{} flags", FLAGS.len());
        for (path, flag) in FLAGS {
            assert!(
                longs.iter().any(|l| l == flag),
                "{path} → {flag}: no such flag"
            );
        }
        assert_eq!(flag_for("match.port[0]"), Some("--port"));
        assert_eq!(flag_for("kind"), None);
    }

    use std::time::Duration;

    use clap::Parser as _;

    use super::{super::args::*, *};
    use crate::{errno::Errno, faults::FaultSpec};

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
