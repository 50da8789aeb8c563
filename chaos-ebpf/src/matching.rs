//! The decision shared by every mechanism: does this operation match the fault's filters, and
//! does the probability draw say inject?
use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    maps::{LpmTrie, lpm_trie::Key},
};
use chaos_common::{AF_INET, AF_INET6, FaultConfig, LossState, PORT_SET_PEER, flags};

use crate::maps::{CONFIG, LOSS_STATE, PEER_V4, PEER_V6, PORTS};

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
    if config.flags & flags::MATCH_PORT != 0 && !port_in_set(PORT_SET_PEER, peer.port) {
        return false;
    }
    if config.flags & flags::MATCH_PEER != 0
        && !in_cidrs(&PEER_V4, &PEER_V6, peer.family, &peer.addr)
    {
        return false;
    }
    true
}

#[inline(always)]
pub fn port_in_set(set_index: u32, port: u16) -> bool {
    let Some(set) = PORTS.get(set_index) else {
        return false;
    };
    set.words
        .get(usize::from(port >> 6))
        .is_some_and(|word| word & (1 << (port & 63)) != 0)
}

/// Whether `addr` lies in one of the CIDRs of the tries for its family.
#[inline(always)]
pub fn in_cidrs(
    v4: &LpmTrie<[u8; 4], u8>,
    v6: &LpmTrie<[u8; 16], u8>,
    family: u16,
    addr: &[u8; 16],
) -> bool {
    match family {
        AF_INET => v4
            .get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]]))
            .is_some(),
        AF_INET6 => v6.get(Key::new(128, *addr)).is_some(),
        _ => false,
    }
}

/// A uniformly random u32: from the kernel, or with `--seed` the next value of a sequence that is
/// the same for the same seed and the same order of draws.
#[inline(always)]
pub fn random_u32(config: &FaultConfig) -> u32 {
    if config.flags & flags::SEEDED == 0 {
        // SAFETY: the helper has no preconditions.
        return unsafe { bpf_get_prandom_u32() };
    }
    let n = next(LossState::Draws);
    // splitmix64 of (seed + n * golden gamma): independent, well-mixed values per index.
    let mut z = config
        .packet
        .seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// True with probability `threshold / 2^32`.
#[inline(always)]
pub fn draw(config: &FaultConfig, threshold: u64) -> bool {
    u64::from(random_u32(config)) < threshold
}

/// Increments a shared loss-state slot and returns its previous value.
///
/// A plain read-modify-write: the generic BPF CPU that aya-build targets cannot use the result of
/// an atomic add. Exact while one CPU handles the traffic (a flow usually stays on one); CPUs
/// racing on the same slot can repeat a value, skewing every-nth or first-n by a packet.
#[inline(always)]
pub fn next(slot: LossState) -> u64 {
    match LOSS_STATE.get_ptr_mut(slot as u32) {
        // SAFETY: the map value is a live, aligned u64.
        Some(ptr) => unsafe {
            let previous = *ptr;
            *ptr = previous + 1;
            previous
        },
        None => 0,
    }
}
