//! Which interfaces keep this node reachable: those of its default routes (IPv4 and IPv6) and
//! the one of the route to the Kubernetes API server. A TC fault that takes all of their traffic
//! cuts the kubelet off from the API server and the agent off from its callers.
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// An interface that carries the node's reachability, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub iface: String,
    pub carries: String,
}

/// The interfaces of this network namespace's default routes, and of the route to the API
/// server when this process runs in a pod (`KUBERNETES_SERVICE_HOST`).
pub fn uplinks() -> Vec<Uplink> {
    let mut found: Vec<Uplink> = Vec::new();
    let mut add = |iface: String, carries: String| {
        if !found.iter().any(|u| u.iface == iface) {
            found.push(Uplink { iface, carries });
        }
    };
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for iface in default_routes_v4(&v4) {
        add(iface, "this node's default route".into());
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for iface in default_routes_v6(&v6) {
        add(iface, "this node's IPv6 default route".into());
    }
    let api_server = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .and_then(|host| host.parse::<IpAddr>().ok());
    if let Some(address) = api_server
        && let Some(iface) = route_to(address)
    {
        add(iface, format!("the route to the API server ({address})"));
    }
    found
}

/// `/proc/net/route`: a destination and mask of 0 is a default route.
fn default_routes_v4(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            (fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000")
                .then(|| fields[0].to_string())
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination ::/0, skipping the kernel's unreachable entries on lo.
fn default_routes_v6(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // dst dst_len src src_len next_hop metric refcnt use flags iface
            let default = fields.len() == 10
                && fields[0].bytes().all(|b| b == b'0')
                && fields[1] == "00"
                && fields[9] != "lo";
            default.then(|| fields[9].to_string())
        })
        .collect()
}

/// The interface the kernel would send to `address` from: a connected UDP socket sends nothing
/// but takes the route's source address, whose interface is the one asked for.
fn route_to(address: IpAddr) -> Option<String> {
    let bind: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(address, 443)).ok()?;
    let local = socket.local_addr().ok()?.ip();
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let matches = ifa.address.as_ref().is_some_and(|a| {
            a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())) == Some(local)
                || a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())) == Some(local)
        });
        matches.then_some(ifa.interface_name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_from_the_proc_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  veth1\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        assert_eq!(default_routes_v4(v4), ["eth0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n";
        assert_eq!(default_routes_v6(v6), ["eth1"]);
        assert!(default_routes_v4("").is_empty());
    }
}
