//! One armed fault: its own copy of the kernel object, maps and links. Dropping it detaches
//! everything; so does the kernel when the process dies, because nothing is pinned.
use std::time::Instant;

use aya::{
    Btf, Ebpf,
    maps::{Array, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
};
use chaos_common::{Counter, FaultConfig, flags, maps};

use crate::{
    error::{ChaosError, Result},
    faults::FaultSpec,
    filters::port_set,
    interface::InterfaceScope,
    kernel_btf,
    mechanism::Mechanism,
    object,
    programs::{self, AttachTarget, Attachment},
    scope::CgroupScope,
    telemetry::Counters,
};

pub struct ActiveFault {
    pub id: u32,
    pub spec: FaultSpec,
    pub mechanism: Mechanism,
    pub cgroup: Option<CgroupScope>,
    pub interface: Option<InterfaceScope>,
    pub armed_at: Instant,
    /// (name, kernel id) of each attached program: what `bpftool prog show` lists while the
    /// fault runs, and what must be gone afterwards.
    pub programs: Vec<(&'static str, u32)>,
    config: FaultConfig,
    /// Declared before `ebpf` so they are dropped (detached) first.
    attachments: Vec<Attachment>,
    /// The fq root chaos-bpf installed for delay, removed after the programs are detached.
    fq: Option<crate::fq::FqRoot>,
    /// Dropped last: removes this run's record of TC state.
    _records: Option<std::cell::RefCell<crate::tc_records::Recorder>>,
    ebpf: Ebpf,
}

fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ChaosError {
    move |source| ChaosError::Map { name, source }
}

fn missing_map(name: &'static str) -> ChaosError {
    ChaosError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

impl ActiveFault {
    /// Loads the programs, fills the filter maps, arms the configuration and only then attaches,
    /// so the first packet or call the programs see is already judged by the full rule.
    pub fn arm(
        id: u32,
        spec: FaultSpec,
        mechanism: Mechanism,
        cgroup: Option<CgroupScope>,
        interface: Option<InterfaceScope>,
        events_per_sec: u32,
    ) -> Result<Self> {
        let programs = spec.programs(mechanism).ok_or(ChaosError::Unsupported {
            fault: spec.name(),
            mechanism: mechanism.name(),
            reason: "chaos-bpf has no programs for this pair".into(),
        })?;
        let mut config = spec.config(id, events_per_sec);
        // Hooks that see more than the cgroup (global hooks; TC with a cgroup) check it themselves.
        if let Some(scope) = &cgroup
            && (mechanism.is_global_hook() || interface.is_some())
        {
            config.flags |= flags::SCOPE_CGROUP;
            config.scope_cgroup_id = scope.id;
            config.scope_cgroup_level = scope.level;
        }
        let btf = if mechanism.is_global_hook() {
            // These hooks run for every task and read sockets at offsets from BTF.
            let unsupported = |reason: String| ChaosError::Unsupported {
                fault: spec.name(),
                mechanism: Mechanism::Btf.name(),
                reason,
            };
            config.sock_offsets = kernel_btf::sock_offsets().map_err(unsupported)?;
            if mechanism == Mechanism::KprobeOverride {
                config.fd_offsets = kernel_btf::fd_offsets().map_err(unsupported)?;
            }
            Some(Btf::from_sys_fs().map_err(|err| unsupported(err.to_string()))?)
        } else {
            None
        };

        // TC state can outlive a SIGKILL (clsact filters, qdiscs chaos-bpf adds): undo what dead
        // runs left, then record ours.
        let records = if let Some(interface) = &interface {
            let report = crate::tc_records::cleanup_stale()
                .map_err(|err| ChaosError::io("cleaning up stale TC state", err))?;
            if report.filters_removed + report.qdiscs_removed > 0 {
                eprintln!("chaos-bpf: removed what a killed run left: {report:?}");
            }
            let record_error = |err| ChaosError::io("recording TC state", err);
            let mut recorder = crate::tc_records::Recorder::new().map_err(record_error)?;
            recorder
                .use_interface(&interface.name)
                .map_err(record_error)?;
            Some(std::cell::RefCell::new(recorder))
        } else {
            None
        };
        let fq = match (&spec, &interface, &records) {
            (FaultSpec::Packet(fault, _), Some(interface), Some(records))
                if matches!(
                    fault.action,
                    crate::faults::tc_packet::PacketAction::Delay { .. }
                ) =>
            {
                crate::fq::ensure(interface, &records.borrow())?
            }
            _ => None,
        };
        let mut ebpf = object::load()?;
        fill_filters(&mut ebpf, &spec)?;
        config.armed = 1;
        write_config(&mut ebpf, &config)?;
        let target = AttachTarget {
            cgroup: cgroup.as_ref(),
            btf: btf.as_ref(),
            interface: interface.as_ref(),
            tc_mechanism: mechanism,
            recorder: records.as_ref(),
        };
        let mut attachments = Vec::new();
        let mut loaded = Vec::new();
        for program in programs {
            let attachment = programs::load_and_attach(&mut ebpf, program, &target)?;
            loaded.push((program.name, attachment.program_id(&ebpf, program.name)?));
            attachments.push(attachment);
        }
        Ok(Self {
            id,
            spec,
            mechanism,
            cgroup,
            interface,
            armed_at: Instant::now(),
            programs: loaded,
            config,
            attachments,
            fq,
            _records: records,
            ebpf,
        })
    }

    /// Exact counts, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map = self
            .ebpf
            .map(maps::COUNTERS)
            .ok_or_else(|| missing_map(maps::COUNTERS))?;
        let per_cpu: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_error(maps::COUNTERS))?;
        let mut totals = [0u64; Counter::COUNT as usize];
        for counter in Counter::ALL {
            let values = per_cpu
                .get(&(counter as u32), 0)
                .map_err(map_error(maps::COUNTERS))?;
            totals[counter as usize] = values.iter().sum();
        }
        Ok(Counters::from_totals(totals))
    }

    /// Hands the event ring to a reader; it can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or_else(|| missing_map(maps::EVENTS))?;
        RingBuf::try_from(map).map_err(map_error(maps::EVENTS))
    }

    /// Stops injecting at once (every CPU sees `armed = 0` on its next run), reads the final
    /// counters, then detaches and unloads everything.
    pub fn stop(mut self) -> Result<Counters> {
        self.config.armed = 0;
        let disarmed = write_config(&mut self.ebpf, &self.config);
        let counters = self.counters();
        drop(self.attachments);
        drop(self.fq);
        drop(self._records);
        drop(self.ebpf);
        disarmed?;
        counters
    }
}

fn write_config(ebpf: &mut Ebpf, config: &FaultConfig) -> Result<()> {
    let map = ebpf
        .map_mut(maps::CONFIG)
        .ok_or_else(|| missing_map(maps::CONFIG))?;
    let mut array: Array<&mut MapData, FaultConfig> =
        Array::try_from(map).map_err(map_error(maps::CONFIG))?;
    array.set(0, config, 0).map_err(map_error(maps::CONFIG))
}

fn fill_filters(ebpf: &mut Ebpf, spec: &FaultSpec) -> Result<()> {
    let filters = spec.filters();
    insert_cidrs(ebpf, &filters.peers, maps::PEER_V4, maps::PEER_V6)?;
    set_ports(ebpf, chaos_common::PORT_SET_PEER, &filters.ports)?;
    if let FaultSpec::Packet(fault, _) = spec {
        insert_cidrs(ebpf, &fault.sources, maps::SRC_V4, maps::SRC_V6)?;
        set_ports(ebpf, chaos_common::PORT_SET_SOURCE, &fault.source_ports)?;
    }
    Ok(())
}

fn set_ports(ebpf: &mut Ebpf, index: u32, ports: &[crate::filters::PortRange]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let map = ebpf
        .map_mut(maps::PORTS)
        .ok_or_else(|| missing_map(maps::PORTS))?;
    let mut array: Array<&mut MapData, chaos_common::PortSet> =
        Array::try_from(map).map_err(map_error(maps::PORTS))?;
    array
        .set(index, port_set(ports), 0)
        .map_err(map_error(maps::PORTS))
}

fn insert_cidrs(
    ebpf: &mut Ebpf,
    cidrs: &[crate::filters::Cidr],
    v4_name: &'static str,
    v6_name: &'static str,
) -> Result<()> {
    for cidr in cidrs {
        let bytes = cidr.network_bytes();
        let prefix = u32::from(cidr.prefix);
        if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            let map = ebpf.map_mut(v4_name).ok_or_else(|| missing_map(v4_name))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 4], u8> =
                LpmTrie::try_from(map).map_err(map_error(v4_name))?;
            trie.insert(&Key::new(prefix, v4), 1, 0)
                .map_err(map_error(v4_name))?;
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            let map = ebpf.map_mut(v6_name).ok_or_else(|| missing_map(v6_name))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
                LpmTrie::try_from(map).map_err(map_error(v6_name))?;
            trie.insert(&Key::new(prefix, v6), 1, 0)
                .map_err(map_error(v6_name))?;
        }
    }
    Ok(())
}
