//! Which rules a shared object's programs see for each (cgroup, hook): the userspace half of
//! [`chaos_common::maps::SCOPES`]. Pure bookkeeping, so it is tested without a kernel.
//!
//! The kernel looks a task's cgroup ancestors up deepest first and stops at the first hit, so
//! the entry of a cgroup lists its own rules and those of every scoped ancestor. The cgroup
//! programs are attached only where no scoped ancestor already has them: a program attached to a
//! cgroup and to its parent would run twice for the child's sockets.
//!
//! Every change is proportional to what it touches: a cgroup's list is built from its own
//! ancestors (found by path), an arm or a stop marks only the keys of that cgroup and of the
//! scoped cgroups below it, and the object writes just those. Arming the 1,000th fault costs
//! what the 10th did.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use chaos_common::{MAX_RULES_PER_DESTINATION, ScopeKey};

/// A scoped cgroup as the table needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedCgroup {
    pub id: u64,
    pub level: u32,
    pub path: PathBuf,
}

impl From<&crate::scope::CgroupScope> for ScopedCgroup {
    fn from(cgroup: &crate::scope::CgroupScope) -> Self {
        Self {
            id: cgroup.id,
            level: cgroup.level,
            path: cgroup.path.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    cgroup: ScopedCgroup,
    /// (arming order, slot) of the rules scoped to exactly this cgroup.
    rules: Vec<(u64, u32)>,
}

/// A key whose kernel state changed since the object last synced: its list (`None`: the key
/// goes), and whether its cgroup is now where the hook's program must be linked.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub key: ScopeKey,
    pub list: Option<Vec<u32>>,
    pub attach_point: bool,
}

#[derive(Debug, Default)]
pub struct ScopeTable {
    entries: BTreeMap<ScopeKey, Entry>,
    /// Scoped cgroups by path (id, level): a cgroup's ancestors are looked up by their paths,
    /// and its descendants follow it in this order.
    by_path: BTreeMap<PathBuf, (u64, u32)>,
    /// The keys each slot is in.
    slot_keys: HashMap<u32, Vec<ScopeKey>>,
    next_order: u64,
    /// Keys the kernel has not seen the latest of.
    dirty: BTreeSet<ScopeKey>,
}

/// A cgroup would be covered by more rules for one hook than a kernel list holds.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyRules {
    pub cgroup: PathBuf,
    pub rules: usize,
}

pub fn key(cgroup_id: u64, hook: u32) -> ScopeKey {
    ScopeKey {
        cgroup_id,
        hook,
        _pad: 0,
    }
}

impl ScopeTable {
    /// Adds `slot` for `hooks` of `cgroup`; refused (and nothing changed) if some cgroup would
    /// then have more rules than the kernel's list holds.
    pub fn add(
        &mut self,
        cgroup: &ScopedCgroup,
        hooks: &[u32],
        slot: u32,
    ) -> Result<(), TooManyRules> {
        let order = self.next_order;
        self.next_order += 1;
        for hook in hooks {
            let key = key(cgroup.id, *hook);
            self.entries
                .entry(key)
                .or_insert_with(|| Entry {
                    cgroup: cgroup.clone(),
                    rules: Vec::new(),
                })
                .rules
                .push((order, slot));
            self.slot_keys.entry(slot).or_default().push(key);
        }
        self.by_path
            .insert(cgroup.path.clone(), (cgroup.id, cgroup.level));
        let touched: Vec<ScopeKey> = hooks
            .iter()
            .flat_map(|hook| self.within(&cgroup.path, *hook))
            .collect();
        self.dirty.extend(touched.iter().copied());
        for key in &touched {
            let rules = self.list_of(key).map_or(0, |list| list.len());
            if rules > MAX_RULES_PER_DESTINATION {
                let cgroup = self.path_of(key);
                self.remove(slot);
                return Err(TooManyRules { cgroup, rules });
            }
        }
        Ok(())
    }

    /// Removes `slot` wherever it is; entries left without rules go.
    pub fn remove(&mut self, slot: u32) {
        let Some(keys) = self.slot_keys.remove(&slot) else {
            return;
        };
        for key in keys {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.rules.retain(|(_, s)| *s != slot);
            let (path, empty) = (entry.cgroup.path.clone(), entry.rules.is_empty());
            let touched = self.within(&path, key.hook);
            self.dirty.extend(touched);
            self.dirty.insert(key);
            if empty {
                self.entries.remove(&key);
                if !self.has_entries(key.cgroup_id) {
                    self.by_path.remove(&path);
                }
            }
        }
    }

    /// The keys of `hook` at `path` and below it.
    fn within(&self, path: &Path, hook: u32) -> Vec<ScopeKey> {
        self.by_path
            .range(path.to_path_buf()..)
            .take_while(|(below, _)| below.starts_with(path))
            .map(|(_, (id, _))| key(*id, hook))
            .filter(|key| self.entries.contains_key(key))
            .collect()
    }

    fn has_entries(&self, cgroup_id: u64) -> bool {
        self.entries
            .range(key(cgroup_id, 0)..=key(cgroup_id, u32::MAX))
            .next()
            .is_some()
    }

    /// The entries of `hook` at the cgroups `path` is within: itself and its scoped ancestors.
    fn covering<'a>(&'a self, path: &'a Path, hook: u32) -> impl Iterator<Item = &'a Entry> + 'a {
        path.ancestors()
            .filter_map(move |dir| self.by_path.get(dir))
            .filter_map(move |(id, _)| self.entries.get(&key(*id, hook)))
    }

    /// What the kernel map holds for `key`: its rules and its scoped ancestors', in arming order.
    fn list_of(&self, key: &ScopeKey) -> Option<Vec<u32>> {
        let entry = self.entries.get(key)?;
        let mut rules: Vec<(u64, u32)> = self
            .covering(&entry.cgroup.path, key.hook)
            .flat_map(|e| e.rules.iter().copied())
            .collect();
        rules.sort_unstable();
        Some(rules.into_iter().map(|(_, slot)| slot).collect())
    }

    /// A scoped cgroup with no scoped ancestor for the same hook: its program must be linked
    /// there (a program linked to a cgroup and its parent would run twice for the child).
    fn is_attach_point(&self, key: &ScopeKey) -> bool {
        self.entries.get(key).is_some_and(|entry| {
            self.covering(&entry.cgroup.path, key.hook)
                .all(|e| e.cgroup.id == entry.cgroup.id)
        })
    }

    fn path_of(&self, key: &ScopeKey) -> PathBuf {
        self.entries
            .get(key)
            .map(|e| e.cgroup.path.clone())
            .unwrap_or_default()
    }

    /// What changed since [`ScopeTable::synced`]: only the keys an add or a remove touched.
    pub fn changes(&self) -> Vec<Change> {
        self.dirty
            .iter()
            .map(|key| Change {
                key: *key,
                list: self.list_of(key),
                attach_point: self.is_attach_point(key),
            })
            .collect()
    }

    /// The kernel holds every change now.
    pub fn synced(&mut self) {
        self.dirty.clear();
    }

    /// Every key's list, as the kernel map must hold them (for tests and checks).
    pub fn lists(&self) -> BTreeMap<ScopeKey, Vec<u32>> {
        self.entries
            .keys()
            .filter_map(|key| Some((*key, self.list_of(key)?)))
            .collect()
    }

    /// Bit L set for each level some entry's cgroup sits at.
    pub fn levels(&self) -> u32 {
        self.by_path
            .values()
            .filter(|(_, level)| *level < chaos_common::MAX_CGROUP_LEVELS)
            .fold(0, |bits, (_, level)| bits | 1 << level)
    }

    /// The cgroups a cgroup program for `hook` must be attached to: the scoped ones with no
    /// scoped ancestor for the same hook.
    pub fn attach_points(&self, hook: u32) -> Vec<ScopedCgroup> {
        self.entries
            .iter()
            .filter(|(key, _)| key.hook == hook && self.is_attach_point(key))
            .map(|(_, entry)| entry.cgroup.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use chaos_common::scope_hook::{CONNECT, RECV};

    use super::*;

    fn cgroup(id: u64, path: &str) -> ScopedCgroup {
        ScopedCgroup {
            id,
            level: path.matches('/').count() as u32,
            path: path.into(),
        }
    }

    #[test]
    fn a_cgroup_lists_its_own_rules_and_its_ancestors_in_arming_order() {
        let mut table = ScopeTable::default();
        let pod = cgroup(10, "/pod");
        let container = cgroup(11, "/pod/ctr");
        let sibling = cgroup(12, "/pod2");
        table.add(&container, &[CONNECT], 0).unwrap();
        table.add(&pod, &[CONNECT], 1).unwrap();
        table.add(&sibling, &[CONNECT, RECV], 2).unwrap();
        let lists = table.lists();
        assert_eq!(lists[&key(11, CONNECT)], vec![0, 1]);
        assert_eq!(lists[&key(10, CONNECT)], vec![1]);
        // "/pod2" is not below "/pod".
        assert_eq!(lists[&key(12, CONNECT)], vec![2]);
        assert_eq!(lists[&key(12, RECV)], vec![2]);
        assert_eq!(table.levels(), 1 << 1 | 1 << 2);
        let mut points: Vec<u64> = table.attach_points(CONNECT).iter().map(|c| c.id).collect();
        points.sort_unstable();
        assert_eq!(
            points,
            vec![10, 12],
            "the container is covered by its pod's attachment"
        );

        table.remove(1);
        assert_eq!(table.lists()[&key(11, CONNECT)], vec![0]);
        assert!(!table.lists().contains_key(&key(10, CONNECT)));
        let mut points: Vec<u64> = table.attach_points(CONNECT).iter().map(|c| c.id).collect();
        points.sort_unstable();
        assert_eq!(points, vec![11, 12]);
        table.remove(0);
        table.remove(2);
        assert!(table.is_empty());
        assert_eq!(table.levels(), 0);
    }

    #[test]
    fn more_rules_than_a_kernel_list_holds_are_refused_and_change_nothing() {
        let mut table = ScopeTable::default();
        let parent = cgroup(1, "/a");
        let child = cgroup(2, "/a/b");
        for slot in 0..MAX_RULES_PER_DESTINATION as u32 {
            table.add(&parent, &[CONNECT], slot).unwrap();
        }
        let before = table.lists();
        let refused = table.add(&child, &[CONNECT], 99).unwrap_err();
        assert_eq!(refused.cgroup, PathBuf::from("/a/b"));
        assert_eq!(refused.rules, MAX_RULES_PER_DESTINATION + 1);
        assert_eq!(table.lists(), before);
    }

    /// The changes an arm or a stop reports, applied one after another to a model of the
    /// kernel's map and links, always give what a full recomputation gives; and each touches
    /// only its cgroup's subtree, not the whole table.
    #[test]
    fn incremental_changes_add_up_to_the_full_state_and_stay_local() {
        let tree = [
            cgroup(1, "/kubepods"),
            cgroup(2, "/kubepods/pod-a"),
            cgroup(3, "/kubepods/pod-a/c1"),
            cgroup(4, "/kubepods/pod-a/c2"),
            cgroup(5, "/kubepods/pod-b"),
            cgroup(6, "/kubepods/pod-b/c1"),
            cgroup(7, "/system"),
        ];
        let mut table = ScopeTable::default();
        let mut map: BTreeMap<ScopeKey, Vec<u32>> = BTreeMap::new();
        let mut links: std::collections::BTreeSet<ScopeKey> = Default::default();
        let mut armed: Vec<u32> = Vec::new();
        // A fixed pseudo-random walk of arms and stops (xorshift).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for slot in 0..400u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(3) && !armed.is_empty() {
                let gone = armed.remove((state as usize / 3) % armed.len());
                table.remove(gone);
            } else {
                let target = &tree[(state % tree.len() as u64) as usize];
                let hooks: &[u32] = if state.is_multiple_of(2) {
                    &[CONNECT]
                } else {
                    &[CONNECT, RECV]
                };
                if table.add(target, hooks, slot).is_ok() {
                    armed.push(slot);
                }
            }
            let changes = table.changes();
            assert!(changes.len() <= 2 * tree.len(), "{} keys", changes.len());
            for change in changes {
                match change.list {
                    Some(list) => map.insert(change.key, list),
                    None => map.remove(&change.key),
                };
                if change.attach_point {
                    links.insert(change.key);
                } else {
                    links.remove(&change.key);
                }
            }
            table.synced();
            assert_eq!(map, table.lists(), "after slot {slot}");
            let wanted: std::collections::BTreeSet<ScopeKey> = [CONNECT, RECV]
                .iter()
                .flat_map(|hook| {
                    table
                        .attach_points(*hook)
                        .into_iter()
                        .map(move |c| key(c.id, *hook))
                })
                .collect();
            assert_eq!(links, wanted, "after slot {slot}");
        }
        // A leaf's arm touches its own keys only.
        let mut table = ScopeTable::default();
        for (slot, cgroup) in tree.iter().enumerate() {
            table.add(cgroup, &[CONNECT], slot as u32).unwrap();
        }
        table.synced();
        table.add(&tree[3], &[CONNECT], 99).unwrap();
        assert_eq!(table.changes().len(), 1);
    }
}
