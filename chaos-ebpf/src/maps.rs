//! The maps of one fault instance. Names must equal `chaos_common::maps` (a userspace test
//! checks the built object against that list).
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use chaos_common::{
    Counter, EVENTS_RING_BYTES, EventBudget, FaultConfig, LossState, MAX_CIDRS, PortSet,
};

#[map(name = "CHAOS_CONFIG")]
pub static CONFIG: Array<FaultConfig> = Array::with_max_entries(1, 0);

#[map(name = "CHAOS_PEER_V4")]
pub static PEER_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_PEER_V6")]
pub static PEER_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_PORTS")]
pub static PORTS: Array<PortSet> = Array::with_max_entries(2, 0);

#[map(name = "CHAOS_SRC_V4")]
pub static SRC_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_SRC_V6")]
pub static SRC_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_LOSS")]
pub static LOSS_STATE: Array<u64> = Array::with_max_entries(LossState::COUNT, 0);

#[map(name = "CHAOS_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "CHAOS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map(name = "CHAOS_EV_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CHAOS_FLOWS")]
pub static FLOWS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);
