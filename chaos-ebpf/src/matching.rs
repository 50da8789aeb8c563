//! The decision shared by every mechanism: does this operation match the fault's filters, and
//! does the probability draw say inject?
use aya_ebpf::{helpers::bpf_get_prandom_u32, maps::lpm_trie::Key};
use chaos_common::{AF_INET, AF_INET6, FaultConfig, flags};

use crate::maps::{CONFIG, PEER_V4, PEER_V6, PORTS};

/// The remote end of a connection or packet, as the filters see it.
pub struct Peer {
    pub family: u16,
    /// IPv4 in the first four bytes, network order.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    pub proto: u8,
}

/// The armed configuration, or `None` while userspace is still filling the filter maps.
#[inline(always)]
pub fn armed_config() -> Option<&'static FaultConfig> {
    let config = CONFIG.get(0)?;
    (config.armed != 0).then_some(config)
}

#[inline(always)]
pub fn peer_matches(config: &FaultConfig, peer: &Peer) -> bool {
    if config.proto != 0 && config.proto != u32::from(peer.proto) {
        return false;
    }
    if config.flags & flags::MATCH_PORT != 0 && !port_in_set(peer.port) {
        return false;
    }
    if config.flags & flags::MATCH_PEER != 0 && !peer_in_cidrs(peer) {
        return false;
    }
    true
}

#[inline(always)]
fn port_in_set(port: u16) -> bool {
    let Some(set) = PORTS.get(0) else {
        return false;
    };
    set.words
        .get(usize::from(port >> 6))
        .is_some_and(|word| word & (1 << (port & 63)) != 0)
}

#[inline(always)]
fn peer_in_cidrs(peer: &Peer) -> bool {
    match peer.family {
        AF_INET => {
            let addr = [peer.addr[0], peer.addr[1], peer.addr[2], peer.addr[3]];
            PEER_V4.get(Key::new(32, addr)).is_some()
        }
        AF_INET6 => PEER_V6.get(Key::new(128, peer.addr)).is_some(),
        _ => false,
    }
}

/// True with probability `threshold / 2^32`.
#[inline(always)]
pub fn draw(threshold: u64) -> bool {
    // SAFETY: the helper has no preconditions.
    u64::from(unsafe { bpf_get_prandom_u32() }) < threshold
}
