//! The values a fault is made of. Each has exactly one parser (`FromStr`), which the CLI (through
//! clap), JSON and YAML (through serde) all use, so every front end accepts the same spellings
//! and says the same thing about a mistake: what is wrong, then what is accepted.
use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A value that does not parse: what is wrong with it, and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    pub problem: String,
    pub accepted: String,
}

impl ValueError {
    pub fn new(problem: impl Into<String>, accepted: impl Into<String>) -> Self {
        Self {
            problem: problem.into(),
            accepted: accepted.into(),
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; accepted: {}", self.problem, self.accepted)
    }
}

impl std::error::Error for ValueError {}

/// serde for the text-written values: strings everywhere, and bare numbers where they read
/// naturally (a port, an errno, a probability), both through the type's `FromStr`.
macro_rules! text_value {
    ($ty:ty, $name:literal, $types:tt, $description:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        text_value!(@parse $ty, $name, $types, $description);
    };
    (@parse $ty:ty, $name:literal, $types:tt, $description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(TextVisitor::<$ty>(std::marker::PhantomData))
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": $types, "description": $description })
            }
        }
    };
}

struct TextVisitor<T>(std::marker::PhantomData<T>);

impl<T> de::Visitor<'_> for TextVisitor<T>
where
    T: FromStr<Err = ValueError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }
}

/// A probability in [0, 1]: `0.3` or `"30%"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probability(pub f64);

impl Probability {
    pub const ALWAYS: Probability = Probability(1.0);

    /// The kernel's threshold out of 2^32: exact at both ends, 1/2^32 resolution in between.
    pub fn threshold(self) -> u64 {
        (self.0 * chaos_common::PROBABILITY_ONE as f64).round() as u64
    }
}

impl FromStr for Probability {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a number from 0 to 1 such as 0.3, or a percentage such as \"30%\"";
        let text = text.trim();
        let (number, scale) = match text.strip_suffix('%') {
            Some(percent) => (percent.trim(), 100.0),
            None => (text, 1.0),
        };
        let value = number
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| ValueError::new(format!("{text:?} is not a number"), accepted))?
            / scale;
        if !(0.0..=1.0).contains(&value) {
            return Err(ValueError::new(
                format!("{text} is outside [0, 1]"),
                accepted,
            ));
        }
        Ok(Probability(value))
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}

text_value!(
    @parse Probability,
    "Probability",
    ["number", "string"],
    "A fraction from 0 to 1 (0.3) or a percentage (\"30%\")."
);

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    /// Every address of the family: what a rule without a destination covers.
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
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "an IPv4 or IPv6 CIDR such as 10.1.0.0/16 or fd00::/8, or a single address";
        let (addr_text, prefix_text) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| ValueError::new(format!("{text:?} is not an address"), accepted))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(prefix) if prefix <= max => prefix,
                _ => {
                    return Err(ValueError::new(
                        format!("{text}: the prefix must be 0 to {max}"),
                        accepted,
                    ));
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

text_value!(
    Cidr,
    "Cidr",
    "string",
    "An IPv4 or IPv6 CIDR (10.1.0.0/16, fd00::/8) or a single address."
);

/// An inclusive port range; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a port from 1 to 65535, or a range such as 8000-8100";
        let parse = |t: &str| match t.trim().parse::<u32>() {
            Ok(port @ 1..=65535) => Ok(port as u16),
            Ok(port) => Err(ValueError::new(format!("{port} is not a port"), accepted)),
            Err(_) => Err(ValueError::new(
                format!("{:?} is not a port", t.trim()),
                accepted,
            )),
        };
        let (first, last) = match text.trim().split_once('-') {
            Some((first, last)) if !first.trim().is_empty() => (parse(first)?, parse(last)?),
            _ => {
                let port = parse(text)?;
                (port, port)
            }
        };
        if first > last {
            return Err(ValueError::new(
                format!("the range {first}-{last} is reversed"),
                accepted,
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A single port as a number, a range as text: as users write them.
impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            serializer.serialize_u16(self.first)
        } else {
            serializer.collect_str(self)
        }
    }
}

text_value!(
    @parse PortRange,
    "PortRange",
    ["integer", "string"],
    "A port (5432) or an inclusive range (\"8000-8100\")."
);

/// A positive duration written as humans do: `30s`, `2m`, `1h30m`, `200ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if !duration.is_zero() => Ok(HumanDuration(duration)),
            _ => Err(ValueError::new(
                format!("{text:?} is not a positive duration"),
                "a duration such as 200ms, 30s, 5m or 1h30m",
            )),
        }
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

text_value!(
    HumanDuration,
    "Duration",
    "string",
    "A positive duration: 200ms, 30s, 5m, 1h30m."
);

/// Keyword values: kebab-case names, parsed case-insensitively, listed in their errors.
macro_rules! keyword {
    ($(#[$meta:meta])* $ty:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $name:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $ty { $($(#[$vmeta])* $variant),+ }

        impl $ty {
            /// Every accepted name, for messages and `--help`.
            pub const NAMES: &[&str] = &[$($name),+];

            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl FromStr for $ty {
            type Err = ValueError;

            fn from_str(text: &str) -> Result<Self, ValueError> {
                let lower = text.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $($name $(| $alias)* => Ok($ty::$variant),)+
                    _ => Err(ValueError::new(
                        format!("{text:?} is not a {}", $what),
                        Self::NAMES.join(", "),
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(TextVisitor::<$ty>(std::marker::PhantomData))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "enum": Self::NAMES })
            }
        }
    };
}

keyword!(
    /// io-error: the file operations it fails.
    FileOp, "file operation" {
        Open = "open",
        Read = "read",
        Write = "write",
    }
);

keyword!(
    /// What a fault does.
    FaultKind, "fault kind" {
        ConnectError = "connect-error",
        RecvError = "recv-error",
        SendError = "send-error",
        Drop = "drop",
        Reset = "reset",
        Delay = "delay",
        Corrupt = "corrupt",
        DnsError = "dns-error",
        DnsDelay = "dns-delay",
        Duplicate = "duplicate",
        Bandwidth = "bandwidth",
        Partition = "partition",
        ConnectionLimit = "connection-limit",
        IoError = "io-error",
        CpuPressure = "cpu-pressure",
        MemoryPressure = "memory-pressure",
        Kill = "kill",
    }
);

impl FaultKind {
    /// kill: the scope's processes are SIGKILLed by chaos-bpf itself; no kernel rule.
    pub fn is_kill(self) -> bool {
        self == FaultKind::Kill
    }

    /// connect-error, recv-error and send-error: a socket call fails with an errno.
    pub fn is_socket_call(self) -> bool {
        matches!(
            self,
            FaultKind::ConnectError | FaultKind::RecvError | FaultKind::SendError
        )
    }

    /// cpu-pressure and memory-pressure: the scope's own cgroup knobs; no kernel rule.
    pub fn is_pressure(self) -> bool {
        matches!(self, FaultKind::CpuPressure | FaultKind::MemoryPressure)
    }

    /// dns-error and dns-delay: faults on DNS queries, matched by the name they ask for.
    pub fn is_dns(self) -> bool {
        matches!(self, FaultKind::DnsError | FaultKind::DnsDelay)
    }
}

/// A rate, as tc writes it: bit, kbit, mbit, gbit (bits per second, powers of 1000) or bps,
/// kbps, mbps, gbps (bytes per second, as tc means them). Kept in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bits_per_sec: u64,
}

impl FromStr for Rate {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a rate above 0 such as 1mbit, 500kbit, 10gbit (bits per second) or \
                        125kbps (bytes per second, as tc)";
        let lower = text.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let multiplier: f64 = match unit {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "bps" => 8.0,
            "kbps" => 8e3,
            "mbps" => 8e6,
            "gbps" => 8e9,
            _ => return Err(ValueError::new(format!("{text:?} is not a rate"), accepted)),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| ValueError::new(format!("{text:?} is not a rate"), accepted))?;
        let bits = value * multiplier;
        if !(8.0..=1e12).contains(&bits) {
            return Err(ValueError::new(
                format!("{text:?} is outside 1 byte per second to 1 Tbit/s"),
                accepted,
            ));
        }
        Ok(Rate {
            bits_per_sec: bits.round() as u64,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bits_per_sec {
            b if b % 1_000_000_000 == 0 => write!(f, "{}gbit", b / 1_000_000_000),
            b if b % 1_000_000 == 0 => write!(f, "{}mbit", b / 1_000_000),
            b if b % 1_000 == 0 => write!(f, "{}kbit", b / 1_000),
            b => write!(f, "{b}bit"),
        }
    }
}

text_value!(
    Rate,
    "Rate",
    "string",
    "A rate: 1mbit, 500kbit, 10gbit (bits per second) or 125kbps (bytes per second, as tc)."
);

/// connection-limit: new connections per unit of time, `50/s`, `3000/min`, or `50` (per
/// second). Kept as the time between two connections, which the kernel's bucket counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionRate {
    pub count: u32,
    /// The unit's length in seconds: 1, 60 or 3600.
    pub per_secs: u32,
}

impl ConnectionRate {
    /// The time between two connections at this rate, in nanoseconds.
    pub fn interval_ns(self) -> u64 {
        u64::from(self.per_secs) * 1_000_000_000 / u64::from(self.count.max(1))
    }
}

impl FromStr for ConnectionRate {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "connections per unit of time, 1 to 1000000: 50/s, 3000/min, 100/h, or 50 \
                        (per second)";
        let lower = text.trim().to_ascii_lowercase();
        let (number, unit) = lower.split_once('/').unwrap_or((&lower, "s"));
        let per_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => {
                return Err(ValueError::new(
                    format!("{text:?} is not a connection rate"),
                    accepted,
                ));
            }
        };
        match number.trim().parse::<u32>() {
            Ok(count @ 1..=1_000_000) => Ok(ConnectionRate { count, per_secs }),
            _ => Err(ValueError::new(
                format!("{text:?} is not a connection rate"),
                accepted,
            )),
        }
    }
}

impl fmt::Display for ConnectionRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per_secs {
            60 => "min",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

text_value!(
    ConnectionRate,
    "ConnectionRate",
    ["string", "integer"],
    "New connections per unit of time: 50/s, 3000/min, 100/h, or 50 (per second)."
);

/// A share of CPU time: CPUs as a number (0.2 is a fifth of one CPU, 1.5 one and a half), or
/// Kubernetes millicores (200m).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare(pub f64);

impl FromStr for CpuShare {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "CPUs as 0.2 or 1.5, or millicores as 200m: from 0.001 (1m) to 1024";
        let trimmed = text.trim();
        let cpus = match trimmed.strip_suffix('m') {
            Some(millis) => millis.parse::<f64>().map(|m| m / 1000.0),
            None => trimmed.parse::<f64>(),
        }
        .map_err(|_| ValueError::new(format!("{text:?} is not a CPU share"), accepted))?;
        if !(0.001..=1024.0).contains(&cpus) {
            return Err(ValueError::new(
                format!("{text:?} is outside the range"),
                accepted,
            ));
        }
        Ok(CpuShare(cpus))
    }
}

impl fmt::Display for CpuShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

text_value!(
    CpuShare,
    "CpuShare",
    "string",
    "A share of CPU time: 0.2 (a fifth of one CPU), 1.5, or millicores: 200m."
);

/// A memory size as Kubernetes writes it: 64Mi, 1Gi, 512Ki (powers of 1024), 100M, 1G (powers
/// of 1000), or bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

impl FromStr for MemorySize {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a size such as 64Mi, 1Gi, 512Ki, 100M or bytes, from 1Mi to 1Ti";
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            _ => return Err(ValueError::new(format!("{text:?} is not a size"), accepted)),
        };
        let value: u64 = number
            .parse()
            .map_err(|_| ValueError::new(format!("{text:?} is not a size"), accepted))?;
        match value.checked_mul(multiplier) {
            Some(bytes) if ((1 << 20)..=(1 << 40)).contains(&bytes) => Ok(MemorySize(bytes)),
            _ => Err(ValueError::new(
                format!("{text:?} is outside the range"),
                accepted,
            )),
        }
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b if b % (1 << 30) == 0 => write!(f, "{}Gi", b >> 30),
            b if b % (1 << 20) == 0 => write!(f, "{}Mi", b >> 20),
            b if b % (1 << 10) == 0 => write!(f, "{}Ki", b >> 10),
            b => write!(f, "{b}"),
        }
    }
}

text_value!(
    MemorySize,
    "MemorySize",
    "string",
    "A memory size: 64Mi, 1Gi, 512Ki, 100M, or bytes."
);

/// A size in bytes, as tc writes it: b, kb or k, mb or m, gb or g (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a size such as 1500b, 32kb, 1mb (powers of 1024, as tc), at most 1gb";
        let lower = text.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let multiplier: u64 = match unit {
            "" | "b" => 1,
            "k" | "kb" => 1 << 10,
            "m" | "mb" => 1 << 20,
            "g" | "gb" => 1 << 30,
            _ => return Err(ValueError::new(format!("{text:?} is not a size"), accepted)),
        };
        let value: u64 = number
            .parse()
            .map_err(|_| ValueError::new(format!("{text:?} is not a size"), accepted))?;
        match value.checked_mul(multiplier) {
            Some(bytes) if bytes <= 1 << 30 => Ok(ByteSize(bytes)),
            _ => Err(ValueError::new(format!("{text:?} is too large"), accepted)),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b if b > 0 && b % (1 << 20) == 0 => write!(f, "{}mb", b >> 20),
            b if b > 0 && b % (1 << 10) == 0 => write!(f, "{}kb", b >> 10),
            b => write!(f, "{b}b"),
        }
    }
}

text_value!(
    ByteSize,
    "ByteSize",
    "string",
    "A size: 1500b, 32kb, 1mb (powers of 1024, as tc)."
);

keyword!(
    /// What a dns-error query gets: an answer with this response code, or no answer at all.
    DnsRcode, "DNS response code" {
        /// "No such name": getaddrinfo fails with EAI_NONAME.
        NxDomain = "nxdomain",
        /// "Server failure": getaddrinfo fails with EAI_AGAIN.
        ServFail = "servfail",
        /// "Refused".
        Refused = "refused",
        /// No answer: the query is lost, and the resolver times out.
        Timeout = "timeout",
    }
);

impl DnsRcode {
    /// The response code on the wire, `None` for timeout (no answer).
    pub fn wire_value(self) -> Option<u32> {
        match self {
            DnsRcode::NxDomain => Some(3),
            DnsRcode::ServFail => Some(2),
            DnsRcode::Refused => Some(5),
            DnsRcode::Timeout => None,
        }
    }
}

keyword!(
    /// The query types a DNS fault matches.
    DnsQtype, "DNS query type" { Any = "any", A = "a", Aaaa = "aaaa" }
);

impl DnsQtype {
    /// The query type on the wire, 0 for any.
    pub fn wire_value(self) -> u32 {
        match self {
            DnsQtype::Any => 0,
            DnsQtype::A => 1,
            DnsQtype::Aaaa => 28,
        }
    }
}

/// A name DNS faults match: exact (`payments.example.com`), every name under a domain
/// (`*.svc.cluster.local`, not the domain itself), or every name (`*`). Case-insensitive, as DNS.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName {
    /// Lowercase, without a trailing dot; for a `*.` pattern, the domain after it.
    pub domain: String,
    pub wildcard: bool,
}

impl FromStr for DnsName {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted = "a DNS name (payments.example.com), *.DOMAIN for every name under it, or * \
                        for every name; labels of 1 to 63 bytes, 255 bytes in all";
        let trimmed = text.trim();
        let (domain, wildcard) = match trimmed {
            "*" | "*." => ("", true),
            _ => match trimmed.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (trimmed, false),
            },
        };
        let domain = domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .to_ascii_lowercase();
        if domain.contains('*') || chaos_common::dns_key(&domain, wildcard).is_none() {
            return Err(ValueError::new(
                format!("{text:?} is not a DNS name"),
                accepted,
            ));
        }
        Ok(DnsName { domain, wildcard })
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.wildcard, self.domain.is_empty()) {
            (true, true) => f.write_str("*"),
            (true, false) => write!(f, "*.{}", self.domain),
            _ => f.write_str(&self.domain),
        }
    }
}

text_value!(
    DnsName,
    "DnsName",
    "string",
    "A DNS name (payments.example.com), *.DOMAIN for every name under it, or * for every name."
);

keyword!(
    /// A transport protocol to match.
    Protocol, "protocol" { Tcp = "tcp", Udp = "udp" }
);

keyword!(
    /// Which packets of the scope: sent, received, or both (as a pod sees it with a netns scope).
    /// A partition's `to` (the scope's packets to its peers) is egress, `from` ingress.
    Direction, "direction" { Egress = "egress" | "to", Ingress = "ingress" | "from", Both = "both" }
);

keyword!(
    /// How delay jitter is spread.
    Distribution, "distribution" {
        /// Uniform in [delay - jitter, delay + jitter].
        Uniform = "uniform",
        /// Normal around the delay with standard deviation jitter.
        Normal = "normal",
        /// netem's pareto: a heavy tail of late packets.
        Pareto = "pareto",
    }
);

keyword!(
    /// The kernel mechanism a fault asks for; `auto` picks the best this kernel supports.
    MechanismRequest, "mechanism" {
        Auto = "auto",
        CgroupSockAddr = "cgroup-sockaddr",
        FmodRet = "fmod-ret",
        BpfLsm = "bpf-lsm" | "lsm",
        KprobeOverride = "kprobe-override",
        Tcx = "tcx",
        TcClsact = "tc-clsact",
    }
);

/// TCP flags to match: any one of them (`SYN,ACK`, or a list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u32);

const TCP_FLAG_NAMES: [(&str, u32); 6] = [
    ("FIN", 0x01),
    ("SYN", 0x02),
    ("RST", 0x04),
    ("PSH", 0x08),
    ("ACK", 0x10),
    ("URG", 0x20),
];

impl FromStr for TcpFlags {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        text.split(',')
            .map(|flag| {
                let flag = flag.trim();
                TCP_FLAG_NAMES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(flag))
                    .map(|(_, bit)| *bit)
                    .ok_or_else(|| {
                        ValueError::new(
                            format!("{flag:?} is not a TCP flag"),
                            "comma-separated TCP flags: FIN, SYN, RST, PSH, ACK, URG",
                        )
                    })
            })
            .try_fold(0, |all, bit| bit.map(|b| all | b))
            .map(TcpFlags)
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = TCP_FLAG_NAMES
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(name, _)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

text_value!(
    TcpFlags,
    "TcpFlags",
    "string",
    "Comma-separated TCP flags, any of which matches: FIN, SYN, RST, PSH, ACK, URG."
);

/// How drops are spread over matching packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossModel {
    /// Each packet independently, with the probability.
    Random,
    /// Every Nth matching packet.
    EveryNth(u32),
    /// The first N matching packets.
    First(u32),
    /// Bursts: good→bad with p, bad→good with r, delivery h in bad and k in good (netem's gemodel).
    GilbertElliott { p: f64, r: f64, h: f64, k: f64 },
}

impl FromStr for LossModel {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let accepted =
            "random, every-nth:N, first:N or gilbert-elliott:P,R,H,K (fractions in [0, 1])";
        let text = text.trim();
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let count = |args: &str| match args.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ValueError::new(
                format!("{name} needs a positive count, not {args:?}"),
                accepted,
            )),
        };
        match name {
            "random" if args.is_empty() => Ok(LossModel::Random),
            "every-nth" => count(args).map(LossModel::EveryNth),
            "first" => count(args).map(LossModel::First),
            "gilbert-elliott" => {
                // Every item must parse: a typo is an error, never a silently shorter list.
                let values: Option<Vec<f64>> = args
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|v| (0.0..=1.0).contains(v))
                    })
                    .collect();
                match values.as_deref() {
                    Some(&[p, r, h, k]) => Ok(LossModel::GilbertElliott { p, r, h, k }),
                    _ => Err(ValueError::new(
                        format!("gilbert-elliott takes four fractions P,R,H,K, not {args:?}"),
                        accepted,
                    )),
                }
            }
            _ => Err(ValueError::new(
                format!("{text:?} is not a loss model"),
                accepted,
            )),
        }
    }
}

impl fmt::Display for LossModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossModel::Random => f.write_str("random"),
            LossModel::EveryNth(n) => write!(f, "every-nth:{n}"),
            LossModel::First(n) => write!(f, "first:{n}"),
            LossModel::GilbertElliott { p, r, h, k } => {
                write!(f, "gilbert-elliott:{p},{r},{h},{k}")
            }
        }
    }
}

text_value!(
    LossModel,
    "LossModel",
    "string",
    "random, every-nth:N, first:N or gilbert-elliott:P,R,H,K (netem's gemodel)."
);

/// An errno, by name or number.
pub use crate::errno::Errno;

/// Its name where it has one, else its number: what parses back to the same errno (the display
/// form, `ECONNREFUSED (111)`, is for messages).
impl Serialize for Errno {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_u32(self.0),
        }
    }
}

text_value!(
    @parse Errno,
    "Errno",
    ["string", "integer"],
    "An errno name (ECONNREFUSED) or number (111)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_and_memory_sizes_parse_as_kubernetes_writes_them() {
        assert_eq!("0.2".parse::<CpuShare>().unwrap().0, 0.2);
        assert_eq!("200m".parse::<CpuShare>().unwrap().0, 0.2);
        assert_eq!("1.5".parse::<CpuShare>().unwrap().0, 1.5);
        for bad in ["0", "-1", "fast", "2000", "0m"] {
            assert!(bad.parse::<CpuShare>().is_err(), "{bad}");
        }
        assert_eq!("64Mi".parse::<MemorySize>().unwrap().0, 64 << 20);
        assert_eq!("1Gi".parse::<MemorySize>().unwrap().0, 1 << 30);
        assert_eq!("100M".parse::<MemorySize>().unwrap().0, 100_000_000);
        assert_eq!("1048576".parse::<MemorySize>().unwrap().0, 1 << 20);
        for bad in ["64MB", "1Ki", "2Ti", "x", "64 Mi"] {
            assert!(bad.parse::<MemorySize>().is_err(), "{bad}");
        }
        assert_eq!(MemorySize(64 << 20).to_string(), "64Mi");
    }

    #[test]
    fn probabilities_are_fractions_or_percentages() {
        assert_eq!("0.3".parse::<Probability>(), Ok(Probability(0.3)));
        assert_eq!("30%".parse::<Probability>(), Ok(Probability(0.3)));
        assert_eq!("100%".parse::<Probability>(), Ok(Probability(1.0)));
        for bad in ["1.5", "-0.1", "half", "NaN", "inf", "150%", ""] {
            assert!(bad.parse::<Probability>().is_err(), "{bad}");
        }
        let err = "1.5".parse::<Probability>().unwrap_err();
        assert_eq!(err.problem, "1.5 is outside [0, 1]");
    }

    #[test]
    fn cidrs_parse_and_clear_host_bits() {
        let cidr: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(cidr.network_bytes(), vec![10, 1, 0, 0]);
        assert_eq!(cidr.to_string(), "10.1.0.0/16");
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!("fd00::1/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        assert_eq!(
            "10.31.255.255/12".parse::<Cidr>().unwrap().network_bytes(),
            vec![10, 16, 0, 0]
        );
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
        let cidr: Cidr = "10.1.2.3/32".parse().unwrap();
        assert_eq!(cidr.truncated(16).to_string(), "10.1.0.0/16");
        assert_eq!(cidr.truncated(0), Cidr::everything(false));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            "5432".parse::<PortRange>(),
            Ok(PortRange {
                first: 5432,
                last: 5432
            })
        );
        assert_eq!(
            "80-90".parse::<PortRange>(),
            Ok(PortRange {
                first: 80,
                last: 90
            })
        );
        for bad in ["0", "65536", "90-80", "http", "-1", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!(
            "70000".parse::<PortRange>().unwrap_err().to_string(),
            "70000 is not a port; accepted: a port from 1 to 65535, or a range such as 8000-8100"
        );
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
    fn loss_models_reject_every_malformed_item() {
        assert_eq!("every-nth:3".parse(), Ok(LossModel::EveryNth(3)));
        assert_eq!(
            "gilbert-elliott:0.1,0.5,0.2,1".parse(),
            Ok(LossModel::GilbertElliott {
                p: 0.1,
                r: 0.5,
                h: 0.2,
                k: 1.0
            })
        );
        for bad in [
            "gilbert-elliott:0.1,x,0.2,0.3,0.4",
            "gilbert-elliott:0.1,0.2,0.3",
            "gilbert-elliott:0.1,0.2,0.3,1.5",
            "every-nth:0",
            "first:",
            "random:3",
            "bursty",
        ] {
            assert!(bad.parse::<LossModel>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_and_sizes_as_tc_writes_them() {
        assert_eq!("1mbit".parse::<Rate>().unwrap().bits_per_sec, 1_000_000);
        assert_eq!("125KBPS".parse::<Rate>().unwrap().bits_per_sec, 1_000_000);
        assert_eq!("2.5gbit".parse::<Rate>().unwrap().to_string(), "2500mbit");
        for bad in ["0mbit", "1", "fast", "1mbits", "-1kbit"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.accepted.contains("1mbit"), "{bad:?}: {err}");
        }
        assert_eq!("32kb".parse::<ByteSize>(), Ok(ByteSize(32 * 1024)));
        assert_eq!("1500".parse::<ByteSize>(), Ok(ByteSize(1500)));
        assert!("2gb".parse::<ByteSize>().is_err());
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn dns_names_exact_wildcard_and_everything() {
        let name: DnsName = "Payments.Example.COM.".parse().unwrap();
        assert_eq!(
            (name.domain.as_str(), name.wildcard),
            ("payments.example.com", false)
        );
        let suffix: DnsName = "*.svc.cluster.local".parse().unwrap();
        assert_eq!(suffix.to_string(), "*.svc.cluster.local");
        assert_eq!("*".parse::<DnsName>().unwrap().to_string(), "*");
        let long_label = format!("{}.com", "x".repeat(64));
        for bad in ["", "a..b", "a.*.b", "**.b", &long_label] {
            let err = bad.parse::<DnsName>().unwrap_err();
            assert!(err.accepted.contains("1 to 63 bytes"), "{bad:?}: {err}");
        }
        assert_eq!("SERVFAIL".parse(), Ok(DnsRcode::ServFail));
        assert_eq!(DnsRcode::NxDomain.wire_value(), Some(3));
        assert!(
            "NOERROR"
                .parse::<DnsRcode>()
                .unwrap_err()
                .accepted
                .contains("timeout")
        );
        assert_eq!("AAAA".parse::<DnsQtype>().map(DnsQtype::wire_value), Ok(28));
    }

    #[test]
    fn keywords_and_flags() {
        assert_eq!("LSM".parse(), Ok(MechanismRequest::BpfLsm));
        assert_eq!("connect-error".parse(), Ok(FaultKind::ConnectError));
        assert_eq!(
            "udp2".parse::<Protocol>().unwrap_err().to_string(),
            "\"udp2\" is not a protocol; accepted: tcp, udp"
        );
        assert_eq!("syn,ACK".parse(), Ok(TcpFlags(0x12)));
        assert_eq!(TcpFlags(0x12).to_string(), "SYN,ACK");
        assert!("SYN,NOPE".parse::<TcpFlags>().is_err());
    }

    #[test]
    fn durations_are_human_and_positive() {
        assert_eq!("2m".parse(), Ok(HumanDuration(Duration::from_secs(120))));
        for bad in ["0s", "soon", "", "-5s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
    }
}
