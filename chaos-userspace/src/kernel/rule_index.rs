//! The TC rule index. Every destination prefix any rule names goes into a longest-prefix-match
//! trie, listing every rule whose destinations cover that prefix. The longest prefix holding a
//! packet's destination then lists exactly the rules that can match the packet: one lookup per
//! packet, whether a run has one rule or tens of thousands.
use std::collections::{BTreeMap, BTreeSet};

use chaos_common::MAX_RULES_PER_DESTINATION;

use crate::{
    error::{ChaosError, Result},
    filters::Cidr,
};

/// One trie entry: a destination prefix and the rules covering it, in rule order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub destination: Cidr,
    pub rules: Vec<u32>,
}

/// Builds the index for rules given by their destination CIDRs (rule `i` is `destinations[i]`;
/// an empty list means every destination of both families).
pub fn destination_index(destinations: &[Vec<Cidr>]) -> Result<Vec<IndexEntry>> {
    let mut named: BTreeMap<(bool, Vec<u8>, u8), BTreeSet<u32>> = BTreeMap::new();
    for (rule, cidrs) in destinations.iter().enumerate() {
        let everything = [Cidr::everything(false), Cidr::everything(true)];
        let cidrs = if cidrs.is_empty() {
            &everything[..]
        } else {
            cidrs
        };
        for cidr in cidrs {
            named.entry(key(cidr)).or_default().insert(rule as u32);
        }
    }
    let mut entries = Vec::with_capacity(named.len());
    for (v6, bytes, prefix) in named.keys() {
        let destination = Cidr::from_network(*v6, bytes, *prefix);
        // Rules naming this prefix or any shorter one containing it.
        let mut rules = BTreeSet::new();
        for shorter in 0..=*prefix {
            if let Some(covering) = named.get(&key(&destination.truncated(shorter))) {
                rules.extend(covering);
            }
        }
        if rules.len() > MAX_RULES_PER_DESTINATION {
            return Err(ChaosError::input(
                "match.dst",
                format!("{} rules cover {destination}", rules.len()),
                format!(
                    "at most {MAX_RULES_PER_DESTINATION} rules whose destinations overlap \
                     (rules without --dst cover every destination)"
                ),
            ));
        }
        entries.push(IndexEntry {
            destination,
            rules: rules.into_iter().collect(),
        });
    }
    Ok(entries)
}

fn key(cidr: &Cidr) -> (bool, Vec<u8>, u8) {
    (cidr.addr.is_ipv6(), cidr.network_bytes(), cidr.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    /// What a lookup finds: the longest entry containing the address.
    fn lookup<'a>(index: &'a [IndexEntry], addr: &str) -> Option<&'a IndexEntry> {
        let host: Cidr = addr.parse().unwrap();
        index
            .iter()
            .filter(|e| {
                e.destination.addr.is_ipv6() == host.addr.is_ipv6()
                    && host.truncated(e.destination.prefix).network_bytes()
                        == e.destination.network_bytes()
            })
            .max_by_key(|e| e.destination.prefix)
    }

    #[test]
    fn the_longest_prefix_lists_every_rule_covering_an_address() {
        let index = destination_index(&[
            cidrs(&["10.0.0.0/8"]),
            cidrs(&["10.1.0.0/16", "fd00::/8"]),
            vec![],
            cidrs(&["10.1.2.3/32"]),
        ])
        .unwrap();
        let rules = |addr| lookup(&index, addr).map(|e| e.rules.clone());
        assert_eq!(rules("10.1.2.3"), Some(vec![0, 1, 2, 3]));
        assert_eq!(rules("10.1.9.9"), Some(vec![0, 1, 2]));
        assert_eq!(rules("10.200.0.1"), Some(vec![0, 2]));
        assert_eq!(rules("192.168.0.1"), Some(vec![2]));
        assert_eq!(rules("fd00::1"), Some(vec![1, 2]));
        assert_eq!(rules("2001:db8::1"), Some(vec![2]));
    }

    #[test]
    fn without_a_wildcard_rule_unrelated_addresses_find_nothing() {
        let many: Vec<Vec<Cidr>> = (0..10_000)
            .map(|i| cidrs(&[&format!("10.250.{}.{}/32", i / 250, i % 250 + 1)]))
            .collect();
        let index = destination_index(&many).unwrap();
        assert_eq!(index.len(), 10_000);
        assert!(lookup(&index, "10.251.0.1").is_none());
        assert_eq!(lookup(&index, "10.250.3.7").unwrap().rules, vec![756]);
    }

    #[test]
    fn too_many_overlapping_rules_are_an_input_error() {
        let overlapping: Vec<Vec<Cidr>> = (0..=MAX_RULES_PER_DESTINATION)
            .map(|_| cidrs(&["10.0.0.0/8"]))
            .collect();
        let err = destination_index(&overlapping).unwrap_err().to_string();
        let expected = format!(
            "match.dst: {} rules cover 10.0.0.0/8; accepted: at most {MAX_RULES_PER_DESTINATION}",
            MAX_RULES_PER_DESTINATION + 1
        );
        assert!(err.starts_with(&expected), "{err}");
    }
}
