//! One loaded object serving every fault of a mechanism (all but TC): its programs are loaded
//! and verified once, and a fault is a rule in a free slot, found by the programs through the
//! cgroup → rules map ([`chaos_common::maps::SCOPES`]). Arming writes the rule's filters, its
//! configuration and the scope entries; it loads nothing. A global hook (fmod_ret, LSM, kprobe)
//! is attached the first time a fault needs it; a cgroup program is linked to each scoped cgroup
//! that no scoped ancestor already covers. Dropping the object detaches everything, and so does
//! the kernel when the process dies: nothing is pinned.
use std::collections::{BTreeMap, VecDeque};

use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
};
use chaos_common::{Counter, EventBudget, FaultConfig, LossState, RuleList, ScopeKey, maps};

use crate::{
    engine::instance::{
        FilterOp, RuleSpec, file_paths, flip_kill_switch, insert_cidrs, map_error, monotonic_ns,
        read_counters, take_event_ring, typed_map, write_config, write_filters,
    },
    error::{ChaosError, Result},
    faults::FaultSpec,
    kernel::kernel_btf,
    kernel::mechanism::Mechanism,
    kernel::object,
    kernel::programs::{self, AttachTarget, Attachment, Hook, ProgramSpec},
    kernel::scope_table::{ScopeTable, ScopedCgroup},
    wire::Counters,
};

pub type Slot = u32;

pub struct SharedObject {
    pub mechanism: Mechanism,
    slots: Vec<Option<RuleSpec>>,
    /// Free slots, oldest-freed first, so a slot is reused as late as possible (a program still
    /// running on another CPU when its rule was removed cannot count into the next fault).
    free: VecDeque<Slot>,
    configs: Vec<FaultConfig>,
    table: ScopeTable,
    /// (name, kernel id) of each program loaded so far.
    programs: Vec<(&'static str, u32)>,
    /// Global hooks, attached once each (declared before `ebpf`: dropped, detached, first).
    hooks: Vec<(&'static str, Attachment)>,
    /// cgroup links by (program, cgroup id).
    links: BTreeMap<(&'static str, u64), Attachment>,
    btf: Option<&'static Btf>,
    ebpf: Ebpf,
}

impl SharedObject {
    /// Loads the object with room for `capacity` rules. Programs are loaded with their first
    /// fault.
    pub fn load(mechanism: Mechanism, capacity: u32) -> Result<Self> {
        // The object a probe has just verified a program in, where there is one.
        let ebpf = match crate::kernel::probe::take_verified_object(mechanism, capacity) {
            Some(verified) => verified,
            None => object::load_for_rules(capacity)?,
        };
        let btf = if mechanism.is_global_hook() {
            let unsupported = |reason: String| ChaosError::Unsupported {
                fault: "syscall fault",
                mechanism: Mechanism::Btf.name(),
                reason,
            };
            Some(&kernel_btf::kernel().map_err(unsupported)?.aya)
        } else {
            None
        };
        Ok(Self {
            mechanism,
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).collect(),
            configs: vec![FaultConfig::default(); capacity as usize],
            table: ScopeTable::default(),
            programs: Vec::new(),
            hooks: Vec::new(),
            links: BTreeMap::new(),
            btf,
            ebpf,
        })
    }

    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Rules armed now.
    pub fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    pub fn rule(&self, slot: Slot) -> Option<&RuleSpec> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// A reader's handle on the event ring.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        take_event_ring(&mut self.ebpf)
    }

    /// (name, id) of the programs that realise a rule.
    pub fn programs_of(&self, slot: Slot) -> Vec<(&'static str, u32)> {
        let Some(rule) = self.rule(slot) else {
            return Vec::new();
        };
        let names: Vec<&str> = self.specs_of(rule).iter().map(|p| p.name).collect();
        self.programs
            .iter()
            .filter(|(name, _)| names.contains(name))
            .copied()
            .collect()
    }

    fn specs_of(&self, rule: &RuleSpec) -> &'static [&'static ProgramSpec] {
        rule.spec.programs(self.mechanism).unwrap_or(&[])
    }

    /// Arms one fault in a free slot: filters, configuration (with the kernel's deadline), scope
    /// entries, then the attachments it still lacks. On an error nothing of it stays.
    pub fn add(&mut self, mut rule: RuleSpec) -> Result<Slot> {
        if rule.cgroups.is_empty() {
            return Err(ChaosError::input(
                "scope.cgroup",
                format!(
                    "{} via {} needs a cgroup",
                    rule.spec.name(),
                    self.mechanism.id()
                ),
                "a cgroup v2 directory",
            ));
        }
        let programs = rule
            .spec
            .programs(self.mechanism)
            .ok_or(ChaosError::Unsupported {
                fault: rule.spec.name(),
                mechanism: self.mechanism.name(),
                reason: "chaos-bpf has no programs for this pair".into(),
            })?;
        // io-error's paths, found in each scoped cgroup's own filesystem.
        if let FaultSpec::FileIo(fault) = &mut rule.spec {
            fault.resolve(&rule.cgroups)?;
        }
        let slot = self.free.pop_front().ok_or(ChaosError::Capacity {
            limit: self.slots.len(),
        })?;
        let mut hooks: Vec<u32> = programs.iter().map(|p| p.scope_hook).collect();
        hooks.dedup();
        let mut config = rule.spec.config(rule.fault_id, rule.events_per_sec);
        if self.mechanism.is_global_hook() {
            let unsupported = |reason: String| ChaosError::Unsupported {
                fault: rule.spec.name(),
                mechanism: Mechanism::Btf.name(),
                reason,
            };
            config.sock_offsets = kernel_btf::sock_offsets().map_err(unsupported)?;
            if matches!(rule.spec, FaultSpec::FileIo(_)) {
                config.file_offsets = kernel_btf::file_offsets().map_err(unsupported)?;
            }
            if self.mechanism == Mechanism::KprobeOverride {
                config.fd_offsets = kernel_btf::fd_offsets().map_err(unsupported)?;
            }
        }
        self.slots[slot as usize] = Some(rule);
        let armed = self.arm_slot(slot, config, &hooks);
        if let Err(err) = armed {
            let _ = self.remove(slot);
            return Err(err);
        }
        Ok(slot)
    }

    fn arm_slot(&mut self, slot: Slot, mut config: FaultConfig, hooks: &[u32]) -> Result<()> {
        self.reset_state(slot)?;
        let Some(rule) = self.rule(slot) else {
            return Ok(());
        };
        let (spec, lifetime) = (rule.spec.clone(), rule.lifetime);
        let cgroups: Vec<ScopedCgroup> = rule.cgroups.iter().map(ScopedCgroup::from).collect();
        write_filters(&mut self.ebpf, slot, &spec, FilterOp::Insert)?;
        config.armed = 1;
        config.expires_ns = monotonic_ns()?.saturating_add(lifetime.as_nanos() as u64);
        self.configs[slot as usize] = config;
        write_config(&mut self.ebpf, slot, &config)?;
        self.scope_slot(slot, &cgroups, hooks)?;
        self.sync_scopes()?;
        self.sync_attachments(slot)
    }

    /// Enters `slot` in the scope table for each cgroup; on a refusal none of them stays.
    fn scope_slot(&mut self, slot: Slot, cgroups: &[ScopedCgroup], hooks: &[u32]) -> Result<()> {
        for cgroup in cgroups {
            if let Err(too_many) = self.table.add(cgroup, hooks, slot) {
                self.table.remove(slot);
                return Err(ChaosError::input(
                    "scope.cgroup",
                    format!(
                        "{} faults would act on {} for one operation (its ancestors' included)",
                        too_many.rules,
                        too_many.cgroup.display()
                    ),
                    format!(
                        "at most {} faults per cgroup and operation",
                        chaos_common::MAX_RULES_PER_DESTINATION
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Moves an armed rule to another set of cgroups (a container of its pod restarted): the
    /// kernel sees the new scope entries and links before the old ones go, so a cgroup in both
    /// sets is never unjudged. On an error the rule keeps its old cgroups.
    pub fn retarget(&mut self, slot: Slot, cgroups: Vec<crate::scope::CgroupScope>) -> Result<()> {
        let Some(rule) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
            return Ok(());
        };
        let mut hooks: Vec<u32> = self.specs_of(rule).iter().map(|p| p.scope_hook).collect();
        hooks.dedup();
        let scoped: Vec<ScopedCgroup> = cgroups.iter().map(ScopedCgroup::from).collect();
        let previous: Vec<ScopedCgroup> = rule.cgroups.iter().map(ScopedCgroup::from).collect();
        self.table.remove(slot);
        if let Err(err) = self.scope_slot(slot, &scoped, &hooks) {
            self.scope_slot(slot, &previous, &hooks)?;
            return Err(err);
        }
        self.move_file_paths(slot, &cgroups)?;
        if let Some(rule) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            rule.cgroups = cgroups;
        }
        self.sync_scopes()?;
        self.sync_cgroup_links()
    }

    /// io-error's paths in the new cgroups' filesystems (a restarted container has a new root):
    /// the new (device, inode) entries go in before the gone ones come out. Paths the new
    /// containers lack keep the old entries, which then match nothing of theirs.
    fn move_file_paths(&mut self, slot: Slot, cgroups: &[crate::scope::CgroupScope]) -> Result<()> {
        let Some(FaultSpec::FileIo(fault)) = self.rule(slot).map(|r| &r.spec) else {
            return Ok(());
        };
        let mut moved = fault.clone();
        if moved.resolve(cgroups).is_err() {
            return Ok(());
        }
        let old = fault.inodes.clone();
        let added: Vec<[u64; 2]> = moved
            .inodes
            .iter()
            .filter(|i| !old.contains(i))
            .copied()
            .collect();
        let gone: Vec<[u64; 2]> = old
            .iter()
            .filter(|i| !moved.inodes.contains(i))
            .copied()
            .collect();
        file_paths(&mut self.ebpf, slot, &added, FilterOp::Insert)?;
        file_paths(&mut self.ebpf, slot, &gone, FilterOp::Remove)?;
        if let Some(rule) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            rule.spec = FaultSpec::FileIo(moved);
        }
        Ok(())
    }

    /// Gives an armed rule another set of peers (the pods of its peer selector changed): the
    /// new addresses enter its filter before the gone ones leave, so a peer in both sets is
    /// never let through. On an error the rule keeps the entries it had.
    pub fn set_peers(&mut self, slot: Slot, peers: Vec<crate::filters::Cidr>) -> Result<()> {
        let Some(rule) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        let old = rule.spec.filters().peers.clone();
        let added: Vec<_> = peers.iter().filter(|c| !old.contains(c)).copied().collect();
        let gone: Vec<_> = old.iter().filter(|c| !peers.contains(c)).copied().collect();
        let field = chaos_common::filter_field::PEER;
        if let Err(err) = insert_cidrs(&mut self.ebpf, slot, field, &added, FilterOp::Insert) {
            let _ = insert_cidrs(&mut self.ebpf, slot, field, &added, FilterOp::Remove);
            return Err(err);
        }
        insert_cidrs(&mut self.ebpf, slot, field, &gone, FilterOp::Remove)?;
        rule.spec.set_peers(peers);
        Ok(())
    }

    /// Stops one rule at once (its configuration first, so every CPU skips it from its next
    /// run), then takes it out of the scope map and its filters out of the tries. Its counters
    /// stay readable until the slot is reused. Attachments no rule needs any more go.
    pub fn remove(&mut self, slot: Slot) -> Result<()> {
        let Some(rule) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return Ok(());
        };
        self.configs[slot as usize].armed = 0;
        let config = self.configs[slot as usize];
        let disarmed = write_config(&mut self.ebpf, slot, &config);
        self.table.remove(slot);
        let synced = self.sync_scopes();
        let relinked = self.sync_cgroup_links();
        let _ = write_filters(&mut self.ebpf, slot, &rule.spec, FilterOp::Remove);
        let _ = self.free_seats(slot);
        self.free.push_back(slot);
        disarmed.and(synced).and(relinked)
    }

    /// The kill switch: no rule of the object injects from the programs' next run on.
    pub fn kill(&mut self) -> Result<()> {
        flip_kill_switch(&mut self.ebpf)
    }

    pub fn counters(&self, slot: Slot) -> Result<Counters> {
        read_counters(&self.ebpf, slot)
    }

    /// Counters, loss state and event budget of a reused slot start from zero.
    fn reset_state(&mut self, slot: Slot) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, err)| ChaosError::io("counting the possible CPUs", err))?;
        let mut counters: PerCpuArray<&mut MapData, u64> =
            typed_map(&mut self.ebpf, maps::COUNTERS)?;
        for counter in 0..Counter::COUNT {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus])
                .map_err(|err| ChaosError::io("zeroing counters", err))?;
            counters
                .set(slot * Counter::COUNT + counter, zeros, 0)
                .map_err(map_error(maps::COUNTERS))?;
        }
        let mut budget: PerCpuArray<&mut MapData, EventBudget> =
            typed_map(&mut self.ebpf, maps::EVENT_BUDGET)?;
        let fresh = PerCpuValues::try_from(vec![EventBudget::default(); cpus])
            .map_err(|err| ChaosError::io("zeroing the event budget", err))?;
        budget
            .set(slot, fresh, 0)
            .map_err(map_error(maps::EVENT_BUDGET))?;
        let mut state: Array<&mut MapData, u64> = typed_map(&mut self.ebpf, maps::LOSS_STATE)?;
        for index in 0..LossState::COUNT {
            state
                .set(slot * LossState::COUNT + index, 0, 0)
                .map_err(map_error(maps::LOSS_STATE))?;
        }
        self.free_seats(slot)
    }

    /// Empties a connection-limit rule's seats: its sockets stay open, but no longer count,
    /// and a fault reusing the slot starts with every seat free. A socket released meanwhile
    /// finds its entry gone, or its seat someone else's, and leaves both alone.
    fn free_seats(&mut self, slot: Slot) -> Result<()> {
        let mut held: HashMap<&mut MapData, u64, [u32; 2]> =
            typed_map(&mut self.ebpf, maps::CONN_HELD)?;
        let ours: Vec<(u64, [u32; 2])> = held
            .iter()
            .filter_map(std::result::Result::ok)
            .filter(|(_, seat)| seat[0] == slot)
            .collect();
        for (cookie, _) in &ours {
            let _ = held.remove(cookie);
        }
        let mut seats: HashMap<&mut MapData, [u32; 2], u64> =
            typed_map(&mut self.ebpf, maps::CONN_SEATS)?;
        for (_, seat) in &ours {
            let _ = seats.remove(seat);
        }
        Ok(())
    }

    /// Writes what the table changed to the kernel's scope map and level mask: new and changed
    /// lists first, then the level mask, then stale keys out. Only the keys an arm or a stop
    /// touched are written.
    fn sync_scopes(&mut self) -> Result<()> {
        let changes = self.table.changes();
        if changes.is_empty() {
            return Ok(());
        }
        let mut scopes: HashMap<&mut MapData, ScopeKey, RuleList> =
            typed_map(&mut self.ebpf, maps::SCOPES)?;
        for change in &changes {
            let Some(rules) = &change.list else {
                continue;
            };
            let mut list = RuleList {
                count: rules.len() as u32,
                ..RuleList::default()
            };
            list.rules[..rules.len()].copy_from_slice(rules);
            scopes
                .insert(change.key, list, 0)
                .map_err(map_error(maps::SCOPES))?;
        }
        let mut levels: Array<&mut MapData, u32> = typed_map(&mut self.ebpf, maps::SCOPE_LEVELS)?;
        levels
            .set(0, self.table.levels(), 0)
            .map_err(map_error(maps::SCOPE_LEVELS))?;
        let mut scopes: HashMap<&mut MapData, ScopeKey, RuleList> =
            typed_map(&mut self.ebpf, maps::SCOPES)?;
        for change in changes.iter().filter(|c| c.list.is_none()) {
            let _ = scopes.remove(&change.key);
        }
        Ok(())
    }

    /// Attaches what the rule in `slot` needs and the object lacks.
    fn sync_attachments(&mut self, slot: Slot) -> Result<()> {
        let Some(rule) = self.rule(slot) else {
            return Ok(());
        };
        let specs = self.specs_of(rule);
        for spec in specs {
            if matches!(spec.hook, Hook::Cgroup(_))
                || self.hooks.iter().any(|(n, _)| *n == spec.name)
            {
                continue;
            }
            let target = AttachTarget {
                cgroup: None,
                btf: self.btf,
                interface: None,
                tc_mechanism: self.mechanism,
                recorder: None,
            };
            let attachment = programs::load_and_attach(&mut self.ebpf, spec, &target)?;
            self.note_program(spec.name, &attachment)?;
            self.hooks.push((spec.name, attachment));
        }
        self.sync_cgroup_links()
    }

    fn note_program(&mut self, name: &'static str, attachment: &Attachment) -> Result<()> {
        if !self.programs.iter().any(|(n, _)| *n == name) {
            let id = attachment.program_id(&self.ebpf, name)?;
            self.programs.push((name, id));
        }
        Ok(())
    }

    /// Links each cgroup program to the cgroups the table names for its hook, for the keys an
    /// arm or a stop touched: new links first, so a cgroup whose ancestor's link is about to go
    /// is never left unjudged, then stale ones out. The table is synced after.
    fn sync_cgroup_links(&mut self) -> Result<()> {
        let changes = self.table.changes();
        let cgroup_programs: Vec<&'static ProgramSpec> = programs::REGISTRY
            .iter()
            .copied()
            .filter(|p| p.mechanism == self.mechanism && matches!(p.hook, Hook::Cgroup(_)))
            .collect();
        for change in changes.iter().filter(|c| c.attach_point) {
            let cgroup_id = change.key.cgroup_id;
            for spec in cgroup_programs
                .iter()
                .filter(|p| p.scope_hook == change.key.hook)
            {
                if self.links.contains_key(&(spec.name, cgroup_id)) {
                    continue;
                }
                let Some(scope) = self
                    .slots
                    .iter()
                    .flatten()
                    .flat_map(|r| &r.cgroups)
                    .find(|c| c.id == cgroup_id)
                else {
                    continue;
                };
                let target = AttachTarget {
                    cgroup: Some(scope),
                    btf: None,
                    interface: None,
                    tc_mechanism: self.mechanism,
                    recorder: None,
                };
                let attachment = programs::load_and_attach(&mut self.ebpf, spec, &target)?;
                self.note_program(spec.name, &attachment)?;
                self.links.insert((spec.name, cgroup_id), attachment);
            }
        }
        for change in changes.iter().filter(|c| !c.attach_point) {
            for spec in cgroup_programs
                .iter()
                .filter(|p| p.scope_hook == change.key.hook)
            {
                self.links.remove(&(spec.name, change.key.cgroup_id));
            }
        }
        self.table.synced();
        Ok(())
    }
}
