//! The maps of one loaded object. Names must equal `chaos_common::maps` (a userspace test checks
//! the built object against that list). Per-rule maps are declared with one rule's worth of
//! entries; userspace sizes them for the object's rules before loading.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use chaos_common::{
    AddrKey4, AddrKey6, CONTROL_ENTRIES, Counter, DIST_TABLE_SIZE, DnsName, DnsNameRules, DnsWork,
    EVENTS_RING_BYTES, EventBudget, FaultConfig, LossState, MAX_CIDRS, MAX_DNS_NAMES,
    MAX_FILE_PATHS, MAX_FILTER_ENTRIES, MAX_HELD_CONNECTIONS, MAX_SCOPE_ENTRIES, PortKey, RuleList,
    ScopeKey, jitter,
};

#[map(name = "CHAOS_CONTROL")]
pub static CONTROL: Array<u32> = Array::with_max_entries(CONTROL_ENTRIES, 0);

#[map(name = "CHAOS_CONFIG")]
pub static CONFIG: Array<FaultConfig> = Array::with_max_entries(1, 0);

#[map(name = "CHAOS_ADDR_V4")]
pub static ADDR_V4: LpmTrie<AddrKey4, u8> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_ADDR_V6")]
pub static ADDR_V6: LpmTrie<AddrKey6, u8> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_PORTS")]
pub static PORTS: LpmTrie<PortKey, u8> =
    LpmTrie::with_max_entries(MAX_FILTER_ENTRIES, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_TC_IDX4")]
pub static TC_INDEX_V4: LpmTrie<[u8; 4], RuleList> =
    LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_TC_IDX6")]
pub static TC_INDEX_V6: LpmTrie<[u8; 16], RuleList> =
    LpmTrie::with_max_entries(MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_DIST")]
pub static DIST: Array<i32> = Array::with_max_entries(DIST_TABLE_SIZE * jitter::TABLES, 0);

#[map(name = "CHAOS_LOSS")]
pub static LOSS_STATE: Array<u64> = Array::with_max_entries(LossState::COUNT, 0);

#[map(name = "CHAOS_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "CHAOS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map(name = "CHAOS_EV_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// Preallocated: kprobe programs on kernels before 6.1 may only use preallocated hash maps.
#[map(name = "CHAOS_SCOPES")]
pub static SCOPES: HashMap<ScopeKey, RuleList> = HashMap::with_max_entries(MAX_SCOPE_ENTRIES, 0);

#[map(name = "CHAOS_LEVELS")]
pub static SCOPE_LEVELS: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "CHAOS_FLOWS")]
pub static FLOWS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

#[map(name = "CHAOS_DNS_NAMES")]
pub static DNS_NAMES: LpmTrie<DnsName, DnsNameRules> =
    LpmTrie::with_max_entries(MAX_DNS_NAMES, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_CLONING")]
pub static CLONING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CHAOS_DNS_WORK")]
pub static DNS_WORK: PerCpuArray<DnsWork> = PerCpuArray::with_max_entries(1, 0);

/// Allocated as connections take seats: an idle object holds no entries.
#[map(name = "CHAOS_CONN_SEAT")]
pub static CONN_SEATS: HashMap<[u32; 2], u64> =
    HashMap::with_max_entries(MAX_HELD_CONNECTIONS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_CONN_HELD")]
pub static CONN_HELD: HashMap<u64, [u32; 2]> =
    HashMap::with_max_entries(MAX_HELD_CONNECTIONS, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_RATE_LOCK")]
pub static RATE_LOCK: HashMap<u32, u32> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

#[map(name = "CHAOS_FILE_PATH")]
pub static FILE_PATHS: HashMap<[u64; 2], RuleList> =
    HashMap::with_max_entries(MAX_FILE_PATHS, BPF_F_NO_PREALLOC);
