//! The records chaos-bpf shows and reads, one type per thing: a fault's view (the agent's
//! resource, the `armed` record), and the event stream's lines (armed, an injection, a kill
//! round, a fault's summary, a warning, lagged). The agent serialises them, the client and tests
//! deserialise them, and the foreground prints the same JSON, so a renamed field fails to
//! compile rather than print "?".
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, str::FromStr};

use chaos_model::Fault;
use serde::{Deserialize, Serialize};

pub type FaultId = u32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where a fault is in its life. Arming and stopping are transient: the engine does both before
/// it answers, so they are seen only by a sink while they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    Arming,
    Armed,
    Stopping,
    Ended,
    /// Its object could not be disarmed and was detached early.
    Failed,
}

impl std::fmt::Display for FaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultState::Arming => "arming",
            FaultState::Armed => "armed",
            FaultState::Stopping => "stopping",
            FaultState::Ended => "ended",
            FaultState::Failed => "failed",
        })
    }
}

/// A fault as the engine reports it: the JSON `armed` record, the API's fault resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: FaultId,
    pub state: FaultState,
    pub kind: String,
    pub mechanism: String,
    /// Kernel ids of the programs realising it: listed by `bpftool prog show` while it runs.
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// RFC 3339.
    pub armed_at: String,
    /// When the kernel stops it at the latest (RFC 3339).
    pub expires_at: String,
    pub counters: Counters,
    /// Injections (in a dry run: would-be injections) reported per cgroup id: per target, for a
    /// scope of several pods or containers. From the events, so bounded by their budget.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(default, deserialize_with = "counts_by_cgroup")]
    pub events_by_cgroup: BTreeMap<u64, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub spec: Fault,
}

/// One injected fault, as printed with `--events json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub time: String,
    pub fault_id: u32,
    pub fault: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub cgroup_id: u64,
    pub peer: String,
    pub proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_value: Option<u32>,
    pub verdict: String,
}

/// The last line a run prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub fault: String,
    pub fault_id: u32,
    pub matched: u64,
    pub injected: u64,
    pub duration_ms: u64,
    pub events_emitted: u64,
    /// Events by the cgroup id they came from (syscall and cgroup faults; TC events carry none):
    /// per target when the scope names several.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[serde(default, deserialize_with = "counts_by_cgroup")]
    pub events_by_cgroup: BTreeMap<u64, u64>,
    pub events_sampled_out: u64,
    pub events_lost: u64,
    /// Kernel ids of the programs the fault attached: all gone once this line is printed.
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The pods or containers it acts on (`namespace/pod[/container]`), when named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Why the fault ended: "duration" (its own or the run's), "signal", or "error" (its
    /// object had to be detached early).
    pub ended_by: String,
}

/// One round of a kill fault, as the JSON line the CLI prints and the agent streams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillRound {
    pub fault_id: FaultId,
    pub round: u32,
    pub processes: u64,
    pub dry_run: bool,
    /// RFC 3339, microseconds.
    pub time: String,
}

/// Counts by cgroup id: JSON object keys are strings, read back as ids even inside an event,
/// where serde's buffering of tagged enums would not parse "99" as a number by itself.
fn counts_by_cgroup<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u64, u64>, D::Error> {
    BTreeMap::<String, u64>::deserialize(deserializer)?
        .into_iter()
        .map(|(id, count)| {
            id.parse()
                .map(|id| (id, count))
                .map_err(|_| serde::de::Error::custom(format!("cgroup id {id:?} is not a number")))
        })
        .collect()
}

/// One line of the event stream (`GET /v1/events`, `inject --events json`), told apart by its
/// `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A fault was armed.
    Armed { fault: Box<FaultView> },
    /// The kernel injected (sampled by the per-CPU event budget).
    Injection(Injection),
    /// A round of a kill fault.
    Kill(KillRound),
    /// A fault ended, with its final counts.
    Summary(Summary),
    /// Something went wrong beside the faults (an object detached early).
    Warning { message: String },
    /// A reader too slow for the stream missed this many lines.
    Lagged { missed: u64 },
}

/// `GET /v1/faults`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultList {
    pub faults: Vec<FaultView>,
}

/// `POST /v1/faults:stop-all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedAll {
    pub stopped: usize,
}

/// `GET /readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub faults_active: usize,
    pub max_faults: usize,
}

/// Every answer that is an error: one line naming what is wrong, and the HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub code: u16,
}

/// Where the API listens: a TCP address, or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Listen::Unix(path.into())),
            Some(_) => Err("accepted: unix:/ABSOLUTE/PATH, or HOST:PORT".into()),
            None => text.parse().map(Listen::Tcp).map_err(|_| {
                "accepted: an address such as 127.0.0.1:9477, or unix:/run/chaos-bpf/agent.sock"
                    .into()
            }),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Where the agent listens unless told otherwise: a Unix socket only root can open. A loopback
/// port would let every local user create faults, kills included.
pub const DEFAULT_LISTEN: &str = "unix:/run/chaos-bpf/agent.sock";

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> FaultView {
        FaultView {
            id: 7,
            state: FaultState::Armed,
            kind: "connect-error".into(),
            mechanism: "cgroup-sockaddr".into(),
            program_ids: vec![41, 42],
            cgroup: Some("/sys/fs/cgroup/app".into()),
            cgroup_id: Some(1234),
            interface: None,
            armed_at: "2026-12-07T12:00:00.000Z".into(),
            expires_at: "2026-12-07T12:01:00.000Z".into(),
            counters: Counters {
                matched: 10,
                injected: 4,
                events_sampled_out: 1,
                events_lost: 0,
            },
            events_by_cgroup: BTreeMap::from([(1234, 3), (99, 1)]),
            ended_by: None,
            reason: None,
            spec: chaos_model::parse_fault(
                r#"{"kind": "connect-error", "scope": {"cgroup": "/app"}, "match": {"port": [6379]}}"#,
                chaos_model::Format::Json,
            )
            .expect("a valid fault"),
        }
    }

    fn summary() -> Summary {
        let mut summary = Summary::armed("drop", 3, vec![9]);
        summary.events_by_cgroup = BTreeMap::from([(5, 2)]);
        summary.ended_by = "duration".into();
        summary
    }

    /// Every event the stream carries reads back as itself, through JSON text, with its `type`.
    #[test]
    fn every_event_round_trips_through_its_json_line() {
        let events = [
            (
                Event::Armed {
                    fault: Box::new(view()),
                },
                "armed",
            ),
            (
                Event::Injection(Injection {
                    time: "2026-12-07T12:00:00.000001Z".into(),
                    fault_id: 7,
                    fault: "connect-error".into(),
                    pid: Some(100),
                    comm: Some("redis-cli".into()),
                    cgroup_id: 1234,
                    peer: "127.0.0.1:6379".into(),
                    proto: "tcp".into(),
                    direction: None,
                    errno: Some("ECONNREFUSED".into()),
                    errno_value: Some(111),
                    verdict: "failed".into(),
                }),
                "injection",
            ),
            (
                Event::Kill(KillRound {
                    fault_id: 2,
                    round: 1,
                    processes: 3,
                    dry_run: false,
                    time: "2026-12-07T12:00:02.000000Z".into(),
                }),
                "kill",
            ),
            (Event::Summary(summary()), "summary"),
            (
                Event::Warning {
                    message: "detached early".into(),
                },
                "warning",
            ),
            (Event::Lagged { missed: 12 }, "lagged"),
        ];
        for (event, kind) in events {
            let line = serde_json::to_string(&event).expect("serialises");
            let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            assert_eq!(value["type"], kind, "{line}");
            let back: Event = serde_json::from_str(&line).expect(&line);
            assert_eq!(back, event);
        }
    }

    /// The API's answers read back as the types the client uses.
    #[test]
    fn the_apis_answers_round_trip() {
        let list = FaultList {
            faults: vec![view()],
        };
        let text = serde_json::to_string(&list).expect("serialises");
        assert_eq!(serde_json::from_str::<FaultList>(&text).expect(&text), list);
        let ready = Readiness {
            ready: true,
            faults_active: 1,
            max_faults: 1024,
        };
        let text = serde_json::to_string(&ready).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Readiness>(&text).expect(&text),
            ready
        );
    }
}
