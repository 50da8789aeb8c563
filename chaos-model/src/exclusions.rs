//! Exclusions (`match.excludeDst`, `match.excludePort`, and at TC `match.excludeSrc`,
//! `match.excludeSport`): traffic a fault must never touch, such as
//! DNS, the metrics endpoint or the agent's own API. They are taken out of the fault's own lists
//! (or out of everything) here, as set differences of CIDRs and port ranges, so every mechanism's
//! existing "any of these" lookups enforce them without a kernel change.
use std::net::IpAddr;

use crate::{Cidr, Match, PortRange};

impl Match {
    /// The destinations the fault matches: `dst` (or every address of both families) without
    /// the excluded ones. Empty when nothing is excluded and no `dst` is given (any).
    pub fn effective_dst(&self) -> Vec<Cidr> {
        without_addresses(&self.dst, &self.exclude_dst)
    }

    /// The peers of a fault whose `peerSelector` chose `selected` (the pods' addresses as they
    /// are now): `dst` and those addresses, without the excluded ones. Empty when both are: a
    /// selector that matches no pod leaves no peer, never every address.
    pub fn selected_peers(&self, selected: &[std::net::IpAddr]) -> Vec<Cidr> {
        let mut given = self.dst.clone();
        given.extend(selected.iter().map(|addr| Cidr {
            addr: *addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }));
        if given.is_empty() {
            return Vec::new();
        }
        without_addresses(&given, &self.exclude_dst)
    }

    /// The ports the fault matches: `port` (or every port, 0 included, which packets without
    /// ports carry at TC) without the excluded ones. Empty when nothing is excluded and no
    /// `port` is given (any).
    pub fn effective_ports(&self) -> Vec<PortRange> {
        without_ports(&self.port, &self.exclude_port)
    }

    /// TC: the source addresses the fault matches: `src` without `excludeSrc` (the answers of a
    /// peer whose requests `excludeDst` spares).
    pub fn effective_src(&self) -> Vec<Cidr> {
        without_addresses(&self.src, &self.exclude_src)
    }

    /// TC: the source ports the fault matches: `sport` without `excludeSport` (a server's
    /// replies leave from its port).
    pub fn effective_sports(&self) -> Vec<PortRange> {
        without_ports(&self.sport, &self.exclude_sport)
    }

    /// Whether the exclusions leave nothing to match.
    pub fn excludes_everything(&self) -> bool {
        (!self.exclude_dst.is_empty() && self.effective_dst().is_empty())
            || (!self.exclude_port.is_empty() && self.effective_ports().is_empty())
            || (!self.exclude_src.is_empty() && self.effective_src().is_empty())
            || (!self.exclude_sport.is_empty() && self.effective_sports().is_empty())
    }
}

/// `given` (or every address of both families) without the holes; empty (any) when there are
/// no holes and nothing was given.
fn without_addresses(given: &[Cidr], holes: &[Cidr]) -> Vec<Cidr> {
    if holes.is_empty() {
        return given.to_vec();
    }
    let base = if given.is_empty() {
        vec![Cidr::everything(false), Cidr::everything(true)]
    } else {
        given.to_vec()
    };
    base.into_iter()
        .flat_map(|cidr| {
            holes.iter().fold(vec![cidr], |left, hole| {
                left.into_iter().flat_map(|c| subtract(c, *hole)).collect()
            })
        })
        .collect()
}

/// `given` (or every port, 0 included) without the holes; empty (any) when there are no holes
/// and nothing was given.
fn without_ports(given: &[PortRange], holes: &[PortRange]) -> Vec<PortRange> {
    if holes.is_empty() {
        return given.to_vec();
    }
    let base = if given.is_empty() {
        vec![PortRange {
            first: 0,
            last: u16::MAX,
        }]
    } else {
        given.to_vec()
    };
    base.into_iter()
        .flat_map(|range| {
            holes.iter().fold(vec![range], |left, hole| {
                left.into_iter()
                    .flat_map(|r| subtract_range(r, *hole))
                    .collect()
            })
        })
        .collect()
}

/// An address as a number in its family's width (32 or 128 bits).
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn network(cidr: Cidr) -> (u128, u8, u8) {
    let (value, width) = bits(cidr.addr);
    let host = u32::from(width - cidr.prefix);
    let mask = if host >= 128 { 0 } else { !0u128 << host };
    (value & mask, width, cidr.prefix)
}

fn contains(outer: Cidr, inner: Cidr) -> bool {
    let (o, ow, op) = network(outer);
    let (i, iw, ip) = network(inner);
    ow == iw
        && op <= ip
        && network(Cidr {
            addr: inner.addr,
            prefix: op,
        })
        .0 == o
        && i >= o
}

/// `from` without `hole`: the halves of `from` that do not hold the hole, down to its size.
fn subtract(from: Cidr, hole: Cidr) -> Vec<Cidr> {
    if contains(hole, from) {
        return Vec::new();
    }
    if !contains(from, hole) {
        return vec![from];
    }
    let (value, width, prefix) = network(from);
    let half = 1u128 << (u32::from(width - prefix) - 1);
    let child = |start: u128| {
        let addr = if width == 32 {
            IpAddr::V4((start as u32).into())
        } else {
            IpAddr::V6(start.into())
        };
        Cidr {
            addr,
            prefix: prefix + 1,
        }
    };
    [child(value), child(value + half)]
        .into_iter()
        .flat_map(|c| subtract(c, hole))
        .collect()
}

fn subtract_range(from: PortRange, hole: PortRange) -> Vec<PortRange> {
    if hole.last < from.first || hole.first > from.last {
        return vec![from];
    }
    let mut left = Vec::new();
    if hole.first > from.first {
        left.push(PortRange {
            first: from.first,
            last: hole.first - 1,
        });
    }
    if hole.last < from.last {
        left.push(PortRange {
            first: hole.last + 1,
            last: from.last,
        });
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn covers(list: &[Cidr], addr: &str) -> bool {
        let one = cidr(addr);
        list.iter().any(|c| contains(*c, one))
    }

    #[test]
    fn selected_peers_are_never_everyone() {
        let mut matches = Match {
            exclude_dst: vec![cidr("10.0.0.2/32")],
            ..Match::default()
        };
        assert!(matches.selected_peers(&[]).is_empty(), "no pod: no peer");
        let pods = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let peers = matches.selected_peers(&pods);
        assert!(covers(&peers, "10.0.0.1/32"));
        assert!(!covers(&peers, "10.0.0.2/32"), "excluded");
        assert!(!covers(&peers, "10.0.0.3/32"));
        matches.dst = vec![cidr("192.168.0.0/24")];
        let peers = matches.selected_peers(&pods[..1]);
        assert!(covers(&peers, "192.168.0.7/32") && covers(&peers, "10.0.0.1/32"));
    }

    #[test]
    fn excluded_destinations_leave_everything_else() {
        let matches = Match {
            exclude_dst: vec![cidr("10.96.0.10/32"), cidr("fd00::/8")],
            ..Match::default()
        };
        let left = matches.effective_dst();
        assert!(!covers(&left, "10.96.0.10"));
        assert!(covers(&left, "10.96.0.11"));
        assert!(covers(&left, "192.168.1.1"));
        assert!(!covers(&left, "fd00::1"));
        assert!(covers(&left, "2001:db8::1"));
        assert_eq!(left.len(), 32 + 8, "one prefix per bit above each hole");
        let within = Match {
            dst: vec![cidr("10.0.0.0/8")],
            exclude_dst: vec![cidr("10.1.0.0/16")],
            ..Match::default()
        };
        let left = within.effective_dst();
        assert!(covers(&left, "10.2.3.4") && !covers(&left, "10.1.2.3"));
        assert!(!covers(&left, "11.0.0.1"));
        let all = Match {
            dst: vec![cidr("10.1.2.0/24")],
            exclude_dst: vec![cidr("10.0.0.0/8")],
            ..Match::default()
        };
        assert!(all.excludes_everything());
    }

    #[test]
    fn excluded_ports_leave_the_rest() {
        let matches = Match {
            exclude_port: vec!["53".parse().unwrap(), "9477-9478".parse().unwrap()],
            ..Match::default()
        };
        let left = matches.effective_ports();
        let covers = |port: u16| left.iter().any(|r| r.first <= port && port <= r.last);
        assert!(covers(0) && covers(52) && covers(54) && covers(9476) && covers(9479));
        assert!(!covers(53) && !covers(9477) && !covers(9478));
        let only = Match {
            port: vec!["53".parse().unwrap()],
            exclude_port: vec!["53".parse().unwrap()],
            ..Match::default()
        };
        assert!(only.excludes_everything());
    }

    #[test]
    fn source_exclusions_spare_answers_and_replies() {
        let matches = Match {
            exclude_dst: vec![cidr("10.0.0.1/32")],
            exclude_src: vec![cidr("10.0.0.1/32")],
            exclude_port: vec!["9477".parse().unwrap()],
            exclude_sport: vec!["9477".parse().unwrap()],
            ..Match::default()
        };
        let (dst, src) = (matches.effective_dst(), matches.effective_src());
        assert!(!covers(&dst, "10.0.0.1") && !covers(&src, "10.0.0.1"));
        assert!(covers(&dst, "10.0.0.2") && covers(&src, "10.0.0.2"));
        let sports = matches.effective_sports();
        assert!(!sports.iter().any(|r| r.first <= 9477 && 9477 <= r.last));
        assert!(sports.iter().any(|r| r.first <= 80 && 80 <= r.last));
        // A user's destination exclusion leaves sources alone: excluding the pod network must
        // not spare everything the node sends from an address inside it.
        let only_dst = Match {
            exclude_dst: vec![cidr("10.0.0.0/8")],
            ..Match::default()
        };
        assert!(only_dst.effective_src().is_empty(), "any source");
    }
}
