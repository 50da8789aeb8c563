//! The values that select traffic come from the fault model (one parser for every front end);
//! what is here maps them to the kernel's numbers.
use chaos_common::proto;
pub use chaos_model::{Cidr, Direction, PortRange, Probability, Protocol};

/// What selects the operations a fault applies to, shared by every kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Filters {
    pub peers: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
    pub probability: Probability,
    /// Count and report what would be hit, change nothing.
    pub dry_run: bool,
    /// Some peers are pods chosen by label, followed while the fault runs: the peer filter
    /// stays on even while no pod matches (then nothing does).
    pub follows_peers: bool,
}

impl Filters {
    /// No filter: every operation of the scope, always.
    pub fn everything() -> Self {
        Filters {
            peers: Vec::new(),
            ports: Vec::new(),
            protocol: None,
            probability: Probability::ALWAYS,
            dry_run: false,
            follows_peers: false,
        }
    }
}

/// The kernel's protocol number to match, 0 for any.
pub fn protocol_number(protocol: Option<Protocol>) -> u32 {
    u32::from(match protocol {
        None => proto::ANY,
        Some(Protocol::Tcp) => proto::TCP,
        Some(Protocol::Udp) => proto::UDP,
    })
}
