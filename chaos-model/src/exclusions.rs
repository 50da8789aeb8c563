//! Exclusions (`match.excludeDst`, `match.excludePort`): traffic a fault must never touch, such as
//! DNS, the metrics endpoint or the agent's own API. They are taken out of the fault's own lists
//! (or out of everything) here, as set differences of CIDRs and port ranges, so every mechanism's
//! existing "any of these" lookups enforce them without a kernel change.
use std::net::IpAddr;

use crate::{Cidr, Match, PortRange};

impl Match {
    /// The destinations the fault matches: `dst` (or every address of both families) without
    /// the excluded ones. Empty when nothing is excluded and no `dst` is given (any).
    pub fn effective_dst(&self) -> Vec<Cidr> {
        if self.exclude_dst.is_empty() {
            return self.dst.clone();
        }
        let base = if self.dst.is_empty() {
            vec![Cidr::everything(false), Cidr::everything(true)]
        } else {
            self.dst.clone()
        };
        base.into_iter()
            .flat_map(|cidr| {
                self.exclude_dst.iter().fold(vec![cidr], |left, hole| {
                    left.into_iter().flat_map(|c| subtract(c, *hole)).collect()
                })
            })
            .collect()
    }

    /// The ports the fault matches: `port` (or every port, 0 included, which packets without
    /// ports carry at TC) without the excluded ones. Empty when nothing is excluded and no
    /// `port` is given (any).
    pub fn effective_ports(&self) -> Vec<PortRange> {
        if self.exclude_port.is_empty() {
            return self.port.clone();
        }
        let base = if self.port.is_empty() {
            vec![PortRange {
                first: 0,
                last: u16::MAX,
            }]
        } else {
            self.port.clone()
        };
        base.into_iter()
            .flat_map(|range| {
                self.exclude_port.iter().fold(vec![range], |left, hole| {
                    left.into_iter()
                        .flat_map(|r| subtract_range(r, *hole))
                        .collect()
                })
            })
            .collect()
    }

    /// Whether the exclusions leave nothing to match.
    pub fn excludes_everything(&self) -> bool {
        (!self.exclude_dst.is_empty() && self.effective_dst().is_empty())
            || (!self.exclude_port.is_empty() && self.effective_ports().is_empty())
    }
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
}
