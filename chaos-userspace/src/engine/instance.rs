//! One loaded copy of the kernel object for a batch of TC faults, and everything it is attached
//! to: all TC faults armed together share one object, attached once per interface and direction,
//! whose rules combine per packet. (Every other mechanism keeps one object for all its faults:
//! [`crate::engine::shared`].) Dropping it detaches everything; so does the kernel when the process dies,
//! because nothing is pinned. The map helpers here serve both.
use std::{cell::RefCell, collections::BTreeSet};

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
};
use chaos_common::{
    Counter, FILTER_KEY_PREFIX_BITS, FaultConfig, RuleList, addr_key, filter_field, flags, maps,
    port_key,
};

use crate::{
    error::{ChaosError, Result},
    faults::{FaultSpec, tc_packet::distribution_tables},
    filters::{Cidr, PortRange},
    kernel::mechanism::Mechanism,
    kernel::object,
    kernel::programs::{self, AttachTarget, Attachment, ProgramSpec},
    kernel::rule_index::destination_index,
    net::interface::InterfaceScope,
    net::tc_records::Recorder,
    scope::CgroupScope,
    wire::Counters,
};

/// One fault, as a rule of an object: what it does and where.
pub struct RuleSpec {
    pub fault_id: u32,
    pub spec: FaultSpec,
    /// From arming to the kernel-enforced expiry of the rule.
    pub lifetime: std::time::Duration,
    /// Events each CPU may emit per second for this rule; 0 for none.
    pub events_per_sec: u32,
    /// The cgroups it acts in: one directory, or each pod or container a workload scope names.
    pub cgroups: Vec<CgroupScope>,
    /// The pods or containers those cgroups are, when the scope named workloads.
    pub workloads: Vec<String>,
    /// TC: where it acts. With several (a cgroup's packets on every interface), the rule matches
    /// on any of them.
    pub interfaces: Vec<InterfaceScope>,
}

impl RuleSpec {
    /// "chaos-bpf: armed <what> on <scope> via <programs> for <duration>": the lifetime is the
    /// rule's, when the kernel stops it at the latest.
    pub fn armed_line(&self, programs: &[(&'static str, u32)]) -> String {
        let programs = crate::telemetry::program_names(programs);
        let mut scope = Vec::new();
        match self.interfaces.as_slice() {
            [] => {}
            [interface] => match &interface.pod_netns {
                Some(netns) => scope.push(format!("{}'s host-side veth {}", netns, interface.name)),
                None => scope.push(format!("interface {}", interface.name)),
            },
            every => {
                let names: Vec<&str> = every.iter().map(|i| i.name.as_str()).collect();
                scope.push(format!("interfaces {}", names.join(", ")));
            }
        }
        for cgroup in &self.cgroups {
            scope.push(format!(
                "cgroup {} (id {})",
                cgroup.path.display(),
                cgroup.id
            ));
        }
        format!(
            "chaos-bpf: armed {}#{} {} on {} via {}{}",
            self.spec.name(),
            self.fault_id,
            self.spec
                .describe()
                .trim_start_matches(self.spec.name())
                .trim_start(),
            scope.join(", "),
            programs.join(", "),
            format_args!(" for {}", humantime::format_duration(self.lifetime)),
        )
    }
}

pub struct Instance {
    pub mechanism: Mechanism,
    pub rules: Vec<RuleSpec>,
    /// (name, kernel id) of each loaded program: what `bpftool prog show` lists while the faults
    /// run, and what must be gone afterwards.
    pub programs: Vec<(&'static str, u32)>,
    configs: Vec<FaultConfig>,
    /// Declared before `ebpf` so they are dropped (detached) first.
    _attachments: Vec<Attachment>,
    /// fq roots chaos-bpf installed for delay, removed after the programs are detached.
    _fq: Vec<crate::net::fq::FqRoot>,
    /// Dropped last: removes this run's record of TC state.
    _records: Option<RefCell<Recorder>>,
    ebpf: Ebpf,
}

/// ENOENT from installing fq: this kernel has no fq qdisc, which `fault` (delay, dns-delay,
/// bandwidth) needs.
fn without_fq_unsupported(fault: &'static str, err: ChaosError) -> ChaosError {
    match err {
        ChaosError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
            ChaosError::Unsupported {
                fault,
                mechanism: Mechanism::FqQdisc.name(),
                reason: format!(
                    "the kernel has no fq qdisc (needs {})",
                    Mechanism::FqQdisc.enable_hint()
                ),
            }
        }
        other => other,
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> Result<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|err| ChaosError::io("reading CLOCK_MONOTONIC", std::io::Error::from(err)))?;
    Ok(now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
}

pub(crate) fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ChaosError {
    move |source| ChaosError::Map { name, source }
}

pub(crate) fn missing_map(name: &'static str) -> ChaosError {
    ChaosError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

impl Instance {
    /// Loads the programs, fills every rule's filters, arms the configurations and only then
    /// attaches, so the first packet or call the programs see is already judged by the full rules.
    pub fn arm(rules: Vec<RuleSpec>, mechanism: Mechanism) -> Result<Self> {
        if !mechanism.is_tc() {
            return Err(ChaosError::Unsupported {
                fault: rules.first().map_or("fault", |r| r.spec.name()),
                mechanism: mechanism.name(),
                reason: "only TC faults are armed in batches; others share an object".into(),
            });
        }
        let mut configs = Vec::with_capacity(rules.len());
        let mut dns_slots = 0..chaos_common::MAX_DNS_RULES;
        for rule in &rules {
            let mut config = rule.spec.config(rule.fault_id, rule.events_per_sec);
            if rule.spec.dns_query().is_some() {
                // check_capacity refused more DNS rules than there are slots.
                config.packet.dns_slot = dns_slots.next().ok_or_else(|| {
                    ChaosError::input(
                        "kind",
                        "more DNS faults than one object holds",
                        format!("at most {}", chaos_common::MAX_DNS_RULES),
                    )
                })?;
            }
            if let [interface] = rule.interfaces.as_slice() {
                config.ifindex = interface.ifindex;
            }
            // TC sees every socket's packets: a rule with a cgroup checks it.
            if let Some(scope) = rule.cgroups.first() {
                config.flags |= flags::SCOPE_CGROUP;
                config.scope_cgroup_id = scope.id;
                config.scope_cgroup_level = scope.level;
            }
            configs.push(config);
        }

        // TC state can outlive a SIGKILL (clsact filters, qdiscs chaos-bpf adds): undo what dead
        // runs left, then record ours.
        let interfaces: Vec<&InterfaceScope> = unique(rules.iter().flat_map(|r| &r.interfaces));
        let records = if interfaces.is_empty() {
            None
        } else {
            let report = crate::net::tc_records::cleanup_stale()
                .map_err(|err| ChaosError::io("cleaning up stale TC state", err))?;
            if report.filters_removed + report.qdiscs_removed > 0 {
                eprintln!("chaos-bpf: removed what a killed run left: {report:?}");
            }
            let record_error = |err| ChaosError::io("recording TC state", err);
            let mut recorder = Recorder::new().map_err(record_error)?;
            for interface in &interfaces {
                recorder
                    .use_interface(&interface.name)
                    .map_err(record_error)?;
            }
            Some(RefCell::new(recorder))
        };
        let mut fq = Vec::new();
        if let Some(records) = &records {
            // Rules that set departure times: delay, dns-delay, bandwidth.
            let paced: Vec<&RuleSpec> = rules
                .iter()
                .filter(|r| {
                    crate::faults::extra_requirements(r.spec.kind()).contains(&Mechanism::FqQdisc)
                })
                .collect();
            let fault = paced.first().map_or("delay", |r| r.spec.name());
            for interface in unique(paced.iter().flat_map(|r| &r.interfaces)) {
                let installed = crate::net::fq::ensure(interface, &records.borrow())
                    .map_err(|err| without_fq_unsupported(fault, err))?;
                fq.extend(installed);
            }
        }

        let mut ebpf = object::load_for_rules(rules.len() as u32)?;
        for (index, rule) in rules.iter().enumerate() {
            write_filters(&mut ebpf, index as u32, &rule.spec, FilterOp::Insert)?;
        }
        {
            let destinations: Vec<Vec<Cidr>> = rules
                .iter()
                .map(|r| r.spec.filters().peers.clone())
                .collect();
            fill_index(&mut ebpf, &destinations)?;
            if rules.iter().any(|r| r.spec.uses_distribution_table()) {
                fill_distributions(&mut ebpf)?;
            }
            let dns_rules = rules.iter().zip(&configs).filter_map(|(r, c)| {
                let query = r.spec.dns_query()?;
                Some((c.packet.dns_slot, query, r.spec.filters().ports.as_slice()))
            });
            fill_dns(&mut ebpf, dns_rules)?;
            if rules
                .iter()
                .any(|r| r.spec.kind() == chaos_common::FaultKind::Duplicate)
            {
                set_control(&mut ebpf, chaos_common::CONTROL_DUPLICATE)?;
            }
        }
        // The kernel's deadline: from here, whatever this process does (hangs, is stopped), the
        // programs stop injecting at each rule's expiry. Same clock as bpf_ktime_get_ns().
        let now = monotonic_ns()?;
        for (config, rule) in configs.iter_mut().zip(&rules) {
            config.armed = 1;
            config.expires_ns = now.saturating_add(rule.lifetime.as_nanos() as u64);
        }
        for (index, config) in configs.iter().enumerate() {
            write_config(&mut ebpf, index as u32, config)?;
        }

        let mut attachments = Vec::new();
        let mut loaded: Vec<(&'static str, u32)> = Vec::new();
        for (program, rule, interface) in programs_to_attach(&rules, mechanism)? {
            let target = AttachTarget {
                cgroup: rule.cgroups.first(),
                btf: None,
                interface,
                tc_mechanism: mechanism,
                recorder: records.as_ref(),
            };
            let attachment = programs::load_and_attach(&mut ebpf, program, &target)?;
            let id = attachment.program_id(&ebpf, program.name)?;
            if !loaded.contains(&(program.name, id)) {
                loaded.push((program.name, id));
            }
            attachments.push(attachment);
        }
        Ok(Self {
            mechanism,
            rules,
            programs: loaded,
            configs,
            _attachments: attachments,
            _fq: fq,
            _records: records,
            ebpf,
        })
    }

    /// Exact counts of one rule, summed over CPUs.
    pub fn counters(&self, rule: usize) -> Result<Counters> {
        read_counters(&self.ebpf, rule as u32)
    }

    /// Flips the object's kill switch: no rule injects from the programs' next run on.
    pub fn kill(&mut self) -> Result<()> {
        flip_kill_switch(&mut self.ebpf)
    }

    /// Stops one rule at once (every CPU sees `armed = 0` on its next run); the programs stay.
    pub fn disarm(&mut self, rule: usize) -> Result<()> {
        self.configs[rule].armed = 0;
        let config = self.configs[rule];
        write_config(&mut self.ebpf, rule as u32, &config)
    }

    /// A reader's handle on the event ring.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        take_event_ring(&mut self.ebpf)
    }
}

/// Interfaces (or anything with an ifindex) once each, in first-seen order.
fn unique<'a>(interfaces: impl Iterator<Item = &'a InterfaceScope>) -> Vec<&'a InterfaceScope> {
    let mut seen = BTreeSet::new();
    interfaces.filter(|i| seen.insert(i.ifindex)).collect()
}

/// A program to attach, with the rule (and TC interface) that says where.
type Placement<'a> = (
    &'static ProgramSpec,
    &'a RuleSpec,
    Option<&'a InterfaceScope>,
);

/// Each (program, interface) pair the TC rules need, once.
fn programs_to_attach(rules: &[RuleSpec], mechanism: Mechanism) -> Result<Vec<Placement<'_>>> {
    let mut placements: Vec<Placement<'_>> = Vec::new();
    for rule in rules {
        let programs = rule
            .spec
            .programs(mechanism)
            .ok_or(ChaosError::Unsupported {
                fault: rule.spec.name(),
                mechanism: mechanism.name(),
                reason: "chaos-bpf has no programs for this pair".into(),
            })?;
        for program in programs {
            for interface in &rule.interfaces {
                let already = placements.iter().any(|(p, _, i)| {
                    p.name == program.name && i.is_some_and(|i| i.ifindex == interface.ifindex)
                });
                if !already {
                    placements.push((program, rule, Some(interface)));
                }
            }
        }
    }
    Ok(placements)
}

/// One of the object's maps as its typed view (`Array`, `HashMap`, ...).
pub(crate) fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
    T::try_from(map).map_err(map_error(name))
}

/// Exact counts of one rule, summed over CPUs.
pub(crate) fn read_counters(ebpf: &Ebpf, rule: u32) -> Result<Counters> {
    let map = ebpf
        .map(maps::COUNTERS)
        .ok_or_else(|| missing_map(maps::COUNTERS))?;
    let per_cpu: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(map_error(maps::COUNTERS))?;
    let mut totals = [0u64; Counter::COUNT as usize];
    for counter in Counter::ALL {
        let values = per_cpu
            .get(&(rule * Counter::COUNT + counter as u32), 0)
            .map_err(map_error(maps::COUNTERS))?;
        totals[counter as usize] = values.iter().sum();
    }
    Ok(Counters::from_totals(totals))
}

/// Sets the kill switch: no rule of the object injects from the programs' next run on.
pub(crate) fn flip_kill_switch(ebpf: &mut Ebpf) -> Result<()> {
    set_control(ebpf, chaos_common::CONTROL_KILL)
}

/// Sets one of the object's control entries (`chaos_common::CONTROL_*`).
fn set_control(ebpf: &mut Ebpf, entry: u32) -> Result<()> {
    let mut control: Array<&mut MapData, u32> = typed_map(ebpf, maps::CONTROL)?;
    control.set(entry, 1, 0).map_err(map_error(maps::CONTROL))
}

/// A reader's handle on the event ring. The ring stays in the object (programs loaded later,
/// fmod_ret's among them, are relocated against every map of it); the reader holds a second
/// descriptor of the same map.
pub(crate) fn take_event_ring(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>> {
    let map = ebpf
        .map(maps::EVENTS)
        .ok_or_else(|| missing_map(maps::EVENTS))?;
    let aya::maps::Map::RingBuf(data) = map else {
        return Err(missing_map(maps::EVENTS));
    };
    let fd = std::os::fd::AsFd::as_fd(data.fd())
        .try_clone_to_owned()
        .map_err(|err| ChaosError::io("duplicating the event ring's descriptor", err))?;
    let data = MapData::from_fd(fd).map_err(map_error(maps::EVENTS))?;
    RingBuf::try_from(aya::maps::Map::RingBuf(data)).map_err(map_error(maps::EVENTS))
}

pub(crate) fn write_config(ebpf: &mut Ebpf, index: u32, config: &FaultConfig) -> Result<()> {
    let map = ebpf
        .map_mut(maps::CONFIG)
        .ok_or_else(|| missing_map(maps::CONFIG))?;
    let mut array: Array<&mut MapData, FaultConfig> =
        Array::try_from(map).map_err(map_error(maps::CONFIG))?;
    array.set(index, config, 0).map_err(map_error(maps::CONFIG))
}

/// Whether [`write_filters`] adds a rule's filter entries or takes them out again (a shared
/// object's slot is reused by the next fault).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterOp {
    Insert,
    Remove,
}

/// The rule's own filters. TC destinations are not here: the index holds them.
pub(crate) fn write_filters(
    ebpf: &mut Ebpf,
    rule: u32,
    spec: &FaultSpec,
    op: FilterOp,
) -> Result<()> {
    let filters = spec.filters();
    if let FaultSpec::FileIo(fault) = spec {
        return file_paths(ebpf, rule, &fault.inodes, op);
    }
    if let FaultSpec::Packet(fault, _) = spec {
        insert_cidrs(ebpf, rule, filter_field::SOURCE, &fault.sources, op)?;
        insert_ports(ebpf, rule, filter_field::SOURCE, &fault.source_ports, op)?;
    } else {
        insert_cidrs(ebpf, rule, filter_field::PEER, &filters.peers, op)?;
    }
    insert_ports(ebpf, rule, filter_field::PEER, &filters.ports, op)
}

/// Enters (or takes out) `rule` in the path map's list of each (device, inode): rules of several
/// faults may share a directory.
pub(crate) fn file_paths(
    ebpf: &mut Ebpf,
    rule: u32,
    inodes: &[[u64; 2]],
    op: FilterOp,
) -> Result<()> {
    let mut paths: aya::maps::HashMap<&mut MapData, [u64; 2], RuleList> =
        typed_map(ebpf, maps::FILE_PATHS)?;
    for inode in inodes {
        let mut list = paths.get(inode, 0).unwrap_or_default();
        let count = list.count as usize;
        let listed: Vec<u32> = list.rules[..count].to_vec();
        let rules: Vec<u32> = match op {
            FilterOp::Insert if listed.contains(&rule) => continue,
            FilterOp::Insert => listed.into_iter().chain([rule]).collect(),
            FilterOp::Remove => listed.into_iter().filter(|r| *r != rule).collect(),
        };
        if rules.len() > chaos_common::MAX_RULES_PER_DESTINATION {
            return Err(ChaosError::input(
                "paths",
                format!("{} io-error faults would act on one directory", rules.len()),
                format!(
                    "at most {} per directory or file",
                    chaos_common::MAX_RULES_PER_DESTINATION
                ),
            ));
        }
        if rules.is_empty() {
            let _ = paths.remove(inode);
            continue;
        }
        list.count = rules.len() as u32;
        list.rules = [0; chaos_common::MAX_RULES_PER_DESTINATION];
        list.rules[..rules.len()].copy_from_slice(&rules);
        paths
            .insert(inode, list, 0)
            .map_err(map_error(maps::FILE_PATHS))?;
    }
    Ok(())
}

fn insert_ports(
    ebpf: &mut Ebpf,
    rule: u32,
    field: u8,
    ports: &[PortRange],
    op: FilterOp,
) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let map = ebpf
        .map_mut(maps::PORTS)
        .ok_or_else(|| missing_map(maps::PORTS))?;
    let mut trie: LpmTrie<&mut MapData, chaos_common::PortKey, u8> =
        LpmTrie::try_from(map).map_err(map_error(maps::PORTS))?;
    for (first, prefix) in ports.iter().flat_map(|range| range.prefixes()) {
        let key = Key::new(
            FILTER_KEY_PREFIX_BITS + prefix,
            port_key(rule, field, first),
        );
        match op {
            FilterOp::Insert => trie.insert(&key, 1, 0).map_err(map_error(maps::PORTS))?,
            // Overlapping ranges share prefixes: one may already be gone.
            FilterOp::Remove => {
                let _ = trie.remove(&key);
            }
        }
    }
    Ok(())
}

pub(crate) fn insert_cidrs(
    ebpf: &mut Ebpf,
    rule: u32,
    field: u8,
    cidrs: &[Cidr],
    op: FilterOp,
) -> Result<()> {
    for cidr in cidrs {
        let bytes = cidr.network_bytes();
        let prefix = FILTER_KEY_PREFIX_BITS + u32::from(cidr.prefix);
        if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            let key = addr_key::<4, 9>(rule, field, v4);
            match op {
                FilterOp::Insert => insert(ebpf, maps::ADDR_V4, prefix, key, 1u8)?,
                FilterOp::Remove => remove::<_, u8>(ebpf, maps::ADDR_V4, prefix, key),
            }
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            let key = addr_key::<16, 21>(rule, field, v6);
            match op {
                FilterOp::Insert => insert(ebpf, maps::ADDR_V6, prefix, key, 1u8)?,
                FilterOp::Remove => remove::<_, u8>(ebpf, maps::ADDR_V6, prefix, key),
            }
        }
    }
    Ok(())
}

fn insert<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    prefix: u32,
    key: K,
    value: V,
) -> Result<()> {
    let map = ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
    let mut trie: LpmTrie<&mut MapData, K, V> = LpmTrie::try_from(map).map_err(map_error(name))?;
    trie.insert(&Key::new(prefix, key), value, 0)
        .map_err(map_error(name))
}

/// Takes one entry out of a trie; one already gone (a duplicate CIDR) is fine.
fn remove<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, prefix: u32, key: K) {
    if let Some(map) = ebpf.map_mut(name)
        && let Ok(mut trie) = LpmTrie::<&mut MapData, K, V>::try_from(map)
    {
        let _ = trie.remove(&Key::new(prefix, key));
    }
}

/// The TC index: each destination prefix with the rules covering it.
fn fill_index(ebpf: &mut Ebpf, destinations: &[Vec<Cidr>]) -> Result<()> {
    for entry in destination_index(destinations)? {
        let mut list = RuleList {
            count: entry.rules.len() as u32,
            ..RuleList::default()
        };
        list.rules[..entry.rules.len()].copy_from_slice(&entry.rules);
        let bytes = entry.destination.network_bytes();
        let prefix = u32::from(entry.destination.prefix);
        if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            insert(ebpf, maps::TC_INDEX_V4, prefix, v4, list)?;
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            insert(ebpf, maps::TC_INDEX_V6, prefix, v6, list)?;
        }
    }
    Ok(())
}

/// The DNS rules' names, their ports (under [`chaos_common::DNS_ANY_RULE`], which tells the
/// programs which packets to read as queries), and the flag that has them read at all. All of it
/// before any rule is armed, so an armed DNS rule never sees a question that was not read.
fn fill_dns<'a>(
    ebpf: &mut Ebpf,
    rules: impl Iterator<Item = (u32, &'a crate::faults::dns::DnsQuery, &'a [PortRange])> + Clone,
) -> Result<()> {
    let mut any = false;
    for (_, _, ports) in rules.clone() {
        any = true;
        insert_ports(
            ebpf,
            chaos_common::DNS_ANY_RULE,
            filter_field::PEER,
            ports,
            FilterOp::Insert,
        )?;
    }
    if !any {
        return Ok(());
    }
    let queries = rules.map(|(slot, query, _)| (slot, query));
    for entry in crate::faults::dns::name_entries(queries) {
        insert(
            ebpf,
            maps::DNS_NAMES,
            entry.prefix_bits,
            entry.key,
            entry.rules,
        )?;
    }
    set_control(ebpf, chaos_common::CONTROL_DNS)
}

fn fill_distributions(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf
        .map_mut(maps::DIST)
        .ok_or_else(|| missing_map(maps::DIST))?;
    let mut array: Array<&mut MapData, i32> =
        Array::try_from(map).map_err(map_error(maps::DIST))?;
    for (index, value) in distribution_tables().into_iter().enumerate() {
        array
            .set(index as u32, value, 0)
            .map_err(map_error(maps::DIST))?;
    }
    Ok(())
}
