//! The one check every fault goes through, whatever produced it. Value-level mistakes are caught
//! while parsing (each value type's `FromStr`); what is left are rules between fields. Errors name
//! the field by its path in the model (`faults[2].match.port[0]`); the CLI maps paths to flags.
use std::fmt;

use chaos_common::{MAX_CIDRS, MAX_DELAY_NS};
use serde::de::DeserializeOwned;

use crate::{
    errno::describe_list,
    fault::{Fault, FaultSet},
    values::{Errno, FaultKind, LossModel, MechanismRequest, Protocol},
};

/// A field that is wrong: where, what, and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the model: `errno`, `match.port[0]`, `faults[2].scope.cgroup`.
    pub path: String,
    pub problem: String,
    /// Empty when the problem says it already (serde's own messages list the fields).
    pub accepted: String,
}

impl FieldError {
    pub fn new(
        path: impl Into<String>,
        problem: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            problem: problem.into(),
            accepted: accepted.into(),
        }
    }

    /// The same error for a field one level down: `faults[2]` + `match.port`.
    pub fn within(mut self, parent: &str) -> Self {
        self.path = if self.path.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.problem)?;
        if !self.accepted.is_empty() {
            write!(f, "; accepted: {}", self.accepted)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// Errnos `connect(2)` can really return, so applications meet failures they must handle.
pub const CONNECT_ERRNOS: &[Errno] = &[
    Errno(111), // ECONNREFUSED
    Errno(110), // ETIMEDOUT
    Errno(101), // ENETUNREACH
    Errno(113), // EHOSTUNREACH
    Errno(13),  // EACCES
    Errno(1),   // EPERM
    Errno(104), // ECONNRESET
    Errno(99),  // EADDRNOTAVAIL
];

/// The mechanisms a fault kind may ask for (besides auto).
pub fn mechanisms_for(kind: FaultKind) -> &'static [MechanismRequest] {
    use MechanismRequest::*;
    match kind {
        FaultKind::ConnectError => &[CgroupSockAddr, FmodRet, BpfLsm, KprobeOverride],
        FaultKind::RecvError | FaultKind::SendError => &[FmodRet, BpfLsm, KprobeOverride],
        FaultKind::ConnectionLimit => &[CgroupSockAddr],
        FaultKind::IoError => &[FmodRet, BpfLsm],
        // partition is cgroup_skb's, which is not a mechanism to ask for.
        FaultKind::Kill
        | FaultKind::Partition
        | FaultKind::CpuPressure
        | FaultKind::MemoryPressure => &[],
        FaultKind::Drop
        | FaultKind::Reset
        | FaultKind::Delay
        | FaultKind::Corrupt
        | FaultKind::DnsError
        | FaultKind::DnsDelay
        | FaultKind::Duplicate
        | FaultKind::Bandwidth => &[Tcx, TcClsact],
    }
}

impl Fault {
    /// The errno a socket-call fault fails with (connect-error defaults to ECONNREFUSED).
    pub fn effective_errno(&self) -> Option<Errno> {
        match self.kind {
            FaultKind::ConnectError | FaultKind::ConnectionLimit => {
                Some(self.errno.unwrap_or(Errno::ECONNREFUSED))
            }
            FaultKind::RecvError | FaultKind::SendError => self.errno,
            FaultKind::IoError => Some(self.errno.unwrap_or(Errno(5))),
            _ => None,
        }
    }

    /// Options only the TC layer has: a drop with any of them is a TC drop, not cgroup_skb's.
    pub fn tc_only_option(&self) -> Option<&'static str> {
        if !self.matches.src.is_empty() {
            Some("match.src")
        } else if !self.matches.sport.is_empty() {
            Some("match.sport")
        } else if !self.matches.exclude_src.is_empty() {
            Some("match.excludeSrc")
        } else if !self.matches.exclude_sport.is_empty() {
            Some("match.excludeSport")
        } else if self.matches.tcp_flags.is_some() {
            Some("match.tcpFlags")
        } else if self.loss.is_some_and(|l| l != LossModel::Random) {
            Some("loss")
        } else if self.seed.is_some() {
            Some("seed")
        } else if self.mechanism.is_some_and(|m| m != MechanismRequest::Auto) {
            Some("mechanism")
        } else {
            None
        }
    }
}

/// Checks the rules between a fault's fields. Nothing here touches the system: whether the
/// cgroup exists or the kernel has the mechanism is the engine's to find out.
pub fn validate(fault: &Fault) -> Result<(), FieldError> {
    let kind = fault.kind;
    let only_for = |path: &str, kinds: &str| {
        FieldError::new(
            path,
            format!("{kind} does not take it"),
            format!("only {kinds} take {path}"),
        )
    };
    // Fields of one kind only.
    if fault.errno.is_some()
        && !kind.is_socket_call()
        && !matches!(kind, FaultKind::ConnectionLimit | FaultKind::IoError)
    {
        return Err(only_for(
            "errno",
            "connect-error, recv-error, send-error, connection-limit and io-error",
        ));
    }
    if kind != FaultKind::IoError {
        for (present, path) in [
            (!fault.paths.is_empty(), "paths"),
            (!fault.ops.is_empty(), "ops"),
        ] {
            if present {
                return Err(only_for(path, "io-error"));
            }
        }
    }
    if kind != FaultKind::ConnectionLimit {
        for (present, path) in [
            (fault.max_connections.is_some(), "maxConnections"),
            (fault.connection_rate.is_some(), "connectionRate"),
            (fault.connection_burst.is_some(), "connectionBurst"),
        ] {
            if present {
                return Err(only_for(path, "connection-limit"));
            }
        }
    }
    if kind != FaultKind::Delay && kind != FaultKind::DnsDelay {
        for (present, path) in [
            (fault.delay.is_some(), "delay"),
            (fault.jitter.is_some(), "jitter"),
            (fault.distribution.is_some(), "distribution"),
        ] {
            if present {
                return Err(only_for(path, "delay and dns-delay faults"));
            }
        }
    }
    if !kind.is_dns() {
        for (present, path) in [
            (!fault.names.is_empty(), "names"),
            (fault.qtype.is_some(), "qtype"),
        ] {
            if present {
                return Err(only_for(path, "dns-error and dns-delay"));
            }
        }
    }
    if kind != FaultKind::Bandwidth {
        for (present, path) in [
            (fault.rate.is_some(), "rate"),
            (fault.burst.is_some(), "burst"),
        ] {
            if present {
                return Err(only_for(path, "bandwidth"));
            }
        }
    } else if fault.rate.is_none() {
        return Err(FieldError::new(
            "rate",
            "missing",
            "a rate such as 1mbit, 500kbit, 10gbit",
        ));
    }
    if fault.rcode.is_some() && kind != FaultKind::DnsError {
        return Err(only_for("rcode", "dns-error"));
    }
    if fault.keep_established && kind != FaultKind::Partition {
        return Err(only_for("keepEstablished", "partition"));
    }
    validate_peer_selector(fault)?;
    if fault.fix_checksum && kind != FaultKind::Corrupt {
        return Err(only_for("fixChecksum", "corrupt faults"));
    }
    if let Some(mechanism) = fault.mechanism
        && mechanism != MechanismRequest::Auto
        && !mechanisms_for(kind).contains(&mechanism)
    {
        let accepted: Vec<&str> = std::iter::once("auto")
            .chain(mechanisms_for(kind).iter().map(|m| m.name()))
            .collect();
        return Err(FieldError::new(
            "mechanism",
            format!("{mechanism} cannot realise {kind}"),
            accepted.join(", "),
        ));
    }
    if fault.matches.dst.len() > MAX_CIDRS as usize {
        return Err(FieldError::new(
            "match.dst",
            format!("{} CIDRs", fault.matches.dst.len()),
            format!("at most {MAX_CIDRS}"),
        ));
    }
    if fault.matches.tcp_flags.is_some() && fault.matches.proto == Some(Protocol::Udp) {
        return Err(FieldError::new(
            "match.tcpFlags",
            "TCP flags cannot match UDP packets",
            "tcpFlags with proto tcp or no proto",
        ));
    }

    if fault.matches.excludes_everything() {
        let m = &fault.matches;
        let field = [
            (
                m.exclude_dst.is_empty() || !m.effective_dst().is_empty(),
                "match.excludeDst",
            ),
            (
                m.exclude_src.is_empty() || !m.effective_src().is_empty(),
                "match.excludeSrc",
            ),
            (
                m.exclude_sport.is_empty() || !m.effective_sports().is_empty(),
                "match.excludeSport",
            ),
        ]
        .into_iter()
        .find(|(leaves_some, _)| !leaves_some)
        .map_or("match.excludePort", |(_, field)| field);
        return Err(FieldError::new(
            field,
            "excludes everything the fault would match",
            "exclusions that leave some of match.dst / match.port (match.src / match.sport)",
        ));
    }
    let scope = &fault.scope;
    let named: Vec<&str> = scope
        .cgroup_sources()
        .iter()
        .filter(|(_, given)| *given)
        .map(|(path, _)| *path)
        .collect();
    if let [first, second, ..] = named.as_slice() {
        return Err(FieldError::new(
            *second,
            format!("given together with {first}: both name a cgroup"),
            "one of scope.cgroup, scope.pid, scope.container, scope.podUid, scope.pod, scope.selector",
        ));
    }
    validate_workload_scope(scope)?;
    if scope.iface.is_some() && scope.netns.is_some() {
        return Err(FieldError::new(
            "scope.netns",
            "given together with scope.iface",
            "one of scope.iface and scope.netns",
        ));
    }
    if kind != FaultKind::CpuPressure && fault.cpu.is_some() {
        return Err(only_for("cpu", "cpu-pressure"));
    }
    if kind != FaultKind::MemoryPressure {
        for (present, path) in [
            (fault.memory_high.is_some(), "memoryHigh"),
            (fault.memory_max.is_some(), "memoryMax"),
        ] {
            if present {
                return Err(only_for(path, "memory-pressure"));
            }
        }
    }
    if kind.is_pressure() {
        validate_pressure(fault)?;
    }
    if kind.is_kill() {
        validate_kill(fault)?;
    } else if fault.interval.is_some() || fault.count.is_some() {
        return Err(only_for(
            if fault.interval.is_some() {
                "interval"
            } else {
                "count"
            },
            "kill",
        ));
    }
    if kind.is_socket_call() {
        validate_socket_call(fault)?;
    } else if scope.is_empty() {
        return Err(FieldError::new(
            "scope.cgroup",
            "no scope given",
            "scope.cgroup (or scope.pid, scope.container, scope.podUid, scope.pod, scope.selector), scope.iface or scope.netns",
        ));
    }
    if kind == FaultKind::Delay || kind == FaultKind::DnsDelay {
        validate_delay(fault)?;
    }
    if kind.is_dns() {
        validate_dns(fault)?;
    }
    if kind == FaultKind::Partition {
        validate_partition(fault)?;
    }
    if kind == FaultKind::ConnectionLimit {
        validate_connection_limit(fault)?;
    }
    if kind == FaultKind::IoError {
        validate_io_error(fault)?;
    }
    Ok(())
}

/// Errnos file operations really fail with: a failing disk (EIO), a full one (ENOSPC), a quota
/// (EDQUOT), a filesystem remounted read-only (EROFS), a permission taken away (EACCES).
pub const IO_ERRNOS: &[Errno] = &[
    Errno(5),   // EIO
    Errno(28),  // ENOSPC
    Errno(122), // EDQUOT
    Errno(30),  // EROFS
    Errno(13),  // EACCES
];

/// io-error fails a cgroup's file operations under some paths: it needs a cgroup and absolute
/// paths, and takes no traffic options.
fn validate_io_error(fault: &Fault) -> Result<(), FieldError> {
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "the workload whose file operations fail: scope.cgroup, scope.pid, \
             scope.container, scope.podUid, scope.pod or scope.selector",
        ));
    }
    if fault.paths.is_empty() {
        return Err(FieldError::new(
            "paths",
            "missing",
            "absolute paths of directories or files, such as /var/lib/postgresql",
        ));
    }
    for (index, path) in fault.paths.iter().enumerate() {
        if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 {
            return Err(FieldError::new(
                format!("paths[{index}]"),
                format!("{path:?} is not an absolute path"),
                "absolute paths of directories or files, such as /var/lib/postgresql",
            ));
        }
    }
    if fault.paths.len() > 64 {
        return Err(FieldError::new(
            "paths",
            format!("{} paths", fault.paths.len()),
            "at most 64",
        ));
    }
    if let Some(errno) = fault.errno
        && !IO_ERRNOS.contains(&errno)
    {
        return Err(FieldError::new(
            "errno",
            format!("file operations do not fail with {errno} here"),
            describe_list(IO_ERRNOS),
        ));
    }
    let other = traffic_option(fault).filter(|path| !matches!(*path, "probability" | "mechanism"));
    if let Some(path) = other {
        return Err(FieldError::new(
            path,
            "io-error fails the scope's file operations; it takes no traffic options",
            "io-error with scope, paths, ops, errno, probability, mechanism, events, duration \
             and dryRun",
        ));
    }
    Ok(())
}

/// Errnos a refused connection can really meet: the server's backlog full or a firewall's
/// reject (ECONNREFUSED), a SYN never answered (ETIMEDOUT), a non-blocking pool out of local
/// resources (EAGAIN).
pub const CONNECTION_LIMIT_ERRNOS: &[Errno] = &[
    Errno::ECONNREFUSED,
    Errno(110), // ETIMEDOUT
    Errno(11),  // EAGAIN
];

/// connection-limit counts a cgroup's TCP connections to its peers: it needs a cgroup and one
/// limit, seats or a rate, and takes the peer filters but no packet or draw options.
fn validate_connection_limit(fault: &Fault) -> Result<(), FieldError> {
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "the workload whose connections are counted: scope.cgroup, scope.pid, \
             scope.container, scope.podUid, scope.pod or scope.selector",
        ));
    }
    let seats = chaos_common::MAX_CONNECTION_SEATS;
    match (fault.max_connections, fault.connection_rate) {
        (None, None) => {
            return Err(FieldError::new(
                "maxConnections",
                "missing (maxConnections or connectionRate)",
                format!("connections held at once, 1 to {seats}, or a rate such as 50/s"),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "connectionRate",
                "given together with maxConnections",
                "one limit: maxConnections (held at once) or connectionRate (new per second)",
            ));
        }
        (Some(max), None) if max == 0 || max > seats => {
            return Err(FieldError::new(
                "maxConnections",
                format!("{max}"),
                format!("1 to {seats} connections held at once"),
            ));
        }
        (Some(_), None) if fault.connection_burst.is_some() => {
            return Err(FieldError::new(
                "connectionBurst",
                "given with maxConnections",
                "connectionBurst with connectionRate",
            ));
        }
        _ => {}
    }
    if let Some(burst) = fault.connection_burst
        && !(1..=1_000_000).contains(&burst)
    {
        return Err(FieldError::new(
            "connectionBurst",
            format!("{burst}"),
            "1 to 1000000 connections at once",
        ));
    }
    if let Some(errno) = fault.errno
        && !CONNECTION_LIMIT_ERRNOS.contains(&errno)
    {
        return Err(FieldError::new(
            "errno",
            format!("a refused connection does not fail with {errno}"),
            describe_list(CONNECTION_LIMIT_ERRNOS),
        ));
    }
    if fault.matches.proto.is_some_and(|p| p != Protocol::Tcp) {
        return Err(FieldError::new(
            "match.proto",
            "connection-limit counts TCP connections",
            "tcp, or no proto",
        ));
    }
    let m = &fault.matches;
    let other = [
        (fault.scope.iface.is_some(), "scope.iface"),
        (fault.scope.netns.is_some(), "scope.netns"),
        (fault.direction.is_some(), "direction"),
        (fault.probability.is_some(), "probability"),
        (!m.src.is_empty(), "match.src"),
        (!m.sport.is_empty(), "match.sport"),
        (m.tcp_flags.is_some(), "match.tcpFlags"),
        (!m.exclude_src.is_empty(), "match.excludeSrc"),
        (!m.exclude_sport.is_empty(), "match.excludeSport"),
        (fault.loss.is_some(), "loss"),
        (fault.seed.is_some(), "seed"),
    ]
    .into_iter()
    .find_map(|(present, path)| present.then_some(path));
    if let Some(path) = other {
        return Err(FieldError::new(
            path,
            "connection-limit counts the scope's connections to its peers; it takes no packet \
             or draw options",
            "connection-limit with scope, match.dst, match.peerSelector, match.port, \
             match.excludeDst, match.excludePort, maxConnections or connectionRate \
             (connectionBurst), errno, duration and dryRun",
        ));
    }
    Ok(())
}

/// Peers by label: followed through the per-rule address filters, which the socket-call faults,
/// cgroup drop and partition have (a TC rule's destinations are indexed when it is armed).
fn validate_peer_selector(fault: &Fault) -> Result<(), FieldError> {
    let m = &fault.matches;
    if m.peer_namespace.is_some() && m.peer_selector.is_empty() {
        return Err(FieldError::new(
            "match.peerNamespace",
            "given without match.peerSelector",
            "match.peerNamespace with match.peerSelector",
        ));
    }
    if m.peer_selector.is_empty() {
        return Ok(());
    }
    let cgroup_drop = fault.kind == FaultKind::Drop
        && fault.tc_only_option().is_none()
        && fault.scope.iface.is_none()
        && fault.scope.netns.is_none();
    if !(fault.kind.is_socket_call()
        || fault.kind == FaultKind::Partition
        || fault.kind == FaultKind::ConnectionLimit
        || cgroup_drop)
    {
        return Err(FieldError::new(
            "match.peerSelector",
            format!("{} cannot follow peers by label", fault.kind),
            "match.peerSelector with partition, connection-limit, connect-error, recv-error, \
             send-error, or drop on a cgroup without TC-only options (else match.dst)",
        ));
    }
    for (key, value) in &m.peer_selector {
        if !is_label_key(key) || !is_label_value(value) {
            return Err(FieldError::new(
                "match.peerSelector",
                format!("{key}={value} is not a label"),
                "labels as key=value, keys [prefix/]name and values of letters, digits, '-', \
                 '_' and '.' (at most 63)",
            ));
        }
    }
    if let Some(namespace) = &m.peer_namespace
        && !is_k8s_name(namespace)
    {
        return Err(FieldError::new(
            "match.peerNamespace",
            format!("{namespace:?} is not a namespace name"),
            "a Kubernetes namespace name",
        ));
    }
    Ok(())
}

/// A partition cuts a cgroup's sockets off from its peers, which it must be given; the TC
/// layer's options mean nothing to it.
fn validate_partition(fault: &Fault) -> Result<(), FieldError> {
    if fault.matches.dst.is_empty() && fault.matches.peer_selector.is_empty() {
        return Err(FieldError::new(
            "match.dst",
            "missing: a partition needs the peers to cut off",
            "peer CIDRs (match.dst, --from-peers) or pods by label (match.peerSelector, \
             --peer-selector app=db)",
        ));
    }
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "the workload to cut off: scope.cgroup, scope.pid, scope.container, scope.podUid, \
             scope.pod or scope.selector",
        ));
    }
    let tc_only = fault
        .tc_only_option()
        .filter(|path| *path != "mechanism")
        .or(fault.scope.iface.is_some().then_some("scope.iface"))
        .or(fault.scope.netns.is_some().then_some("scope.netns"));
    if let Some(path) = tc_only {
        return Err(FieldError::new(
            path,
            "partition cuts the scope's own sockets off (cgroup-skb), not an interface's packets",
            "partition with a cgroup, container or pod scope, peers, ports, proto, direction \
             and keepEstablished",
        ));
    }
    Ok(())
}

/// DNS faults hit the queries a scope sends, by name: they need names (and dns-error a response
/// code), and the packet options that would mean something else for a query are refused.
fn validate_dns(fault: &Fault) -> Result<(), FieldError> {
    if fault.names.is_empty() {
        return Err(FieldError::new(
            "names",
            "missing",
            "the names whose queries are hit: payments.example.com, *.svc.cluster.local, or *",
        ));
    }
    if fault.names.len() > chaos_common::MAX_DNS_NAMES as usize {
        return Err(FieldError::new(
            "names",
            format!("{} names", fault.names.len()),
            format!("at most {}", chaos_common::MAX_DNS_NAMES),
        ));
    }
    if fault.kind == FaultKind::DnsError && fault.rcode.is_none() {
        return Err(FieldError::new(
            "rcode",
            "missing",
            crate::values::DnsRcode::NAMES.join(", "),
        ));
    }
    if fault
        .direction
        .is_some_and(|d| d != crate::values::Direction::Egress)
    {
        return Err(FieldError::new(
            "direction",
            "a DNS fault acts on the queries its scope sends",
            "egress (the default)",
        ));
    }
    let m = &fault.matches;
    for (present, path) in [
        (m.tcp_flags.is_some(), "match.tcpFlags"),
        (!m.src.is_empty(), "match.src"),
        (!m.sport.is_empty(), "match.sport"),
        (fault.loss.is_some_and(|l| l != LossModel::Random), "loss"),
    ] {
        if present {
            return Err(FieldError::new(
                path,
                format!("{} matches queries by name, server and port", fault.kind),
                "names, qtype, match.dst (the DNS server), match.port (default 53), \
                 match.proto",
            ));
        }
    }
    Ok(())
}

/// cpu-pressure and memory-pressure set the scope's own cgroup knobs: they need a cgroup and
/// their limit, and take no traffic or kernel options.
fn validate_pressure(fault: &Fault) -> Result<(), FieldError> {
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "the workload to starve: scope.cgroup, scope.pid, scope.container, scope.podUid, \
             scope.pod or scope.selector",
        ));
    }
    match fault.kind {
        FaultKind::CpuPressure if fault.cpu.is_none() => {
            return Err(FieldError::new(
                "cpu",
                "missing",
                "the CPU time the scope may use: 0.2 (a fifth of one CPU), 200m",
            ));
        }
        FaultKind::MemoryPressure if fault.memory_high.is_none() && fault.memory_max.is_none() => {
            return Err(FieldError::new(
                "memoryHigh",
                "missing (memoryHigh, memoryMax or both)",
                "a size such as 64Mi",
            ));
        }
        _ => {}
    }
    if let (Some(high), Some(max)) = (fault.memory_high, fault.memory_max)
        && high > max
    {
        return Err(FieldError::new(
            "memoryHigh",
            format!("{high} is above memoryMax {max}"),
            "memoryHigh at most memoryMax",
        ));
    }
    if let Some(path) = traffic_option(fault) {
        return Err(FieldError::new(
            path,
            format!(
                "{} sets the scope's cgroup knobs; it takes no traffic or kernel options",
                fault.kind
            ),
            format!("{} with scope, its limit, duration and dryRun", fault.kind),
        ));
    }
    Ok(())
}

/// The first traffic or kernel option given, for the kinds that take none. `events` is not one:
/// the agent asks every fault for its events, and a kind without per-operation events (kill
/// reports its rounds, pressure nothing) simply sends none.
fn traffic_option(fault: &Fault) -> Option<&'static str> {
    let m = &fault.matches;
    [
        (fault.scope.iface.is_some(), "scope.iface"),
        (fault.scope.netns.is_some(), "scope.netns"),
        (!m.dst.is_empty(), "match.dst"),
        (!m.port.is_empty(), "match.port"),
        (m.proto.is_some(), "match.proto"),
        (!m.src.is_empty(), "match.src"),
        (!m.sport.is_empty(), "match.sport"),
        (m.tcp_flags.is_some(), "match.tcpFlags"),
        (!m.exclude_dst.is_empty(), "match.excludeDst"),
        (!m.exclude_port.is_empty(), "match.excludePort"),
        (!m.exclude_src.is_empty(), "match.excludeSrc"),
        (!m.exclude_sport.is_empty(), "match.excludeSport"),
        (!m.peer_selector.is_empty(), "match.peerSelector"),
        (fault.direction.is_some(), "direction"),
        (fault.probability.is_some(), "probability"),
        (fault.mechanism.is_some(), "mechanism"),
        (fault.loss.is_some(), "loss"),
        (fault.seed.is_some(), "seed"),
    ]
    .into_iter()
    .find_map(|(present, path)| present.then_some(path))
}

/// kill takes a scope of processes (a cgroup, a process, a container, pods) and how often; the
/// traffic and kernel options of the other kinds mean nothing to it.
fn validate_kill(fault: &Fault) -> Result<(), FieldError> {
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "the processes to kill: scope.cgroup, scope.pid, scope.container, scope.podUid, \
             scope.pod or scope.selector",
        ));
    }
    if let Some(path) = traffic_option(fault) {
        return Err(FieldError::new(
            path,
            "kill SIGKILLs the scope's processes; it takes no traffic or kernel options",
            "kill with scope, count, interval, duration and dryRun",
        ));
    }
    if fault.count == Some(0) {
        return Err(FieldError::new("count", "0", "1 or more"));
    }
    if fault.count.unwrap_or(1) > 1 && fault.interval.is_none() {
        return Err(FieldError::new(
            "interval",
            "missing: more than one kill needs the time between them",
            "a duration such as 10s",
        ));
    }
    Ok(())
}

/// The workload fields' own rules: a pod is `NAMESPACE/NAME`, labels and names are Kubernetes
/// names, and `namespace` and `containerName` only narrow the scopes they belong to.
fn validate_workload_scope(scope: &crate::Scope) -> Result<(), FieldError> {
    if let Some(pod) = &scope.pod {
        let parts: Vec<&str> = pod.split('/').collect();
        if !matches!(parts.as_slice(), [ns, name] if is_k8s_name(ns) && is_k8s_name(name)) {
            return Err(FieldError::new(
                "scope.pod",
                format!("{pod:?} is not NAMESPACE/NAME"),
                "a pod as NAMESPACE/NAME (kube-system/coredns-5d78c9869d-abcde)",
            ));
        }
    }
    for (key, value) in &scope.selector {
        if !is_label_key(key) || !is_label_value(value) {
            return Err(FieldError::new(
                format!("scope.selector.{key}"),
                format!("{key}={value} is not a label"),
                "labels as key=value, keys [prefix/]name and values of letters, digits, '-', '_' \
                 and '.' (at most 63)",
            ));
        }
    }
    if let Some(namespace) = &scope.namespace {
        if scope.selector.is_empty() {
            return Err(FieldError::new(
                "scope.namespace",
                "given without scope.selector",
                "scope.namespace with scope.selector (scope.pod names its namespace itself)",
            ));
        }
        if !is_k8s_name(namespace) {
            return Err(FieldError::new(
                "scope.namespace",
                format!("{namespace:?} is not a namespace name"),
                "a Kubernetes namespace name",
            ));
        }
    }
    if let Some(name) = &scope.container_name {
        if !scope.names_pods() {
            return Err(FieldError::new(
                "scope.containerName",
                "narrows a pod scope, and none is given",
                "scope.containerName with scope.podUid, scope.pod or scope.selector",
            ));
        }
        if !is_k8s_name(name) {
            return Err(FieldError::new(
                "scope.containerName",
                format!("{name:?} is not a container name"),
                "a container name of the pod spec",
            ));
        }
    }
    Ok(())
}

/// A DNS-1123 label or subdomain, as namespaces, pod and container names are.
fn is_k8s_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    (prefix.is_empty() || is_k8s_name(prefix)) && !name.is_empty() && is_label_value(name)
}

/// Parses a selector as kubectl writes it, `app=redis,tier=cache` (the CLI's `--selector`).
pub fn parse_selector(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("{pair:?} is not key=value; accepted: labels as key=value[,key=value]")
            })?;
            Ok((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn validate_socket_call(fault: &Fault) -> Result<(), FieldError> {
    let kind = fault.kind;
    if !fault.scope.names_a_cgroup() {
        return Err(FieldError::new(
            "scope.cgroup",
            "missing",
            "a cgroup v2 directory: syscall faults are scoped by cgroup (or scope.pid, \
             scope.container, scope.podUid, scope.pod, scope.selector)",
        ));
    }
    for (present, path) in [
        (fault.scope.iface.is_some(), "scope.iface"),
        (fault.scope.netns.is_some(), "scope.netns"),
        (fault.direction.is_some(), "direction"),
    ] {
        if present {
            return Err(FieldError::new(
                path,
                format!("{kind} fails socket calls of a cgroup, it has no {path}"),
                "scope.cgroup",
            ));
        }
    }
    if let Some(option) = fault.tc_only_option().filter(|o| *o != "mechanism") {
        return Err(FieldError::new(
            option,
            format!("only TC packet faults take it, not {kind}"),
            "drop, reset, delay or corrupt for packet-level options",
        ));
    }
    match (kind, fault.errno) {
        (FaultKind::ConnectError, Some(errno)) if !CONNECT_ERRNOS.contains(&errno) => {
            Err(FieldError::new(
                "errno",
                format!("connect() does not fail with {errno}"),
                describe_list(CONNECT_ERRNOS),
            ))
        }
        (FaultKind::RecvError | FaultKind::SendError, None) => {
            Err(FieldError::new("errno", "missing", describe_list(&[])))
        }
        _ => Ok(()),
    }
}

fn validate_delay(fault: &Fault) -> Result<(), FieldError> {
    let Some(delay) = fault.delay else {
        return Err(FieldError::new(
            "delay",
            "missing",
            "how much later packets leave, such as 200ms",
        ));
    };
    let jitter = fault.jitter.map(|j| j.0).unwrap_or_default();
    if jitter > delay.0 {
        return Err(FieldError::new(
            "jitter",
            format!(
                "{} is larger than the delay",
                humantime::format_duration(jitter)
            ),
            "a jitter no larger than the delay",
        ));
    }
    if delay.0 + jitter > std::time::Duration::from_nanos(MAX_DELAY_NS) {
        return Err(FieldError::new(
            "delay",
            "delay plus jitter reaches past 5s; fq drops packets beyond its 10s horizon",
            "a delay plus jitter up to 5s (several delays on one packet are capped at 5s too)",
        ));
    }
    Ok(())
}

/// How a document is written. YAML is chosen for `.yaml`/`.yml` files and for text that does not
/// start like JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    pub fn of(path: Option<&str>, text: &str) -> Format {
        match path.and_then(|p| p.rsplit_once('.')).map(|(_, ext)| ext) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if text.trim_start().starts_with(['{', '[']) => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses one document, naming the field a mistake is in.
pub fn parse<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, FieldError> {
    let located = |path: String, message: String| FieldError::new(path, message, "");
    match format {
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let value: T = serde_path_to_error::deserialize(&mut deserializer)
                .map_err(|err| located(path_of(err.path()), err.inner().to_string()))?;
            deserializer
                .end()
                .map_err(|err| located(String::new(), err.to_string()))?;
            Ok(value)
        }
        Format::Yaml => serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|err| {
                let path = path_of(err.path());
                // serde_yaml's message starts with where it was (the path, or for an unknown
                // field its parent's): ours names the field itself, so keep one.
                let message = err.inner().to_string();
                let message = match message.split_once(": ") {
                    Some((place, rest)) if !place.contains(' ') && path.starts_with(place) => {
                        rest.to_string()
                    }
                    _ => message,
                };
                located(path, message)
            }),
    }
}

/// serde_path_to_error writes the root as ".".
pub(crate) fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

/// Parses and validates one fault.
pub fn parse_fault(text: &str, format: Format) -> Result<Fault, FieldError> {
    let fault: Fault = parse(text, format)?;
    validate(&fault)?;
    Ok(fault)
}

/// Parses and validates several faults; errors name the fault (`faults[2].match.port`).
pub fn parse_fault_set(text: &str, format: Format) -> Result<FaultSet, FieldError> {
    let set: FaultSet = parse(text, format)?;
    validate_set(&set)?;
    Ok(set)
}

pub fn validate_set(set: &FaultSet) -> Result<(), FieldError> {
    if set.faults.is_empty() {
        return Err(FieldError::new("faults", "empty", "one fault or more"));
    }
    for (index, fault) in set.faults.iter().enumerate() {
        validate(fault).map_err(|err| err.within(&format!("faults[{index}]")))?;
    }
    Ok(())
}
