//! The ABI between chaos-bpf's kernel programs and its loader.
//!
//! Every type here crosses the user/kernel boundary through a map or the ring buffer, so each is
//! `#[repr(C)]`, has no implicit padding (asserted below), and is `aya::Pod` under the `user`
//! feature. Map and program names live here too so neither side spells them twice.
#![no_std]

/// Map names, as the kernel object defines them (kept at most 15 bytes: the kernel's name limit).
///
/// One loaded object holds one or more *rules*: every syscall, connect or cgroup_skb fault of a
/// mechanism is a rule of one shared object (found through [`SCOPES`]), and every TC fault of a
/// run on any interface is one rule of a shared rule set. Everything per rule is indexed by the
/// rule's slot in [`CONFIG`]; filters live in tries keyed by that index.
pub mod maps {
    /// `Array<u32>`: entry [`crate::CONTROL_KILL`] is the kill switch: non-zero and no program of
    /// the object injects anything, before any detach. Every program reads it first. Entry
    /// [`crate::CONTROL_DNS`] is non-zero while the object has DNS rules.
    pub const CONTROL: &str = "CHAOS_CONTROL";
    /// `Array<FaultConfig>`: one entry per rule.
    pub const CONFIG: &str = "CHAOS_CONFIG";
    /// `LpmTrie<AddrKey<4>, u8>`: each rule's IPv4 CIDRs per [`crate::filter_field`].
    pub const ADDR_V4: &str = "CHAOS_ADDR_V4";
    /// `LpmTrie<AddrKey<16>, u8>`: the same for IPv6.
    pub const ADDR_V6: &str = "CHAOS_ADDR_V6";
    /// `LpmTrie<PortKey, u8>`: each rule's port ranges, as prefixes, per field.
    pub const PORTS: &str = "CHAOS_PORTS";
    /// `LpmTrie<[u8; 4], RuleList>`: TC rules by the IPv4 destination they cover. One lookup
    /// gives every rule a packet can match, whatever the number of rules.
    pub const TC_INDEX_V4: &str = "CHAOS_TC_IDX4";
    /// `LpmTrie<[u8; 16], RuleList>`: the same for IPv6.
    pub const TC_INDEX_V6: &str = "CHAOS_TC_IDX6";
    /// `Array<i32>`: the delay distribution tables, [`DIST_TABLE_SIZE`](crate::DIST_TABLE_SIZE)
    /// entries per [`crate::jitter`] table.
    pub const DIST: &str = "CHAOS_DIST";
    /// `Array<u64>`: loss-model state shared by all CPUs, [`crate::LossState::COUNT`] per rule.
    pub const LOSS_STATE: &str = "CHAOS_LOSS";
    /// `LruHashMap<u32, u64>`: the last departure time given to each flow (by skb hash), so
    /// jitter never reorders a flow.
    pub const FLOWS: &str = "CHAOS_FLOWS";
    /// `PerCpuArray<u64>`: [`crate::Counter::COUNT`] per rule.
    pub const COUNTERS: &str = "CHAOS_COUNTERS";
    /// `RingBuf` of [`crate::Event`].
    pub const EVENTS: &str = "CHAOS_EVENTS";
    /// `PerCpuArray<EventBudget>`: per-CPU event rate limiting state, one entry per rule, so a
    /// noisy fault cannot use up another's events.
    pub const EVENT_BUDGET: &str = "CHAOS_EV_BUDGET";
    /// `HashMap<ScopeKey, RuleList>`: the rules of each (cgroup, hook), for every program but
    /// TC's, the pattern of Tetragon's policy filter. A program asks for the task's (or the
    /// packet's socket's) cgroup ancestors at the levels in [`SCOPE_LEVELS`], deepest first, and
    /// the first hit lists every rule for that cgroup, its ancestors' rules included (userspace
    /// merges them). Arming a fault into a loaded object is writes here, no program load.
    pub const SCOPES: &str = "CHAOS_SCOPES";
    /// `Array<u32>` of one entry: bit L set while some [`SCOPES`] key is a cgroup at level L, so
    /// tasks outside every scope pay one lookup per level in use, none for the others.
    pub const SCOPE_LEVELS: &str = "CHAOS_LEVELS";
    /// `LpmTrie<DnsName, DnsNameRules>`: the names of the DNS rules, each stored as its labels in
    /// reverse order ([`crate::dns_key`]), so one longest-prefix lookup per query finds every
    /// rule whose name or `*.` suffix covers it, however many names there are.
    pub const DNS_NAMES: &str = "CHAOS_DNS_NAMES";
    /// `PerCpuArray<DnsWork>` of one entry: the query's bytes and its lookup key, too big for the
    /// program's 512-byte stack.
    pub const DNS_WORK: &str = "CHAOS_DNS_WORK";
    /// `PerCpuArray<u32>` of one entry: non-zero while this CPU sends a duplicate, whose pass
    /// through the same TC hook (synchronous, on egress) must leave it alone. Not the packet's
    /// mark, which CNIs own.
    pub const CLONING: &str = "CHAOS_CLONING";
    /// `HashMap<[u32; 2], u64>`: connection-limit's seats, (rule, seat) → the socket cookie
    /// holding it. A connection takes a free seat by inserting with `BPF_NOEXIST`, which the
    /// kernel does atomically, so CPUs racing for the last seat cannot both get it.
    pub const CONN_SEATS: &str = "CHAOS_CONN_SEAT";
    /// `HashMap<u64, [u32; 2]>`: the seat each counted socket holds, by socket cookie: the
    /// socket's release gives it back, however the socket ends (closed, reset, its process
    /// killed), and a socket that connects again is not counted twice.
    pub const CONN_HELD: &str = "CHAOS_CONN_HELD";
    /// `HashMap<u32, u32>`: a connection-rate rule's lock (present while one CPU updates its
    /// bucket), taken by inserting with `BPF_NOEXIST`.
    pub const RATE_LOCK: &str = "CHAOS_RATE_LOCK";
    /// `HashMap<[u64; 2], RuleList>`: io-error's paths as the (device, inode) of each path's
    /// directory or file, each with the rules it belongs to. The programs walk a file's dentry
    /// up through its parents, one lookup a level, so the number of paths costs nothing.
    pub const FILE_PATHS: &str = "CHAOS_FILE_PATH";

    /// Every map the object must define; a userspace test checks the object against this list.
    pub const ALL: &[&str] = &[
        CONTROL,
        CONFIG,
        ADDR_V4,
        ADDR_V6,
        PORTS,
        TC_INDEX_V4,
        TC_INDEX_V6,
        DIST,
        LOSS_STATE,
        FLOWS,
        COUNTERS,
        EVENTS,
        EVENT_BUDGET,
        SCOPES,
        SCOPE_LEVELS,
        DNS_NAMES,
        DNS_WORK,
        CLONING,
        CONN_SEATS,
        CONN_HELD,
        RATE_LOCK,
        FILE_PATHS,
    ];

    /// Maps sized by the number of rules of the object (the rest have fixed sizes).
    pub const PER_RULE: &[(&str, u32)] = &[
        (CONFIG, 1),
        (LOSS_STATE, crate::LossState::COUNT),
        (COUNTERS, crate::Counter::COUNT),
        (EVENT_BUDGET, 1),
        (RATE_LOCK, 1),
    ];
}

/// Program (function) names in the kernel object. They all start with `chaos_` so that
/// `bpftool prog show | grep chaos` finds every one of them.
pub mod programs {
    pub const CONNECT4: &str = "chaos_connect4";
    pub const CONNECT6: &str = "chaos_connect6";
    pub const SKB_EGRESS: &str = "chaos_skb_out";
    pub const SKB_INGRESS: &str = "chaos_skb_in";
    /// fmod_ret on `security_socket_*`. Their ELF sections say `fexit/` because aya 0.14 cannot
    /// parse `fmod_ret/`; chaos-bpf loads them itself as BPF_MODIFY_RETURN.
    pub const FMOD_RET_RECV: &str = "chaos_fmr_recv";
    pub const FMOD_RET_SEND: &str = "chaos_fmr_send";
    pub const FMOD_RET_CONNECT: &str = "chaos_fmr_conn";
    /// kprobe + `bpf_override_return` on the syscall entry points: one program per hook (the
    /// recv syscalls, the send syscalls, connect), so one object serves faults of all three.
    pub const KPROBE_RECV: &str = "chaos_kpo_recv";
    pub const KPROBE_SEND: &str = "chaos_kpo_send";
    pub const KPROBE_CONNECT: &str = "chaos_kpo_conn";
    /// BPF LSM on `socket_*`.
    pub const LSM_RECV: &str = "chaos_lsm_recv";
    pub const LSM_SEND: &str = "chaos_lsm_send";
    pub const LSM_CONNECT: &str = "chaos_lsm_conn";
    /// TC classifiers for packet faults on an interface.
    pub const TC_EGRESS: &str = "chaos_tc_out";
    pub const TC_INGRESS: &str = "chaos_tc_in";
    /// Probe for `chaos-bpf doctor`: never alters anything.
    pub const TC_PROBE: &str = "chaos_tc_probe";
    /// connection-limit: cgroup sock_addr connect hooks that admit or refuse a connection, and
    /// the cgroup sock release hook that gives its seat back.
    pub const LIMIT4: &str = "chaos_limit4";
    pub const LIMIT6: &str = "chaos_limit6";
    pub const LIMIT_RELEASE: &str = "chaos_limit_rel";
    /// io-error: fmod_ret on `security_file_open` / `security_file_permission` (sections say
    /// `fexit/`, as the socket ones), and the BPF LSM hooks of the same names.
    pub const FMOD_RET_FILE_OPEN: &str = "chaos_fmr_fopen";
    pub const FMOD_RET_FILE_ACCESS: &str = "chaos_fmr_fperm";
    pub const LSM_FILE_OPEN: &str = "chaos_lsm_fopen";
    pub const LSM_FILE_ACCESS: &str = "chaos_lsm_fperm";

    pub const ALL: &[&str] = &[
        CONNECT4,
        CONNECT6,
        SKB_EGRESS,
        SKB_INGRESS,
        FMOD_RET_RECV,
        FMOD_RET_SEND,
        FMOD_RET_CONNECT,
        LSM_RECV,
        LSM_SEND,
        LSM_CONNECT,
        KPROBE_RECV,
        KPROBE_SEND,
        KPROBE_CONNECT,
        TC_EGRESS,
        TC_INGRESS,
        TC_PROBE,
        LIMIT4,
        LIMIT6,
        LIMIT_RELEASE,
        FMOD_RET_FILE_OPEN,
        FMOD_RET_FILE_ACCESS,
        LSM_FILE_OPEN,
        LSM_FILE_ACCESS,
    ];
}

/// Upper bounds that size the maps; userspace rejects input beyond them.
/// (LPM tries allocate per entry, so the bounds cost nothing until used.)
pub const MAX_CIDRS: u32 = 65536;
/// Entries of the filter tries: CIDRs, and port ranges as prefixes, over all rules.
pub const MAX_FILTER_ENTRIES: u32 = 1 << 20;
/// TC rules in one run.
pub const MAX_TC_RULES: u32 = 65536;
/// Entries of [`maps::SCOPES`]: distinct (cgroup, hook) pairs armed at once in one object.
pub const MAX_SCOPE_ENTRIES: u32 = 4096;
/// cgroup levels a scope may sit at (0 is the root): the bits of [`maps::SCOPE_LEVELS`].
pub const MAX_CGROUP_LEVELS: u32 = 32;
/// Rules one destination may be covered by (the entries of a [`RuleList`]). The verifier checks
/// a rule's evaluation once per candidate slot, so this bounds the TC programs' verification:
/// about 140k instructions at 8 on 6.18 (260k at 15, which 6.1 under emulation took too long on).
pub const MAX_RULES_PER_DESTINATION: usize = 8;
/// The most a packet is delayed, all rules together: fq drops packets past its 10 s horizon.
pub const MAX_DELAY_NS: u64 = 5_000_000_000;
/// [`maps::CONTROL`] entries.
pub const CONTROL_KILL: u32 = 0;
pub const CONTROL_DNS: u32 = 1;
/// Non-zero while the object has duplicate rules: only then is [`maps::CLONING`] read.
pub const CONTROL_DUPLICATE: u32 = 2;
pub const CONTROL_ENTRIES: u32 = 3;
/// The rule index under which [`maps::PORTS`] holds the ports of every DNS rule of the object:
/// one lookup tells whether a packet may be a query some DNS rule wants read.
pub const DNS_ANY_RULE: u32 = u32::MAX;
/// DNS rules in one object: each has a bit in [`DnsNameRules`] masks.
pub const MAX_DNS_RULES: u32 = 64;
/// Names (and `*.` suffixes) over the DNS rules of one object.
pub const MAX_DNS_NAMES: u32 = 16384;
/// Bytes of a [`DnsName`] key: a wire name is at most 255 bytes with its root label, and the key
/// adds a terminator to exact names.
pub const DNS_NAME_BYTES: usize = 256;
/// connection-limit: the most connections one rule may hold at once. Taking a seat scans the
/// rule's seats, so this bounds the scan (and the verifier's walk of it).
pub const MAX_CONNECTION_SEATS: u32 = 1024;
/// Connections held over all connection-limit rules of one object (entries of the seat maps).
pub const MAX_HELD_CONNECTIONS: u32 = 65536;
/// io-error: (device, inode) entries over all io-error rules of one object.
pub const MAX_FILE_PATHS: u32 = 4096;
/// io-error: how many directories above a file the programs look for a rule's path.
pub const MAX_PATH_DEPTH: u32 = 32;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// What a filter trie entry of a rule selects.
pub mod filter_field {
    /// The remote peer (syscall and cgroup_skb faults), or TC's destination port.
    pub const PEER: u8 = 0;
    /// TC's source address or port.
    pub const SOURCE: u8 = 1;
}

/// Key data of [`maps::ADDR_V4`] (N = 4) and [`maps::ADDR_V6`] (N = 16): the rule index (big
/// endian, so it leads the prefix), the field, then the address. A CIDR of length L is stored
/// with prefix length 40 + L.
pub fn addr_key<const N: usize, const K: usize>(rule: u32, field: u8, addr: [u8; N]) -> [u8; K] {
    let mut key = [0u8; K];
    key[..4].copy_from_slice(&rule.to_be_bytes());
    key[4] = field;
    key[5..5 + N].copy_from_slice(&addr);
    key
}

pub type AddrKey4 = [u8; 9];
pub type AddrKey6 = [u8; 21];
/// Key data of [`maps::PORTS`]: rule (big endian), field, port (big endian).
pub type PortKey = [u8; 7];
/// Bits of a filter key before the address or port: rule index and field.
pub const FILTER_KEY_PREFIX_BITS: u32 = 40;

pub fn port_key(rule: u32, field: u8, port: u16) -> PortKey {
    let mut key = [0u8; 7];
    key[..4].copy_from_slice(&rule.to_be_bytes());
    key[4] = field;
    key[5..].copy_from_slice(&port.to_be_bytes());
    key
}

/// The operation a program judges, as the second half of a [`ScopeKey`]: a cgroup can have
/// recv-error and send-error faults at once, and each program looks only at its own.
pub mod scope_hook {
    pub const CONNECT: u32 = 1;
    pub const RECV: u32 = 2;
    pub const SEND: u32 = 3;
    pub const EGRESS: u32 = 4;
    pub const INGRESS: u32 = 5;
    /// connection-limit's connect hooks: a cgroup can have connect-error and connection-limit
    /// faults at once, each judged by its own program.
    pub const CONNECT_LIMIT: u32 = 6;
    /// io-error's open hooks and read/write hooks.
    pub const FILE_OPEN: u32 = 7;
    pub const FILE_ACCESS: u32 = 8;
}

/// Key of [`maps::SCOPES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    /// cgroup v2 id (the directory's inode).
    pub cgroup_id: u64,
    /// [`scope_hook`].
    pub hook: u32,
    pub _pad: u32,
}

/// The rules a TC destination is covered by, or the rules of a [`ScopeKey`], in rule order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleList {
    pub count: u32,
    pub rules: [u32; MAX_RULES_PER_DESTINATION],
}

/// Entries per delay distribution table, and the fixed-point scale of its values: an entry of
/// `DIST_SCALE` is one jitter unit (one standard deviation for normal).
pub const DIST_TABLE_SIZE: u32 = 4096;
pub const DIST_SCALE: i32 = 4096;

/// Slots of [`maps::LOSS_STATE`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossState {
    /// Matching packets seen (every-nth, first-n).
    Seen = 0,
    /// Gilbert-Elliott: 1 while in the bad state.
    Bad = 1,
    /// Random draws made with `--seed`: the index into the seeded sequence.
    Draws = 2,
    /// bandwidth: the departure time given to the rule's last packet.
    Departure = 3,
}

impl LossState {
    pub const COUNT: u32 = 4;
}

/// `PacketParams::loss_model` values.
pub mod loss_model {
    pub const RANDOM: u32 = 0;
    pub const EVERY_NTH: u32 = 1;
    pub const FIRST_N: u32 = 2;
    pub const GILBERT_ELLIOTT: u32 = 3;
}

/// Probability is a threshold against `bpf_get_prandom_u32()`: inject when `rand < threshold`.
/// `PROBABILITY_ONE` (2^32) therefore always injects and 0 never does, at 1/2^32 resolution.
pub const PROBABILITY_ONE: u64 = 1 << 32;

/// Indices into the per-CPU counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Operations that passed every filter (before the probability draw).
    Matched = 0,
    /// Operations the fault was applied to.
    Injected = 1,
    /// Injections whose event was not sent because of the per-CPU event budget.
    EventsSampledOut = 2,
    /// Injections whose event was lost because the ring buffer was full.
    EventsLost = 3,
}

impl Counter {
    pub const COUNT: u32 = 4;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Matched,
        Counter::Injected,
        Counter::EventsSampledOut,
        Counter::EventsLost,
    ];
}

/// What a fault does to matching traffic.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    ConnectError = 1,
    Drop = 2,
    RecvError = 3,
    SendError = 4,
    /// TC: matching TCP segments become RSTs.
    Reset = 5,
    /// TC egress: matching packets leave later (EDT under fq).
    Delay = 6,
    /// TC: one random payload bit of matching packets flips.
    Corrupt = 7,
    /// TC: matching DNS queries get an answer with `PacketParams::dns_rcode`, made in the kernel
    /// and sent back to the asking socket, or are lost with [`flags::DNS_DROP`].
    DnsError = 8,
    /// TC egress: matching DNS queries leave later (EDT under fq).
    DnsDelay = 9,
    /// TC egress: matching packets are sent twice.
    Duplicate = 10,
    /// TC egress: matching packets, all flows together, leave no faster than a rate (an EDT
    /// token bucket under fq).
    Bandwidth = 11,
    /// cgroup_skb: the scope's sockets and their peers stop reaching each other (drop both
    /// ways, silently); with [`flags::CONNECT_ONLY`] only connection attempts are lost.
    Partition = 12,
    /// cgroup sock_addr: connections beyond a number held at once, or beyond a rate, fail with
    /// the errno.
    ConnectionLimit = 13,
    /// fmod_ret or BPF LSM on file hooks: opens, reads or writes of files under some paths
    /// fail with the errno.
    IoError = 14,
}

impl FaultKind {
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::ConnectError),
            2 => Some(Self::Drop),
            3 => Some(Self::RecvError),
            4 => Some(Self::SendError),
            5 => Some(Self::Reset),
            6 => Some(Self::Delay),
            7 => Some(Self::Corrupt),
            8 => Some(Self::DnsError),
            9 => Some(Self::DnsDelay),
            10 => Some(Self::Duplicate),
            11 => Some(Self::Bandwidth),
            12 => Some(Self::Partition),
            13 => Some(Self::ConnectionLimit),
            14 => Some(Self::IoError),
            _ => None,
        }
    }
}

/// `FaultConfig::flags` bits.
pub mod flags {
    /// Only peers in the rule's PEER addresses match (a family without any never matches).
    pub const MATCH_PEER: u32 = 1 << 0;
    /// Only peer (TC: destination) ports in the rule's PEER ports match.
    pub const MATCH_PORT: u32 = 1 << 1;
    /// Packet faults: act on egress packets.
    pub const EGRESS: u32 = 1 << 2;
    /// Packet faults: act on ingress packets.
    pub const INGRESS: u32 = 1 << 3;
    /// TC: act only when the packet's socket's cgroup ancestor at `scope_cgroup_level` is
    /// `scope_cgroup_id`. Every other program finds its rules by cgroup in [`maps::SCOPES`].
    pub const SCOPE_CGROUP: u32 = 1 << 4;
    /// TC: only sources in the rule's SOURCE addresses match (destinations are in the index).
    pub const MATCH_SRC: u32 = 1 << 5;
    /// TC: only source ports in the rule's SOURCE ports match.
    pub const MATCH_SPORT: u32 = 1 << 6;
    /// TC: only TCP segments with one of `PacketParams::tcp_flags` set match.
    pub const MATCH_TCP_FLAGS: u32 = 1 << 7;
    /// Random draws come from a sequence seeded by `PacketParams::seed`.
    pub const SEEDED: u32 = 1 << 8;
    /// corrupt: update the L4 checksum so the corruption reaches the application.
    pub const FIX_CHECKSUM: u32 = 1 << 9;
    /// delay: some of the flow's packets get less delay than others (jitter, a probability, a
    /// loss model), so departures are kept in flow order through the flow table.
    pub const KEEP_ORDER: u32 = 1 << 10;
    /// Dry run: everything up to the decision (filters, deadline, probability, loss model),
    /// counted as injected and reported, but the operation or packet is left alone.
    pub const DRY_RUN: u32 = 1 << 11;
    /// dns-error: the query is lost (the resolver times out) instead of answered.
    pub const DNS_DROP: u32 = 1 << 12;
    /// partition --keep-established: only connection attempts match (TCP SYNs without ACK),
    /// so flows established before the fault keep working.
    pub const CONNECT_ONLY: u32 = 1 << 13;
    /// io-error: the operations it fails: open(), read(), write() (and what else the file
    /// hooks see for them: readdir is a read).
    pub const FILE_OPEN: u32 = 1 << 14;
    pub const FILE_READ: u32 = 1 << 15;
    pub const FILE_WRITE: u32 = 1 << 16;
}

/// IP protocol numbers used by the protocol filter (0 = any).
pub mod proto {
    pub const ANY: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Byte offsets of the socket fields the syscall-fault programs read, resolved by userspace from
/// the running kernel's BTF (Rust eBPF has no CO-RE relocations). All fit in 16 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `struct socket`: `sk` (pointer) and `type` (short).
    pub socket_sk: u16,
    pub socket_type: u16,
    /// `struct sock` (its `__sk_common`): family, IPv4 peer, peer port, IPv6 peer.
    pub skc_family: u16,
    pub skc_daddr: u16,
    pub skc_dport: u16,
    pub skc_v6_daddr: u16,
    pub _pad: [u16; 2],
}

/// Byte offsets the kprobe programs need to get from a syscall's file descriptor to its socket:
/// the syscall's registers, then task → files → fdtable → file → inode (is it a socket?) and the
/// file's `private_data` (the `struct socket`). Resolved from BTF like [`SockOffsets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdOffsets {
    /// `struct pt_regs`: the first and second syscall arguments (x86_64: `di`, `si`).
    pub regs_arg0: u16,
    pub regs_arg1: u16,
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdtable_max_fds: u16,
    pub fdtable_fd: u16,
    pub file_inode: u16,
    pub file_private_data: u16,
    pub inode_mode: u16,
    pub _pad: [u16; 3],
}

/// Byte offsets io-error's programs need to walk from a file to its directories: the file's
/// dentry, each dentry's parent and inode, the inode's number and superblock, the superblock's
/// device. Resolved from BTF like [`SockOffsets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOffsets {
    /// `file.f_path.dentry`.
    pub file_dentry: u16,
    pub dentry_parent: u16,
    pub dentry_inode: u16,
    pub inode_ino: u16,
    pub inode_sb: u16,
    pub sb_dev: u16,
    pub _pad: [u16; 2],
}

/// Packet-fault parameters (TC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketParams {
    /// With [`flags::SEEDED`]: the seed of the decision sequence.
    pub seed: u64,
    /// [`loss_model`] value.
    pub loss_model: u32,
    /// N for every-nth and first-n.
    pub loss_n: u32,
    /// Gilbert-Elliott thresholds out of 2^32: good→bad (p), bad→good (r), delivery in the bad
    /// state (h), delivery in the good state (k).
    pub ge_p: u32,
    pub ge_r: u32,
    pub ge_h: u32,
    pub ge_k: u32,
    /// TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20).
    pub tcp_flags: u32,
    /// [`jitter`] distribution of the delay.
    pub distribution: u32,
    /// Delay added to matching packets' departure time.
    pub delay_ns: u64,
    /// Uniform: the half-width; normal: the standard deviation.
    pub jitter_ns: u64,
    /// DNS rules: the rule's bit in [`DnsNameRules`] masks.
    pub dns_slot: u32,
    /// dns-error: the response code of the answer (NXDOMAIN 3, SERVFAIL 2, REFUSED 5).
    pub dns_rcode: u32,
    /// DNS rules: the query type to match (A 1, AAAA 28), 0 for any.
    pub dns_qtype: u32,
    pub _pad: u32,
    /// bandwidth: the rate in bytes per second ...
    pub rate_bytes_per_sec: u64,
    /// ... and how far behind now the bucket may fall, as time: the burst sent at line rate.
    pub burst_ns: u64,
}

/// connection-limit parameters: a number of seats, or a rate as a generic cell rate algorithm
/// (a token bucket kept as the time its next token is due).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitParams {
    /// Connections held at once; 0 when the rule limits the rate instead.
    pub max_connections: u32,
    pub _pad: u32,
    /// The rate as the time between two connections; 0 when the rule limits seats.
    pub interval_ns: u64,
    /// How far ahead of now the bucket's due time may run: (burst - 1) intervals.
    pub burst_ns: u64,
}

/// `PacketParams::distribution` values. Uniform is computed; the others are tables in
/// [`maps::DIST`], at `(distribution - 1) * DIST_TABLE_SIZE`.
pub mod jitter {
    pub const UNIFORM: u32 = 0;
    pub const NORMAL: u32 = 1;
    /// netem's pareto: shape 3, centred on its mean, heavy tail above.
    pub const PARETO: u32 = 2;
    /// Distributions with a table.
    pub const TABLES: u32 = 2;
}

/// One rule's configuration: an entry of [`maps::CONFIG`] (a syscall or cgroup_skb fault is the
/// one rule of its object; each TC fault of a run is one rule of the run's TC object).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Injection threshold, see [`PROBABILITY_ONE`].
    pub probability: u64,
    /// With [`flags::SCOPE_CGROUP`]: the target cgroup's id ...
    pub scope_cgroup_id: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) from which the rule injects nothing, whatever user
    /// space does: a hung or stopped chaos-bpf cannot extend a fault. Every rule has one; an
    /// all-zero slot is expired as well as unarmed.
    pub expires_ns: u64,
    /// Identifies this fault in events and metrics.
    pub fault_id: u32,
    /// [`FaultKind`] as a raw value.
    pub kind: u32,
    /// Positive errno handed to the process, for syscall faults.
    pub errno: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// [`proto`] number to match, 0 for any.
    pub proto: u32,
    /// Events each CPU may emit per second; the rest are counted in `EventsSampledOut`.
    pub events_per_sec: u32,
    /// Set by userspace once every filter map is filled; until then nothing is injected.
    pub armed: u32,
    /// ... and its depth below the cgroup2 root (the root is level 0).
    pub scope_cgroup_level: u32,
    /// TC: the interface the rule acts on (the program may be attached to several).
    pub ifindex: u32,
    pub _pad: u32,
    pub sock_offsets: SockOffsets,
    pub fd_offsets: FdOffsets,
    pub packet: PacketParams,
    pub limit: LimitParams,
    pub file_offsets: FileOffsets,
}

/// Per-CPU state of the event rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// The one-second window (`ktime / 1e9`) the count belongs to.
    pub window: u64,
    /// Events emitted on this CPU in that window.
    pub emitted: u64,
}

/// Address family values in [`Event::family`].
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// One injected fault, sent through [`maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at injection.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task (syscall faults) or of the socket (packet faults).
    pub cgroup_id: u64,
    pub fault_id: u32,
    /// [`FaultKind`] as a raw value.
    pub kind: u32,
    /// Thread group id, 0 where the hook has no task context.
    pub pid: u32,
    /// Errno handed to the process (syscall faults), 0 for packet faults.
    pub errno: u32,
    /// Peer address: IPv4 in the first 4 bytes, network order.
    pub peer_addr: [u8; 16],
    /// Peer port, host order.
    pub peer_port: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 1 for egress, 2 for ingress, 0 for syscall faults.
    pub direction: u8,
    pub _pad: [u8; 2],
    /// `comm` of the task, NUL padded; empty where the hook has no task context.
    pub comm: [u8; 16],
}

pub const DIRECTION_EGRESS: u8 = 1;
pub const DIRECTION_INGRESS: u8 = 2;

/// Key data of [`maps::DNS_NAMES`]: a name's labels in reverse order, each as on the wire (length
/// byte, then its bytes, lowercased), so a domain is a prefix of every name under it. An exact
/// name adds a 0 terminator; a `*.` suffix does not, and so covers the names under it.
pub type DnsName = [u8; DNS_NAME_BYTES];

/// Value of [`maps::DNS_NAMES`]: which DNS rules (by `dns_slot` bit) match a query whose longest
/// stored prefix is this entry. Userspace folds the rules of every shorter `*.` suffix in, so the
/// one lookup answers for all of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsNameRules {
    /// The query's name is this entry's name (an exact name, or the domain of a `*.` suffix,
    /// which the suffix itself does not cover).
    pub at: u64,
    /// The query's name is below this entry's domain.
    pub under: u64,
    /// The entry's key length in bytes, which tells the two cases apart.
    pub key_bytes: u32,
    pub _pad: u32,
}

/// The lookup key of a [`DnsName`] trie, laid out as the kernel's `bpf_lpm_trie_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsKey {
    pub prefix_bits: u32,
    pub name: DnsName,
}

/// Per-CPU scratch of the DNS parser: the question it read from the packet at hand, the
/// question's raw bytes, the key made from them, and the parser's loop state. All of it lives in
/// map memory rather than registers or the stack on purpose: the verifier does not track map
/// memory, so paths that differ only in what a query asked end in the same state and are pruned
/// (on the stack, every rule the TC program evaluates would be verified once per variant).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsWork {
    /// The DNS rules (one bit per `dns_slot`) whose names cover the packet's question; 0 when
    /// the packet is not a query or was not read.
    pub rules: u64,
    /// Where the DNS header starts: after the UDP header, or after TCP's length prefix.
    pub header: u32,
    pub qtype: u32,
    /// The name's length, and where the label being copied ends.
    pub end: u32,
    pub next: u32,
    pub _pad: [u32; 2],
    pub key: DnsKey,
    pub raw: [u8; DNS_NAME_BYTES],
    pub _tail: u32,
}

/// The trie key of a name (its labels as text, `payments.example.com`), exact or, with `suffix`,
/// the domain whose subdomains a `*.` pattern covers (the empty domain: every name). `None` for a
/// name DNS cannot carry: an empty or over-long label, more than 255 bytes on the wire.
pub fn dns_key(name: &str, suffix: bool) -> Option<(u32, DnsName)> {
    let mut key = [0u8; DNS_NAME_BYTES];
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut at = 0;
    if !(name.is_empty() && suffix) {
        for label in name.rsplit('.').map(str::as_bytes) {
            // The wire form's length: these labels, and the root's zero byte.
            if label.is_empty() || label.len() > 63 || at + 1 + label.len() + 1 > 255 {
                return None;
            }
            key[at] = label.len() as u8;
            for (i, byte) in label.iter().enumerate() {
                key[at + 1 + i] = byte.to_ascii_lowercase();
            }
            at += 1 + label.len();
        }
    }
    let key_bytes = if suffix { at } else { at + 1 };
    Some(((key_bytes * 8) as u32, key))
}

// Padding-free layouts: the sum of the fields equals the size, so no byte is uninitialised.
const _: () = assert!(core::mem::size_of::<SockOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<FdOffsets>() == 24);
const _: () = assert!(core::mem::size_of::<PacketParams>() == 8 + 4 * 8 + 8 + 8 + 4 * 4 + 16);
const _: () = assert!(core::mem::size_of::<LimitParams>() == 4 + 4 + 8 + 8);
const _: () =
    assert!(core::mem::size_of::<FaultConfig>() == 8 + 8 + 8 + 4 * 10 + 16 + 24 + 88 + 24 + 16);
const _: () = assert!(core::mem::size_of::<FileOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<DnsNameRules>() == 8 + 8 + 4 + 4);
const _: () = assert!(core::mem::size_of::<DnsKey>() == 4 + DNS_NAME_BYTES);
const _: () = assert!(core::mem::size_of::<DnsWork>() == 8 + 4 * 6 + 4 + 2 * DNS_NAME_BYTES + 4);
const _: () = assert!(core::mem::size_of::<RuleList>() == 4 * (1 + MAX_RULES_PER_DESTINATION));
const _: () = assert!(core::mem::size_of::<EventBudget>() == 16);
const _: () = assert!(core::mem::size_of::<ScopeKey>() == 8 + 4 + 4);
const _: () = assert!(core::mem::size_of::<Event>() == 8 + 8 + 4 * 4 + 16 + 2 + 2 + 1 + 1 + 2 + 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, valid for any bit pattern and have no padding
    // (asserted above).
    unsafe impl aya::Pod for super::FaultConfig {}
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::FdOffsets {}
    unsafe impl aya::Pod for super::PacketParams {}
    unsafe impl aya::Pod for super::LimitParams {}
    unsafe impl aya::Pod for super::FileOffsets {}
    unsafe impl aya::Pod for super::RuleList {}
    unsafe impl aya::Pod for super::ScopeKey {}
    unsafe impl aya::Pod for super::EventBudget {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::DnsNameRules {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keys_lead_with_the_rule_then_the_field() {
        let key: AddrKey4 = addr_key(0x0102_0304, filter_field::SOURCE, [10, 0, 0, 1]);
        assert_eq!(key, [1, 2, 3, 4, 1, 10, 0, 0, 1]);
        assert_eq!(
            port_key(7, filter_field::PEER, 5432),
            [0, 0, 0, 7, 0, 0x15, 0x38]
        );
    }

    #[test]
    fn dns_keys_put_the_labels_in_reverse_order() {
        let (bits, key) = dns_key("Payments.Example.COM", false).unwrap();
        assert_eq!(bits, 22 * 8);
        assert_eq!(&key[..22], b"\x03com\x07example\x08payments\x00");
        let (bits, key) = dns_key("example.com.", true).unwrap();
        assert_eq!((bits, &key[..12]), (12 * 8, &b"\x03com\x07example"[..]));
        assert_eq!(dns_key("", true).map(|(bits, _)| bits), Some(0));
        for bad in [
            "",
            "a..b",
            ".a",
            "x.yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
        ] {
            assert_eq!(dns_key(bad, false), None, "{bad:?}");
        }
        // 255 bytes on the wire at most: 127 one-byte labels (254 with the root) fit, 128 not.
        let mut longest = [b'a'; 253];
        for dot in (1..253).step_by(2) {
            longest[dot] = b'.';
        }
        let longest = core::str::from_utf8(&longest).unwrap();
        assert!(dns_key(longest, false).is_some());
        let mut over = [b'a'; 255];
        for dot in (1..255).step_by(2) {
            over[dot] = b'.';
        }
        assert!(dns_key(core::str::from_utf8(&over).unwrap(), false).is_none());
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        for name in maps::ALL {
            assert!(
                name.len() <= 15,
                "{name} is longer than BPF_OBJ_NAME_LEN - 1"
            );
        }
    }

    #[test]
    fn program_names_fit_the_kernel_limit_and_say_chaos() {
        for name in programs::ALL {
            assert!(name.len() <= 15 && name.starts_with("chaos_"), "{name}");
        }
    }
}
