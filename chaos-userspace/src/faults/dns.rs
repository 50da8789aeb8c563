//! dns-error and dns-delay: TC rules on the queries a scope sends, matched by name. The names of
//! every DNS rule of an object share one trie, keyed by each name's labels in reverse order, so
//! the kernel finds all rules covering a query with one lookup; each trie entry carries the
//! rules of every shorter `*.` suffix above it, folded in here.
use std::collections::BTreeMap;

use chaos_common::{DnsName as KeyBytes, DnsNameRules, MAX_DNS_RULES, dns_key};
use chaos_model::DnsName;

use crate::error::{ChaosError, Result};

/// What a DNS rule matches besides the packet filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuery {
    pub names: Vec<DnsName>,
    /// The wire query type, 0 for any.
    pub qtype: u32,
}

/// The port DNS queries go to unless `match.port` says otherwise.
pub const DNS_PORT: u16 = 53;

/// One entry of the kernel's name trie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry {
    pub prefix_bits: u32,
    pub key: KeyBytes,
    pub rules: DnsNameRules,
}

/// The trie entries for DNS rules given as (slot, query): every name and `*.` domain once, with
/// the rules (slot bits) matching a query whose longest stored prefix it is.
pub fn name_entries<'a>(rules: impl Iterator<Item = (u32, &'a DnsQuery)>) -> Vec<NameEntry> {
    // (domain labels, wildcard) -> slots; the domain as stored, lowercase and without the dot.
    let mut exact: BTreeMap<&str, u64> = BTreeMap::new();
    let mut suffixes: BTreeMap<&str, u64> = BTreeMap::new();
    for (slot, query) in rules {
        for name in &query.names {
            let table = if name.wildcard {
                &mut suffixes
            } else {
                &mut exact
            };
            *table.entry(name.domain.as_str()).or_default() |= 1 << slot;
        }
    }
    // The slots of the suffixes strictly above `domain` (its proper parent domains, and `*`).
    let above = |domain: &str| -> u64 {
        let mut slots = 0;
        let mut rest = domain;
        while !rest.is_empty() {
            rest = rest.split_once('.').map_or("", |(_, parent)| parent);
            slots |= suffixes.get(rest).copied().unwrap_or(0);
        }
        slots
    };
    let mut entries = Vec::with_capacity(exact.len() + suffixes.len());
    for (domain, slots) in &exact {
        if let Some((prefix_bits, key)) = dns_key(domain, false) {
            entries.push(NameEntry {
                prefix_bits,
                key,
                rules: DnsNameRules {
                    at: slots | above(domain),
                    under: 0,
                    key_bytes: prefix_bits / 8,
                    _pad: 0,
                },
            });
        }
    }
    for (domain, slots) in &suffixes {
        if let Some((prefix_bits, key)) = dns_key(domain, true) {
            let above = if domain.is_empty() { 0 } else { above(domain) };
            entries.push(NameEntry {
                prefix_bits,
                key,
                rules: DnsNameRules {
                    at: above,
                    under: slots | above,
                    key_bytes: prefix_bits / 8,
                    _pad: 0,
                },
            });
        }
    }
    entries
}

/// The DNS rules of one object must fit its slot masks and its name trie. Checked while nothing
/// is attached.
pub fn check_capacity<'a>(queries: impl Iterator<Item = &'a DnsQuery>) -> Result<()> {
    let (mut rules, mut names) = (0usize, 0usize);
    for query in queries {
        rules += 1;
        names += query.names.len();
    }
    if rules > MAX_DNS_RULES as usize {
        return Err(ChaosError::input(
            "kind",
            format!("{rules} DNS faults armed together"),
            format!("at most {MAX_DNS_RULES} in one run"),
        ));
    }
    if names > chaos_common::MAX_DNS_NAMES as usize {
        return Err(ChaosError::input(
            "names",
            format!("{names} names over the run's DNS faults"),
            format!("at most {}", chaos_common::MAX_DNS_NAMES),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(names: &[&str]) -> DnsQuery {
        DnsQuery {
            names: names.iter().map(|n| n.parse().unwrap()).collect(),
            qtype: 0,
        }
    }

    /// What the kernel's one lookup answers for `name`: the longest entry that is a prefix of
    /// the name's key, then `at` or `under` by length, as `dns.rs` decides.
    fn lookup(entries: &[NameEntry], name: &str) -> u64 {
        let (bits, key) = dns_key(name, false).unwrap();
        let best = entries
            .iter()
            .filter(|e| {
                e.prefix_bits <= bits
                    && key[..e.prefix_bits as usize / 8] == e.key[..e.prefix_bits as usize / 8]
            })
            .max_by_key(|e| e.prefix_bits);
        match best {
            None => 0,
            Some(e) if e.rules.key_bytes >= bits / 8 - 1 => e.rules.at,
            Some(e) => e.rules.under,
        }
    }

    #[test]
    fn one_lookup_answers_for_every_rule_covering_a_name() {
        let rules = [
            query(&["payments.example.com"]),
            query(&["*.example.com"]),
            query(&["*.com", "Other.Test"]),
            query(&["*.a.example.com"]),
        ];
        let entries = name_entries(rules.iter().enumerate().map(|(i, q)| (i as u32, q)));
        assert_eq!(lookup(&entries, "payments.example.com"), 0b0111);
        assert_eq!(lookup(&entries, "PAYMENTS.example.com"), 0b0111);
        assert_eq!(lookup(&entries, "x.example.com"), 0b0110);
        // A suffix covers the names under its domain, not the domain itself.
        assert_eq!(lookup(&entries, "example.com"), 0b0100);
        assert_eq!(lookup(&entries, "a.example.com"), 0b0110);
        assert_eq!(lookup(&entries, "b.a.example.com"), 0b1110);
        assert_eq!(lookup(&entries, "com"), 0);
        assert_eq!(lookup(&entries, "other.test"), 0b0100);
        assert_eq!(lookup(&entries, "x.other.test"), 0);
        assert_eq!(lookup(&entries, "example.org"), 0);
        // A label that only starts like a stored one is another label.
        assert_eq!(lookup(&entries, "payments.example.comx"), 0);
    }

    #[test]
    fn star_covers_every_name() {
        let rules = [query(&["*"]), query(&["db.internal"])];
        let entries = name_entries(rules.iter().enumerate().map(|(i, q)| (i as u32, q)));
        assert_eq!(lookup(&entries, "anything.at.all"), 0b01);
        assert_eq!(lookup(&entries, "db.internal"), 0b11);
    }

    #[test]
    fn capacity_counts_rules_and_names() {
        let many = vec![query(&["a.b"]); MAX_DNS_RULES as usize + 1];
        let err = check_capacity(many.iter()).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");
        assert!(check_capacity(many[..64].iter()).is_ok());
    }
}
