//! Fault kinds. Each module says which programs realise its fault with which mechanism, and how
//! its options become the kernel's `FaultConfig`.
pub mod connection_limit;
pub mod dns;
pub mod doctor;
pub mod file_io;
pub mod kill;
pub mod packet_drop;
pub mod pressure;
pub mod socket_call;
pub mod tc_packet;

use std::fmt::Write as _;

use chaos_common::{FaultConfig, FaultKind, flags};

use chaos_model::{Direction, Fault, FieldError, MechanismRequest};

use crate::{
    errno::Errno,
    filters::{Cidr, Filters, PortRange, Probability, protocol_number},
    kernel::mechanism::Mechanism,
    kernel::programs::ProgramSpec,
};

#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    SocketCall(socket_call::SocketCallError),
    /// drop on a pure cgroup scope, and partition: cgroup_skb.
    Drop(packet_drop::PacketDrop),
    /// connection-limit: cgroup sock_addr connect hooks with a release hook.
    ConnectionLimit(connection_limit::ConnectionLimit),
    /// io-error: file hooks (fmod_ret or BPF LSM).
    FileIo(file_io::FileIoError),
    /// drop, reset, corrupt or delay at the TC layer: on an interface, a pod's veth, or a
    /// cgroup's packets on every interface.
    Packet(tc_packet::PacketFault, crate::net::interface::Hooks),
}

/// Every fault kind with the mechanisms that can realise it, best first (for doctor).
pub const KINDS: &[(FaultKind, &[Mechanism])] = &[
    (
        FaultKind::ConnectError,
        socket_call::SocketCall::Connect.mechanisms(),
    ),
    (
        FaultKind::RecvError,
        socket_call::SocketCall::Recv.mechanisms(),
    ),
    (
        FaultKind::SendError,
        socket_call::SocketCall::Send.mechanisms(),
    ),
    (
        FaultKind::Drop,
        &[Mechanism::CgroupSkb, Mechanism::Tcx, Mechanism::TcClsact],
    ),
    (FaultKind::Partition, &[Mechanism::CgroupSkb]),
    (
        FaultKind::ConnectionLimit,
        connection_limit::ConnectionLimit::MECHANISMS,
    ),
    (FaultKind::IoError, file_io::FileIoError::MECHANISMS),
    (FaultKind::Reset, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::Delay, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::Corrupt, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::DnsError, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::DnsDelay, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::Duplicate, tc_packet::PacketFault::MECHANISMS),
    (FaultKind::Bandwidth, tc_packet::PacketFault::MECHANISMS),
];

/// What a fault kind needs besides its mechanism: delay needs fq to honour departure times.
pub fn extra_requirements(kind: FaultKind) -> &'static [Mechanism] {
    match kind {
        FaultKind::Delay | FaultKind::DnsDelay | FaultKind::Bandwidth => &[Mechanism::FqQdisc],
        _ => &[],
    }
}

/// The kernel mechanism a fault asks for; `None` lets chaos-bpf choose.
fn requested(mechanism: Option<MechanismRequest>) -> Option<Mechanism> {
    Some(match mechanism? {
        MechanismRequest::Auto => return None,
        MechanismRequest::CgroupSockAddr => Mechanism::CgroupSockAddr,
        MechanismRequest::FmodRet => Mechanism::FmodRet,
        MechanismRequest::BpfLsm => Mechanism::BpfLsm,
        MechanismRequest::KprobeOverride => Mechanism::KprobeOverride,
        MechanismRequest::Tcx => Mechanism::Tcx,
        MechanismRequest::TcClsact => Mechanism::TcClsact,
    })
}

impl FaultSpec {
    /// What the kernel side makes of a fault of the model: checked by the one validation every
    /// front end goes through, then mapped to its programs and configuration.
    pub fn from_model(fault: &Fault) -> Result<FaultSpec, FieldError> {
        if fault.kind.is_kill() || fault.kind.is_pressure() {
            return Err(FieldError::new(
                "kind",
                format!(
                    "{} is done by chaos-bpf itself (faults::kill, faults::pressure), not armed \
                     as a kernel rule",
                    fault.kind
                ),
                "chaos-bpf inject, or the fault among an experiment's faults",
            ));
        }
        chaos_model::validate(fault)?;
        let mut ports = fault.matches.effective_ports();
        if fault.kind.is_dns() && fault.matches.port.is_empty() && ports.is_empty() {
            ports.push(crate::filters::PortRange {
                first: dns::DNS_PORT,
                last: dns::DNS_PORT,
            });
        }
        let filters = Filters {
            peers: fault.matches.effective_dst(),
            ports,
            protocol: fault.matches.proto,
            probability: fault.probability.unwrap_or(Probability::ALWAYS),
            dry_run: fault.dry_run,
            follows_peers: !fault.matches.peer_selector.is_empty(),
        };
        let mechanism = requested(fault.mechanism);
        let partition = fault.kind == chaos_model::FaultKind::Partition;
        // A partition cuts both ways unless told one.
        let direction = fault.direction.unwrap_or(if partition {
            Direction::Both
        } else {
            Direction::Egress
        });
        if partition {
            return Ok(FaultSpec::Drop(packet_drop::PacketDrop {
                direction,
                filters,
                partition: true,
                connect_only: fault.keep_established,
            }));
        }
        let call = match fault.kind {
            chaos_model::FaultKind::ConnectError => Some(socket_call::SocketCall::Connect),
            chaos_model::FaultKind::RecvError => Some(socket_call::SocketCall::Recv),
            chaos_model::FaultKind::SendError => Some(socket_call::SocketCall::Send),
            _ => None,
        };
        if fault.kind == chaos_model::FaultKind::ConnectionLimit {
            let limit = match (fault.max_connections, fault.connection_rate) {
                (Some(max), _) => connection_limit::Limit::Seats(max),
                (None, Some(rate)) => connection_limit::Limit::Rate {
                    interval_ns: rate.interval_ns(),
                    burst: fault.connection_burst.unwrap_or(1),
                },
                // Validation requires one of the two.
                (None, None) => {
                    return Err(FieldError::new("maxConnections", "missing", "a number"));
                }
            };
            return Ok(FaultSpec::ConnectionLimit(
                connection_limit::ConnectionLimit {
                    limit,
                    errno: fault.effective_errno().unwrap_or(Errno(111)),
                    filters,
                },
            ));
        }
        if fault.kind == chaos_model::FaultKind::IoError {
            return Ok(FaultSpec::FileIo(file_io::FileIoError {
                errno: fault.effective_errno().unwrap_or(Errno(5)),
                paths: fault.paths.clone(),
                ops: file_io::FileIoError::op_flags(&fault.ops),
                filters,
                mechanism,
                inodes: Vec::new(),
            }));
        }
        if let Some(call) = call {
            // Validation requires it; a socket call without one is an error, never a packet fault.
            let errno = fault.effective_errno().ok_or_else(|| {
                FieldError::new("errno", "missing", crate::errno::describe_list(&[]))
            })?;
            return Ok(FaultSpec::SocketCall(socket_call::SocketCallError {
                call,
                errno,
                filters,
                mechanism,
            }));
        }
        let on_interface = fault.scope.iface.is_some() || fault.scope.netns.is_some();
        let action = match fault.kind {
            // A cgroup's drop is cgroup_skb's, unless TC-only options ask for the TC layer.
            chaos_model::FaultKind::Drop if !on_interface && fault.tc_only_option().is_none() => {
                return Ok(FaultSpec::Drop(packet_drop::PacketDrop {
                    direction,
                    filters,
                    partition: false,
                    connect_only: false,
                }));
            }
            chaos_model::FaultKind::Reset => tc_packet::PacketAction::Reset,
            chaos_model::FaultKind::Corrupt => tc_packet::PacketAction::Corrupt {
                fix_checksum: fault.fix_checksum,
            },
            chaos_model::FaultKind::Delay => {
                tc_packet::PacketAction::Delay(tc_packet::Timing::of(fault))
            }
            chaos_model::FaultKind::DnsDelay => {
                tc_packet::PacketAction::DnsDelay(tc_packet::Timing::of(fault))
            }
            chaos_model::FaultKind::Duplicate => tc_packet::PacketAction::Duplicate,
            chaos_model::FaultKind::Bandwidth => tc_packet::PacketAction::Bandwidth {
                bytes_per_sec: fault.rate.map_or(1, |r| r.bits_per_sec / 8),
                burst_bytes: fault.burst.map_or(0, |b| b.0),
            },
            chaos_model::FaultKind::DnsError => tc_packet::PacketAction::DnsError {
                rcode: fault.rcode.and_then(chaos_model::DnsRcode::wire_value),
            },
            _ => tc_packet::PacketAction::Drop,
        };
        let packet = tc_packet::PacketFault {
            action,
            direction,
            filters,
            // An excluded address or port is spared on either side of a packet.
            sources: fault.matches.effective_src(),
            source_ports: fault.matches.effective_sports(),
            tcp_flags: fault.matches.tcp_flags.map_or(0, |f| f.0),
            loss: fault.loss.unwrap_or(tc_packet::LossModel::Random),
            seed: fault.seed,
            mechanism,
            dns: fault.kind.is_dns().then(|| dns::DnsQuery {
                names: fault.names.clone(),
                qtype: fault.qtype.map_or(0, chaos_model::DnsQtype::wire_value),
            }),
        };
        // Preflight swaps the hooks when the scope is a pod's network namespace.
        let hooks = crate::net::interface::InterfaceScope::plain_hooks(direction);
        Ok(FaultSpec::Packet(packet, hooks))
    }

    pub fn kind(&self) -> FaultKind {
        match self {
            FaultSpec::SocketCall(fault) => fault.call.kind(),
            FaultSpec::Drop(fault) => fault.kind(),
            FaultSpec::ConnectionLimit(_) => FaultKind::ConnectionLimit,
            FaultSpec::FileIo(_) => FaultKind::IoError,
            FaultSpec::Packet(fault, _) => fault.kind(),
        }
    }

    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    pub fn filters(&self) -> &Filters {
        match self {
            FaultSpec::SocketCall(fault) => &fault.filters,
            FaultSpec::Drop(fault) => &fault.filters,
            FaultSpec::ConnectionLimit(fault) => &fault.filters,
            FaultSpec::FileIo(fault) => &fault.filters,
            FaultSpec::Packet(fault, _) => &fault.filters,
        }
    }

    /// Replaces the peers (those of a peer selector, as its pods are now). Only the faults whose
    /// peers live in per-rule filters take them; validation lets no other have a selector.
    pub fn set_peers(&mut self, peers: Vec<Cidr>) {
        match self {
            FaultSpec::SocketCall(fault) => fault.filters.peers = peers,
            FaultSpec::Drop(fault) => fault.filters.peers = peers,
            FaultSpec::ConnectionLimit(fault) => fault.filters.peers = peers,
            FaultSpec::Packet(..) | FaultSpec::FileIo(_) => {}
        }
    }

    /// The mechanisms to try, best first: the forced one alone, or every one the kind can use.
    pub fn candidate_mechanisms(&self) -> Vec<Mechanism> {
        match self {
            FaultSpec::SocketCall(fault) => match fault.mechanism {
                Some(forced) => vec![forced],
                None => fault.call.mechanisms().to_vec(),
            },
            FaultSpec::Drop(_) => vec![Mechanism::CgroupSkb],
            FaultSpec::ConnectionLimit(_) => connection_limit::ConnectionLimit::MECHANISMS.to_vec(),
            FaultSpec::FileIo(fault) => match fault.mechanism {
                Some(forced) => vec![forced],
                None => file_io::FileIoError::MECHANISMS.to_vec(),
            },
            FaultSpec::Packet(fault, _) => match fault.mechanism {
                Some(forced) => vec![forced],
                None => tc_packet::PacketFault::MECHANISMS.to_vec(),
            },
        }
    }

    /// Whether `--mechanism` was given.
    pub fn mechanism_forced(&self) -> bool {
        match self {
            FaultSpec::SocketCall(fault) => fault.mechanism.is_some(),
            FaultSpec::Packet(fault, _) => fault.mechanism.is_some(),
            FaultSpec::FileIo(fault) => fault.mechanism.is_some(),
            FaultSpec::Drop(_) | FaultSpec::ConnectionLimit(_) => false,
        }
    }

    /// The programs realising this fault with `mechanism`, `None` where there are none.
    pub fn programs(&self, mechanism: Mechanism) -> Option<&'static [&'static ProgramSpec]> {
        match self {
            FaultSpec::SocketCall(fault) => fault.call.programs(mechanism),
            FaultSpec::Drop(fault) => (mechanism == Mechanism::CgroupSkb).then(|| fault.programs()),
            FaultSpec::ConnectionLimit(_) => connection_limit::ConnectionLimit::programs(mechanism),
            FaultSpec::FileIo(_) => file_io::FileIoError::programs(mechanism),
            FaultSpec::Packet(_, hooks) => tc_packet::PacketFault::MECHANISMS
                .contains(&mechanism)
                .then(|| tc_packet::PacketFault::programs(*hooks)),
        }
    }

    /// Whether the kernel needs the distribution tables (delay with a tabled jitter).
    pub fn uses_distribution_table(&self) -> bool {
        matches!(
            self,
            FaultSpec::Packet(fault, _) if matches!(
                fault.action.delay(),
                Some(timing)
                    if timing.jitter_ns > 0 && timing.distribution != tc_packet::Distribution::Uniform
            )
        )
    }

    /// DNS faults: the queries they hit.
    pub fn dns_query(&self) -> Option<&dns::DnsQuery> {
        match self {
            FaultSpec::Packet(fault, _) => fault.dns.as_ref(),
            _ => None,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        match self {
            FaultSpec::SocketCall(fault) => Some(fault.errno),
            FaultSpec::ConnectionLimit(fault) => Some(fault.errno),
            FaultSpec::FileIo(fault) => Some(fault.errno),
            FaultSpec::Drop(_) | FaultSpec::Packet(..) => None,
        }
    }

    /// The kernel configuration without scope; `armed` stays 0 until every filter map is filled.
    pub fn config(&self, fault_id: u32, events_per_sec: u32) -> FaultConfig {
        let filters = self.filters();
        let mut flag_bits = match self {
            FaultSpec::SocketCall(_) | FaultSpec::Packet(..) | FaultSpec::ConnectionLimit(_) => 0,
            FaultSpec::FileIo(fault) => fault.ops,
            FaultSpec::Drop(fault) => fault.flags(),
        };
        if !filters.peers.is_empty() || filters.follows_peers {
            flag_bits |= flags::MATCH_PEER;
        }
        if !filters.ports.is_empty() {
            flag_bits |= flags::MATCH_PORT;
        }
        if filters.dry_run {
            flag_bits |= flags::DRY_RUN;
        }
        let mut config = FaultConfig {
            probability: filters.probability.threshold(),
            fault_id,
            kind: self.kind() as u32,
            errno: self.errno().map_or(0, |errno| errno.0),
            flags: flag_bits,
            proto: protocol_number(filters.protocol),
            events_per_sec,
            ..FaultConfig::default()
        };
        match self {
            FaultSpec::Packet(fault, hooks) => fault.apply(&mut config, *hooks),
            FaultSpec::ConnectionLimit(fault) => fault.apply(&mut config),
            FaultSpec::SocketCall(_) | FaultSpec::Drop(_) | FaultSpec::FileIo(_) => {}
        }
        config
    }

    /// One line for people: what, how often, to what.
    pub fn describe(&self) -> String {
        let filters = self.filters();
        let mut text = self.name().to_string();
        match self {
            FaultSpec::SocketCall(fault) => {
                let _ = write!(text, " errno {}", fault.errno);
            }
            FaultSpec::ConnectionLimit(fault) => {
                let _ = write!(text, " {}, then errno {}", fault.describe(), fault.errno);
            }
            FaultSpec::FileIo(fault) => {
                let _ = write!(text, " {}", fault.describe());
            }
            FaultSpec::Drop(fault) => {
                let _ = write!(text, " {}", format!("{:?}", fault.direction).to_lowercase());
                if fault.connect_only {
                    text.push_str(", new connections only (established ones kept)");
                }
            }
            FaultSpec::Packet(fault, _) => {
                let _ = write!(
                    text,
                    " {}, loss model {:?}",
                    format!("{:?}", fault.direction).to_lowercase(),
                    fault.loss
                );
                if !fault.sources.is_empty() {
                    let sources: Vec<String> = fault.sources.iter().map(Cidr::to_string).collect();
                    let _ = write!(text, ", sources {}", sources.join(","));
                }
                if let Some(dns) = &fault.dns {
                    let names: Vec<String> = dns.names.iter().map(|n| n.to_string()).collect();
                    let _ = write!(text, ", names {}", names.join(","));
                }
                match fault.action {
                    tc_packet::PacketAction::Bandwidth {
                        bytes_per_sec,
                        burst_bytes,
                    } => {
                        let _ = write!(
                            text,
                            ", rate {} bytes/s, burst {burst_bytes} bytes",
                            bytes_per_sec
                        );
                    }
                    tc_packet::PacketAction::DnsError { rcode: Some(rcode) } => {
                        let _ = write!(text, ", rcode {rcode}");
                    }
                    tc_packet::PacketAction::DnsError { rcode: None } => {
                        text.push_str(", no answer (timeout)");
                    }
                    _ => {}
                }
            }
        }
        if filters.dry_run {
            text.push_str(" DRY RUN (counts what it would hit, injects nothing)");
        }
        let _ = write!(text, ", probability {}", filters.probability.0);
        if let Some(protocol) = filters.protocol {
            let _ = write!(text, ", proto {}", format!("{protocol:?}").to_lowercase());
        }
        if !filters.peers.is_empty() {
            let peers: Vec<String> = filters.peers.iter().map(Cidr::to_string).collect();
            let _ = write!(text, ", peers {}", peers.join(","));
        }
        if !filters.ports.is_empty() {
            let ports: Vec<String> = filters.ports.iter().map(PortRange::to_string).collect();
            let _ = write!(text, ", ports {}", ports.join(","));
        }
        text
    }
}

/// Whether chaos-bpf has programs for this fault kind with this mechanism.
pub fn programs_for(kind: FaultKind, mechanism: Mechanism) -> bool {
    match kind {
        FaultKind::ConnectError => socket_call::SocketCall::Connect
            .programs(mechanism)
            .is_some(),
        FaultKind::RecvError => socket_call::SocketCall::Recv.programs(mechanism).is_some(),
        FaultKind::SendError => socket_call::SocketCall::Send.programs(mechanism).is_some(),
        FaultKind::Drop => matches!(
            mechanism,
            Mechanism::CgroupSkb | Mechanism::Tcx | Mechanism::TcClsact
        ),
        FaultKind::Partition => mechanism == Mechanism::CgroupSkb,
        FaultKind::ConnectionLimit => {
            connection_limit::ConnectionLimit::programs(mechanism).is_some()
        }
        FaultKind::IoError => file_io::FileIoError::programs(mechanism).is_some(),
        FaultKind::Reset
        | FaultKind::Delay
        | FaultKind::Corrupt
        | FaultKind::DnsError
        | FaultKind::DnsDelay
        | FaultKind::Duplicate
        | FaultKind::Bandwidth => tc_packet::PacketFault::MECHANISMS.contains(&mechanism),
    }
}

pub fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::ConnectError => "connect-error",
        FaultKind::Drop => "drop",
        FaultKind::RecvError => "recv-error",
        FaultKind::SendError => "send-error",
        FaultKind::Reset => "reset",
        FaultKind::Delay => "delay",
        FaultKind::Corrupt => "corrupt",
        FaultKind::DnsError => "dns-error",
        FaultKind::DnsDelay => "dns-delay",
        FaultKind::Duplicate => "duplicate",
        FaultKind::Bandwidth => "bandwidth",
        FaultKind::Partition => "partition",
        FaultKind::ConnectionLimit => "connection-limit",
        FaultKind::IoError => "io-error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::Direction;
    use socket_call::{SocketCall, SocketCallError};

    /// The model accepts exactly the mechanisms the kernel side can realise, per kind.
    #[test]
    fn the_model_and_the_kernel_side_agree_on_mechanisms() {
        for (kind, mechanisms) in KINDS {
            let model_kind: chaos_model::FaultKind = kind_name(*kind).parse().unwrap();
            let from_model: Vec<Mechanism> = chaos_model::validate::mechanisms_for(model_kind)
                .iter()
                .filter_map(|m| requested(Some(*m)))
                .collect();
            let realisable: Vec<Mechanism> = mechanisms
                .iter()
                .copied()
                .filter(|m| *m != Mechanism::CgroupSkb)
                .collect();
            assert_eq!(from_model, realisable, "{}", kind_name(*kind));
        }
    }

    fn filters() -> Filters {
        Filters {
            peers: vec!["10.1.0.0/16".parse().unwrap()],
            ports: vec![],
            protocol: Some(crate::filters::Protocol::Tcp),
            probability: Probability(0.5),
            dry_run: false,
            follows_peers: false,
        }
    }

    #[test]
    fn connect_error_config_carries_errno_and_filters() {
        let spec = FaultSpec::SocketCall(SocketCallError {
            call: SocketCall::Connect,
            errno: Errno(110),
            filters: filters(),
            mechanism: None,
        });
        let config = spec.config(7, 100);
        assert_eq!(config.errno, 110);
        assert_eq!(config.fault_id, 7);
        assert_eq!(config.flags, flags::MATCH_PEER);
        assert_eq!(config.proto, 6);
        assert_eq!(config.probability, 1 << 31);
        assert_eq!(config.armed, 0);
        assert_eq!(
            spec.describe(),
            "connect-error errno ETIMEDOUT (110), probability 0.5, proto tcp, peers 10.1.0.0/16"
        );
        assert_eq!(spec.candidate_mechanisms()[0], Mechanism::CgroupSockAddr);
    }

    #[test]
    fn forced_mechanism_is_the_only_candidate() {
        let spec = FaultSpec::SocketCall(SocketCallError {
            call: SocketCall::Recv,
            errno: Errno(104),
            filters: filters(),
            mechanism: Some(Mechanism::BpfLsm),
        });
        assert_eq!(spec.candidate_mechanisms(), vec![Mechanism::BpfLsm]);
        assert!(spec.mechanism_forced());
        assert_eq!(spec.name(), "recv-error");
    }

    #[test]
    fn drop_direction_selects_programs_and_flags() {
        let spec = FaultSpec::Drop(packet_drop::PacketDrop {
            direction: Direction::Both,
            filters: filters(),
            partition: false,
            connect_only: false,
        });
        assert_eq!(spec.programs(Mechanism::CgroupSkb).unwrap().len(), 2);
        assert!(spec.programs(Mechanism::FmodRet).is_none());
        let config = spec.config(1, 0);
        assert_eq!(
            config.flags & (flags::EGRESS | flags::INGRESS),
            flags::EGRESS | flags::INGRESS
        );
        let egress = FaultSpec::Drop(packet_drop::PacketDrop {
            direction: Direction::Egress,
            filters: filters(),
            partition: false,
            connect_only: false,
        });
        assert_eq!(egress.programs(Mechanism::CgroupSkb).unwrap().len(), 1);
        assert_eq!(egress.config(1, 0).flags & flags::INGRESS, 0);
    }
}
