//! What keeps this node reachable: the interfaces of its default routes (IPv4 and IPv6) and of
//! the route to the Kubernetes API server, the API server's addresses, and the agent's own port.
//! A TC fault that takes all of an uplink's traffic cuts the kubelet off from the API server and
//! the agent off from its callers; forced anyway, it spares those by default.
use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _, UdpSocket},
    sync::OnceLock,
};

/// Where kubelets keep the kubeconfig that names their API server: kubeadm, EKS and other
/// bootstrap scripts, k3s.
const KUBELET_KUBECONFIGS: &[&str] = &[
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/kubeconfig",
    "/etc/kubernetes/kubelet/kubeconfig",
    "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
];

/// The agent's API port, set once when it listens on TCP.
static AGENT_PORT: OnceLock<u16> = OnceLock::new();

/// Called by the agent when its API listens on a TCP port, which node-level faults then spare.
pub fn set_agent_port(port: u16) {
    let _ = AGENT_PORT.set(port);
}

pub fn agent_port() -> Option<u16> {
    AGENT_PORT.get().copied()
}

/// The API server's addresses as this node reaches them: the servers of the kubelet's
/// kubeconfig (read through PID 1's root, so the DaemonSet's agent sees the host's files with
/// hostPID), and `KUBERNETES_SERVICE_HOST` in a pod. Names are resolved; what cannot be read
/// or resolved is left out.
pub fn api_servers() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut servers: Vec<(String, u16)> = Vec::new();
    for path in KUBELET_KUBECONFIGS {
        let on_host = format!("/proc/1/root{path}");
        let Ok(config) = kube::config::Kubeconfig::read_from(&on_host)
            .or_else(|_| kube::config::Kubeconfig::read_from(path))
        else {
            continue;
        };
        for cluster in config.clusters {
            let server = cluster.cluster.and_then(|c| c.server);
            if let Some(uri) = server.and_then(|s| s.parse::<hyper::Uri>().ok())
                && let Some(host) = uri.host()
            {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                servers.push((host.to_string(), uri.port_u16().unwrap_or(443)));
            }
        }
    }
    if let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") {
        servers.push((host, 443));
    }
    for (host, port) in servers {
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(address) => vec![address],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map(|all| all.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        for address in addresses {
            if !found.contains(&address) {
                found.push(address);
            }
        }
    }
    found
}

/// An interface that carries the node's reachability, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub iface: String,
    pub carries: String,
}

/// The interfaces of this network namespace's default routes, and of the routes to the API
/// server's addresses.
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
    for address in api_servers() {
        if let Some(iface) = route_to(address) {
            add(iface, format!("the route to the API server ({address})"));
        }
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
