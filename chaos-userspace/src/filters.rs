//! Parsers for the values that select traffic: probability, CIDRs, ports, protocol, direction.
//! Each returns a message saying what is accepted, which clap puts after the flag's name.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use chaos_common::{PROBABILITY_ONE, proto};

/// A probability in [0, 1] and its kernel threshold out of 2^32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probability(pub f64);

impl Probability {
    pub const ALWAYS: Probability = Probability(1.0);

    pub fn threshold(self) -> u64 {
        // Exact at both ends; in between the resolution is 1/2^32.
        (self.0 * PROBABILITY_ONE as f64).round() as u64
    }
}

impl FromStr for Probability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted = "a number from 0 to 1, such as 0.3";
        let value: f64 = text.trim().parse().map_err(|_| accepted.to_string())?;
        if !(0.0..=1.0).contains(&value) {
            return Err(format!("{value} is outside [0, 1]; {accepted}"));
        }
        Ok(Probability(value))
    }
}

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The same network cut to a shorter prefix.
    pub fn truncated(self, prefix: u8) -> Cidr {
        let bytes = Cidr { prefix, ..self }.network_bytes();
        Cidr::from_network(self.addr.is_ipv6(), &bytes, prefix)
    }

    /// The CIDR of `prefix` bits of a network given as 4 or 16 bytes.
    pub fn from_network(v6: bool, bytes: &[u8], prefix: u8) -> Cidr {
        let addr = if v6 {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            IpAddr::V6(octets.into())
        } else {
            let mut octets = [0u8; 4];
            octets.copy_from_slice(bytes);
            IpAddr::V4(octets.into())
        };
        Cidr { addr, prefix }
    }

    /// Every address of the family: what a rule without `--dst` covers.
    pub fn everything(v6: bool) -> Cidr {
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Cidr { addr, prefix: 0 }
    }

    /// The address with host bits cleared, as bytes (4 or 16).
    pub fn network_bytes(&self) -> Vec<u8> {
        let mut bytes = match self.addr {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        for (i, byte) in bytes.iter_mut().enumerate() {
            let bits_kept = usize::from(self.prefix).saturating_sub(i * 8).min(8);
            *byte &= (0xff00u16 >> bits_kept) as u8;
        }
        bytes
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted = "an IPv4 or IPv6 CIDR such as 10.1.0.0/16 or fd00::/8, or a single address";
        let (addr_text, prefix_text) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| accepted.to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(prefix) if prefix <= max => prefix,
                _ => return Err(format!("prefix must be 0 to {max}; {accepted}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = match self.network_bytes().as_slice() {
            &[a, b, c, d] => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            bytes => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
        };
        write!(f, "{addr}/{}", self.prefix)
    }
}

/// An inclusive port range; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted = "a port from 1 to 65535 or a range such as 8000-8100";
        let parse = |t: &str| match t.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(accepted.to_string()),
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (parse(first)?, parse(last)?),
            None => {
                let port = parse(text)?;
                (port, port)
            }
        };
        if first > last {
            return Err(format!("range {first}-{last} is reversed; {accepted}"));
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl PortRange {
    /// The range as the fewest aligned blocks, each a (first port, prefix length out of 16): what
    /// the kernel's port trie stores, so a lookup costs the same for any ranges (at most 30
    /// blocks per range).
    pub fn prefixes(self) -> Vec<(u16, u32)> {
        let (mut start, last) = (u32::from(self.first), u32::from(self.last));
        let mut blocks = Vec::new();
        while start <= last {
            // The largest power-of-two block that starts here and stays inside the range.
            let mut size = 1u32 << start.trailing_zeros().min(16);
            while start + size - 1 > last {
                size >>= 1;
            }
            blocks.push((start as u16, 16 - size.trailing_zeros()));
            start += size;
        }
        blocks
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(protocol: Option<Protocol>) -> u32 {
        match protocol {
            None => u32::from(proto::ANY),
            Some(Protocol::Tcp) => u32::from(proto::TCP),
            Some(Protocol::Udp) => u32::from(proto::UDP),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Egress,
    Ingress,
    Both,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_bounds_and_thresholds() {
        assert_eq!("0".parse::<Probability>().unwrap().threshold(), 0);
        assert_eq!("1".parse::<Probability>().unwrap().threshold(), 1 << 32);
        assert_eq!("0.5".parse::<Probability>().unwrap().threshold(), 1 << 31);
        assert!(
            "1.5"
                .parse::<Probability>()
                .unwrap_err()
                .contains("outside [0, 1]")
        );
        assert!("-0.1".parse::<Probability>().is_err());
        assert!("half".parse::<Probability>().is_err());
        assert!("NaN".parse::<Probability>().is_err());
    }

    #[test]
    fn cidrs_parse_and_clear_host_bits() {
        let cidr: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(cidr.prefix, 16);
        assert_eq!(cidr.network_bytes(), vec![10, 1, 0, 0]);
        assert_eq!(cidr.to_string(), "10.1.0.0/16");
        let cidr: Cidr = "10.1.2.3".parse().unwrap();
        assert_eq!(cidr.prefix, 32);
        let cidr: Cidr = "fd00::1/8".parse().unwrap();
        assert_eq!(cidr.to_string(), "fd00::/8");
        let cidr: Cidr = "10.0.0.0/12".parse().unwrap();
        assert_eq!(cidr.network_bytes(), vec![10, 0, 0, 0]);
        let cidr: Cidr = "10.31.255.255/12".parse().unwrap();
        assert_eq!(cidr.network_bytes(), vec![10, 16, 0, 0]);
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        for bad in [
            "10.1.0.0/33",
            "::/129",
            "10.1.0",
            "host/8",
            "",
            "10.1.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            "5432".parse::<PortRange>().unwrap(),
            PortRange {
                first: 5432,
                last: 5432
            }
        );
        assert_eq!(
            "80-90".parse::<PortRange>().unwrap(),
            PortRange {
                first: 80,
                last: 90
            }
        );
        for bad in ["0", "65536", "90-80", "http", "-1", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    /// The blocks cover exactly the range: every port inside matches one block, none outside.
    #[test]
    fn port_ranges_become_exact_prefix_blocks() {
        let range = |text: &str| text.parse::<PortRange>().unwrap();
        assert_eq!(range("5432").prefixes(), vec![(5432, 16)]);
        assert_eq!(range("1-65535").prefixes().len(), 16);
        assert_eq!(range("80-83").prefixes(), vec![(80, 14)]);
        for text in [
            "1-65535",
            "79-1025",
            "8000-8100",
            "65535",
            "1024-65535",
            "3-5",
        ] {
            let r = range(text);
            let blocks = r.prefixes();
            assert!(blocks.len() <= 30, "{text}: {} blocks", blocks.len());
            for port in 0..=65535u32 {
                let covered = blocks
                    .iter()
                    .filter(|(start, len)| {
                        let size = 1u32 << (16 - len);
                        (u32::from(*start)..u32::from(*start) + size).contains(&port)
                    })
                    .count();
                let inside = (u32::from(r.first)..=u32::from(r.last)).contains(&port);
                assert_eq!(covered, usize::from(inside), "{text}: port {port}");
            }
        }
    }

    #[test]
    fn cidrs_truncate_to_their_supernets() {
        let cidr: Cidr = "10.1.2.3/32".parse().unwrap();
        assert_eq!(cidr.truncated(16).to_string(), "10.1.0.0/16");
        assert_eq!(cidr.truncated(0), Cidr::everything(false));
        let v6: Cidr = "fd00:1::5/128".parse().unwrap();
        assert_eq!(v6.truncated(16).to_string(), "fd00::/16");
    }
}
