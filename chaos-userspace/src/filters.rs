//! The values that select traffic come from the fault model (one parser for every front end);
//! what is here maps them to the kernel's numbers.
use chaos_common::proto;
pub use chaos_model::{Cidr, Direction, PortRange, Probability, Protocol};

/// The kernel's protocol number to match, 0 for any.
pub fn protocol_number(protocol: Option<Protocol>) -> u32 {
    u32::from(match protocol {
        None => proto::ANY,
        Some(Protocol::Tcp) => proto::TCP,
        Some(Protocol::Udp) => proto::UDP,
    })
}
