//! What a run reports: exact counters, one JSON line per (sampled) injection, a live status line
//! and a final summary.
pub mod metrics;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use chaos_common::{AF_INET, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, Event, FaultKind};
use serde::Serialize;

use crate::{errno::Errno, faults::kind_name};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Operations that passed the filters.
    pub matched: u64,
    /// Operations the fault was applied to.
    pub injected: u64,
    /// Injections without an event because of the per-CPU event budget.
    pub events_sampled_out: u64,
    /// Injections whose event was lost to a full ring buffer.
    pub events_lost: u64,
}

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

/// One injected fault, as printed with `--events json`.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    pub fault_id: u32,
    pub fault: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub cgroup_id: u64,
    pub peer: String,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_value: Option<u32>,
    pub verdict: &'static str,
}

impl EventRecord {
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
            record_type: "injection",
            time: humantime::format_rfc3339_micros(clock.wall(event.ktime_ns)).to_string(),
            fault_id: event.fault_id,
            fault: kind.map_or("unknown", kind_name),
            pid: (event.pid != 0).then_some(event.pid),
            comm: (comm_len > 0)
                .then(|| String::from_utf8_lossy(&event.comm[..comm_len]).into_owned()),
            cgroup_id: event.cgroup_id,
            peer: std::net::SocketAddr::new(addr, event.peer_port).to_string(),
            proto: match event.proto {
                6 => "tcp",
                17 => "udp",
                1 | 58 => "icmp",
                _ => "other",
            },
            direction: match event.direction {
                DIRECTION_EGRESS => Some("egress"),
                DIRECTION_INGRESS => Some("ingress"),
                _ => None,
            },
            errno: errno.map(|e| e.name().map_or_else(|| e.0.to_string(), str::to_string)),
            errno_value: errno.map(|e| e.0),
            verdict: match kind {
                Some(FaultKind::ConnectError | FaultKind::RecvError | FaultKind::SendError) => {
                    "failed"
                }
                Some(FaultKind::Drop) => "dropped",
                Some(FaultKind::Reset) => "reset",
                Some(FaultKind::Delay) => "delayed",
                Some(FaultKind::Corrupt) => "corrupted",
                None => "unknown",
            },
        }
    }
}

/// The last line a run prints.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub fault: &'static str,
    pub fault_id: u32,
    pub matched: u64,
    pub injected: u64,
    pub duration_ms: u64,
    pub events_emitted: u64,
    /// Events by the cgroup id they came from (syscall and cgroup faults; TC events carry none):
    /// per target when the scope names several.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub events_by_cgroup: std::collections::BTreeMap<u64, u64>,
    pub events_sampled_out: u64,
    pub events_lost: u64,
    /// Kernel ids of the programs the fault attached: all gone once this line is printed.
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The pods or containers it acts on (`namespace/pod[/container]`), when named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Why the fault ended: "duration" (its own or the run's), "signal", or "error" (its
    /// object had to be detached early).
    pub ended_by: &'static str,
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
    pub fn armed(fault: &'static str, fault_id: u32, program_ids: Vec<u32>) -> Self {
        Self {
            record_type: "summary",
            fault,
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
            ended_by: "signal",
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
        let record = EventRecord::from_event(&event(), &clock);
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
        let record = EventRecord::from_event(&event, &Clock { offset_ns: 0 });
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
        assert!(EventRecord::from_bytes(&[0u8; 8], &Clock::now()).is_none());
    }
}
