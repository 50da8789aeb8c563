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
    pub scope: CgroupScope,
    pub armed_at: Instant,
    config: FaultConfig,
    /// Declared before `ebpf` so they are dropped (detached) first.
    attachments: Vec<Attachment>,
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
        scope: CgroupScope,
        events_per_sec: u32,
    ) -> Result<Self> {
        let programs = spec.programs(mechanism).ok_or(ChaosError::Unsupported {
            fault: spec.name(),
            mechanism: mechanism.name(),
            reason: "chaos-bpf has no programs for this pair".into(),
        })?;
        let mut config = spec.config(id, events_per_sec);
        let btf = if mechanism.is_global_hook() {
            // These hooks run for every task: the programs check the scope and read sockets.
            config.flags |= flags::SCOPE_CGROUP;
            config.scope_cgroup_id = scope.id;
            config.scope_cgroup_level = scope.level;
            config.sock_offsets =
                kernel_btf::sock_offsets().map_err(|reason| ChaosError::Unsupported {
                    fault: spec.name(),
                    mechanism: Mechanism::Btf.name(),
                    reason,
                })?;
            Some(Btf::from_sys_fs().map_err(|err| ChaosError::Unsupported {
                fault: spec.name(),
                mechanism: Mechanism::Btf.name(),
                reason: err.to_string(),
            })?)
        } else {
            None
        };

        let mut ebpf = object::load()?;
        fill_filters(&mut ebpf, &spec)?;
        config.armed = 1;
        write_config(&mut ebpf, &config)?;
        let target = AttachTarget {
            cgroup: Some(&scope),
            btf: btf.as_ref(),
        };
        let mut attachments = Vec::new();
        for program in programs {
            attachments.push(programs::load_and_attach(&mut ebpf, program, &target)?);
        }
        Ok(Self {
            id,
            spec,
            mechanism,
            scope,
            armed_at: Instant::now(),
            config,
            attachments,
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
    for cidr in &filters.peers {
        let bytes = cidr.network_bytes();
        if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            let map = ebpf
                .map_mut(maps::PEER_V4)
                .ok_or_else(|| missing_map(maps::PEER_V4))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 4], u8> =
                LpmTrie::try_from(map).map_err(map_error(maps::PEER_V4))?;
            trie.insert(&Key::new(u32::from(cidr.prefix), v4), 1, 0)
                .map_err(map_error(maps::PEER_V4))?;
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            let map = ebpf
                .map_mut(maps::PEER_V6)
                .ok_or_else(|| missing_map(maps::PEER_V6))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
                LpmTrie::try_from(map).map_err(map_error(maps::PEER_V6))?;
            trie.insert(&Key::new(u32::from(cidr.prefix), v6), 1, 0)
                .map_err(map_error(maps::PEER_V6))?;
        }
    }
    if !filters.ports.is_empty() {
        let map = ebpf
            .map_mut(maps::PORTS)
            .ok_or_else(|| missing_map(maps::PORTS))?;
        let mut array: Array<&mut MapData, chaos_common::PortSet> =
            Array::try_from(map).map_err(map_error(maps::PORTS))?;
        array
            .set(0, port_set(&filters.ports), 0)
            .map_err(map_error(maps::PORTS))?;
    }
    Ok(())
}
