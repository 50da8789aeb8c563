//! Which rules a shared object's programs see for each (cgroup, hook): the userspace half of
//! [`chaos_common::maps::SCOPES`]. Pure bookkeeping, so it is tested without a kernel.
//!
//! The kernel looks a task's cgroup ancestors up deepest first and stops at the first hit, so
//! the entry of a cgroup lists its own rules and those of every scoped ancestor. The cgroup
//! programs are attached only where no scoped ancestor already has them: a program attached to a
//! cgroup and to its parent would run twice for the child's sockets.
use std::{
    collections::BTreeMap,
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

#[derive(Debug, Default)]
struct Entry {
    cgroup: Option<ScopedCgroup>,
    /// (arming order, slot) of the rules scoped to exactly this cgroup.
    rules: Vec<(u64, u32)>,
}

#[derive(Debug, Default)]
pub struct ScopeTable {
    entries: BTreeMap<ScopeKey, Entry>,
    next_order: u64,
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
            let entry = self.entries.entry(key(cgroup.id, *hook)).or_default();
            entry.cgroup = Some(cgroup.clone());
            entry.rules.push((order, slot));
        }
        if let Err(too_many) = self.check() {
            self.remove(slot);
            return Err(too_many);
        }
        Ok(())
    }

    /// Removes `slot` wherever it is; entries left without rules go.
    pub fn remove(&mut self, slot: u32) {
        for entry in self.entries.values_mut() {
            entry.rules.retain(|(_, s)| *s != slot);
        }
        self.entries.retain(|_, entry| !entry.rules.is_empty());
    }

    fn check(&self) -> Result<(), TooManyRules> {
        for (key, rules) in self.lists() {
            if rules.len() > MAX_RULES_PER_DESTINATION {
                return Err(TooManyRules {
                    cgroup: self.path_of(&key),
                    rules: rules.len(),
                });
            }
        }
        Ok(())
    }

    fn path_of(&self, key: &ScopeKey) -> PathBuf {
        self.entries
            .get(key)
            .and_then(|e| e.cgroup.as_ref())
            .map(|c| c.path.clone())
            .unwrap_or_default()
    }

    /// What the kernel map must hold: each key's rules, its ancestors' included, in arming order.
    pub fn lists(&self) -> BTreeMap<ScopeKey, Vec<u32>> {
        let mut lists = BTreeMap::new();
        for (key, entry) in &self.entries {
            let Some(cgroup) = &entry.cgroup else {
                continue;
            };
            let mut rules: Vec<(u64, u32)> = self
                .entries
                .iter()
                .filter(|(other, e)| {
                    other.hook == key.hook
                        && e.cgroup
                            .as_ref()
                            .is_some_and(|c| is_within(&cgroup.path, &c.path))
                })
                .flat_map(|(_, e)| e.rules.iter().copied())
                .collect();
            rules.sort_unstable();
            lists.insert(*key, rules.into_iter().map(|(_, slot)| slot).collect());
        }
        lists
    }

    /// Bit L set for each level some entry's cgroup sits at.
    pub fn levels(&self) -> u32 {
        self.entries
            .values()
            .filter_map(|e| e.cgroup.as_ref())
            .filter(|c| c.level < chaos_common::MAX_CGROUP_LEVELS)
            .fold(0, |bits, c| bits | 1 << c.level)
    }

    /// The cgroups a cgroup program for `hook` must be attached to: the scoped ones with no
    /// scoped ancestor for the same hook.
    pub fn attach_points(&self, hook: u32) -> Vec<ScopedCgroup> {
        let scoped: Vec<&ScopedCgroup> = self
            .entries
            .iter()
            .filter(|(key, _)| key.hook == hook)
            .filter_map(|(_, e)| e.cgroup.as_ref())
            .collect();
        scoped
            .iter()
            .filter(|c| {
                !scoped
                    .iter()
                    .any(|other| other.id != c.id && is_within(&c.path, &other.path))
            })
            .map(|c| (*c).clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `dir` is `ancestor` or below it (component-wise, so `/a/b2` is not within `/a/b`).
fn is_within(dir: &Path, ancestor: &Path) -> bool {
    dir.starts_with(ancestor)
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
}
