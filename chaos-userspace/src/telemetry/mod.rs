//! What a run reports: exact counters, one JSON line per (sampled) injection, a live status line
//! and a final summary.
pub mod metrics;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use crate::wire::{Counters, Injection, Summary};
use chaos_common::{AF_INET, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, Event, FaultKind};

use crate::{errno::Errno, faults::kind_name};

impl Counters {
    pub fn plus(&self, other: &Counters) -> Counters {
        Counters {
            matched: self.matched + other.matched,
            injected: self.injected + other.injected,
            events_sampled_out: self.events_sampled_out + other.events_sampled_out,
            events_lost: self.events_lost + other.events_lost,
        }
    }

    pub fn from_totals(totals: [u64; Counter::COUNT as usize]) -> Self {
        Self {
            matched: totals[Counter::Matched as usize],
            injected: totals[Counter::Injected as usize],
            events_sampled_out: totals[Counter::EventsSampledOut as usize],
            events_lost: totals[Counter::EventsLost as usize],
        }
    }
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|ts| i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()))
            .unwrap_or(0);
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Self {
            offset_ns: wall - monotonic,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let nanos = (i128::from(ktime_ns) + self.offset_ns).max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }
}

impl Injection {
    pub fn from_bytes(bytes: &[u8], clock: &Clock) -> Option<Self> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: the length is checked and `Event` is valid for any bit pattern (aya::Pod).
        let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self::from_event(&event, clock))
    }

    pub fn from_event(event: &Event, clock: &Clock) -> Self {
        let kind = FaultKind::from_raw(event.kind);
        let addr = if event.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(
                event.peer_addr[0],
                event.peer_addr[1],
                event.peer_addr[2],
                event.peer_addr[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(event.peer_addr))
        };
        let comm_len = event
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(event.comm.len());
        let errno = (event.errno != 0).then_some(Errno(event.errno));
        Self {
            time: humantime::format_rfc3339_micros(clock.wall(event.ktime_ns)).to_string(),
            fault_id: event.fault_id,
            fault: kind.map_or("unknown", kind_name).to_string(),
            pid: (event.pid != 0).then_some(event.pid),
            comm: (comm_len > 0)
                .then(|| String::from_utf8_lossy(&event.comm[..comm_len]).into_owned()),
            cgroup_id: event.cgroup_id,
            peer: std::net::SocketAddr::new(addr, event.peer_port).to_string(),
            proto: match event.proto {
                6 => "tcp".into(),
                17 => "udp".into(),
                1 | 58 => "icmp".into(),
                _ => "other".into(),
            },
            direction: match event.direction {
                DIRECTION_EGRESS => Some("egress".into()),
                DIRECTION_INGRESS => Some("ingress".into()),
                _ => None,
            },
            errno: errno.map(|e| e.name().map_or_else(|| e.0.to_string(), str::to_string)),
            errno_value: errno.map(|e| e.0),
            verdict: match kind {
                Some(FaultKind::ConnectError | FaultKind::RecvError | FaultKind::SendError) => {
                    "failed".into()
                }
                Some(FaultKind::Drop | FaultKind::Partition) => "dropped".into(),
                Some(FaultKind::Reset) => "reset".into(),
                Some(FaultKind::Delay | FaultKind::DnsDelay) => "delayed".into(),
                // Answered with the fault's response code, or lost (timeout).
                Some(FaultKind::DnsError) => "failed".into(),
                Some(FaultKind::Corrupt) => "corrupted".into(),
                Some(FaultKind::Duplicate) => "duplicated".into(),
                Some(FaultKind::Bandwidth) => "paced".into(),
                // Over the limit: refused with the errno.
                Some(FaultKind::ConnectionLimit) => "refused".into(),
                Some(FaultKind::IoError) => "failed".into(),
                None => "unknown".into(),
            },
        }
    }
}

impl Summary {
    /// Where it acts: the cgroup's path and id, or every path (comma-separated, no single id)
    /// when a workload scope named several.
    pub fn set_cgroups(&mut self, cgroups: &[crate::scope::CgroupScope]) {
        let paths: Vec<String> = cgroups
            .iter()
            .map(|c| c.path.display().to_string())
            .collect();
        self.cgroup = (!paths.is_empty()).then(|| paths.join(","));
        self.cgroup_id = match cgroups {
            [only] => Some(only.id),
            _ => None,
        };
    }

    /// A fault's summary before it ran: what it is and where.
    pub fn armed(fault: &str, fault_id: u32, program_ids: Vec<u32>) -> Self {
        Self {
            fault: fault.to_string(),
            fault_id,
            matched: 0,
            injected: 0,
            duration_ms: 0,
            events_emitted: 0,
            events_by_cgroup: std::collections::BTreeMap::new(),
            events_sampled_out: 0,
            events_lost: 0,
            program_ids,
            cgroup: None,
            cgroup_id: None,
            workloads: Vec::new(),
            interface: None,
            ended_by: "signal".into(),
        }
    }

    /// The final counts.
    pub fn record(&mut self, counters: &Counters) {
        self.matched = counters.matched;
        self.injected = counters.injected;
        self.events_sampled_out = counters.events_sampled_out;
        self.events_lost = counters.events_lost;
    }
}

/// "name (prog id N)" for each program of the instance: ids `bpftool prog show` lists.
pub fn program_names(programs: &[(&'static str, u32)]) -> Vec<String> {
    programs
        .iter()
        .map(|(name, id)| format!("{name} (prog id {id})"))
        .collect()
}

/// The once-a-second line on stderr.
pub fn status_line(fault: &str, fault_id: u32, elapsed: Duration, counters: &Counters) -> String {
    format!(
        "chaos-bpf: {fault}#{fault_id} {:>5}s  matched {}  injected {}",
        elapsed.as_secs(),
        counters.matched,
        counters.injected
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaos_common::AF_INET6;

    fn event() -> Event {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        Event {
            ktime_ns: 1_000_000_000,
            cgroup_id: 42,
            fault_id: 3,
            kind: FaultKind::ConnectError as u32,
            pid: 1234,
            errno: 111,
            peer_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            peer_port: 5432,
            family: AF_INET,
            proto: 6,
            direction: 0,
            _pad: [0; 2],
            comm,
        }
    }

    #[test]
    fn connect_event_renders_errno_peer_and_task() {
        let clock = Clock { offset_ns: 0 };
        let record = Injection::from_event(&event(), &clock);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["peer"], "127.0.0.1:5432");
        assert_eq!(json["errno"], "ECONNREFUSED");
        assert_eq!(json["errno_value"], 111);
        assert_eq!(json["comm"], "curl");
        assert_eq!(json["pid"], 1234);
        assert_eq!(json["fault"], "connect-error");
        assert_eq!(json["verdict"], "failed");
        assert_eq!(json["time"], "1970-01-01T00:00:01.000000Z");
        assert!(json.get("direction").is_none());
    }

    #[test]
    fn drop_event_renders_direction_and_ipv6_peer() {
        let mut event = event();
        event.kind = FaultKind::Drop as u32;
        event.errno = 0;
        event.pid = 0;
        event.comm = [0; 16];
        event.family = AF_INET6;
        event.peer_addr = Ipv6Addr::LOCALHOST.octets();
        event.proto = 17;
        event.direction = DIRECTION_INGRESS;
        let record = Injection::from_event(&event, &Clock { offset_ns: 0 });
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["peer"], "[::1]:5432");
        assert_eq!(json["direction"], "ingress");
        assert_eq!(json["proto"], "udp");
        assert_eq!(json["verdict"], "dropped");
        assert!(
            json.get("errno").is_none() && json.get("pid").is_none() && json.get("comm").is_none()
        );
    }

    #[test]
    fn short_buffers_are_not_events() {
        assert!(Injection::from_bytes(&[0u8; 8], &Clock::now()).is_none());
    }
}
