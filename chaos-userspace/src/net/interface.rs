//! Interface scopes for TC faults: an interface by name, or the host-side veth of a pod's network
//! namespace (found through rtnetlink inside that namespace).
use std::{fs::File, os::fd::AsFd as _, path::Path};

use crate::{
    error::{ChaosError, Result},
    filters::Direction,
    net::netlink,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceScope {
    pub name: String,
    pub ifindex: u32,
    /// Set for `--netns`: the interface is the pod's host-side veth, where the pod's egress is
    /// this interface's ingress and the other way round.
    pub pod_netns: Option<String>,
    /// A veth end: packets arriving on it still carry the sending socket (and its cgroup).
    pub veth: bool,
}

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// Which TC hooks of the interface a fault attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    pub egress: bool,
    pub ingress: bool,
}

impl InterfaceScope {
    /// The interface `name` among `links` (this namespace's, listed once per batch).
    pub fn by_name(name: &str, links: &[netlink::Link]) -> Result<Self> {
        let link = links.iter().find(|l| l.name == name).ok_or_else(|| {
            ChaosError::input(
                "scope.iface",
                format!("no interface named {name:?} here"),
                "an interface name, as `ip link` lists",
            )
        })?;
        Ok(Self {
            name: name.to_string(),
            ifindex: link.ifindex as u32,
            pod_netns: None,
            veth: link.kind.as_deref() == Some("veth"),
        })
    }

    /// Where a cgroup's packets may leave this network namespace: every interface that is up,
    /// Ethernet or loopback, and not under another one. Enslaved ports (bridge, bond, VRF) and
    /// the lower devices of VLANs and macvlans would see the same packet a second time, socket
    /// and all, and fault it twice; L3 devices (tunnels, WireGuard) carry no Ethernet header.
    pub fn every_up(links: &[netlink::Link]) -> Vec<Self> {
        let under_another: Vec<i32> = links
            .iter()
            .filter(|l| {
                matches!(
                    l.kind.as_deref(),
                    Some("vlan" | "macvlan" | "macvtap" | "ipvlan")
                ) && !l.link_elsewhere
            })
            .filter_map(|l| l.link)
            .collect();
        links
            .iter()
            .filter(|link| {
                link.up
                    && matches!(link.link_type, ARPHRD_ETHER | ARPHRD_LOOPBACK)
                    && link.master.is_none()
                    && !under_another.contains(&link.ifindex)
            })
            .filter_map(|link| {
                Some(Self {
                    ifindex: u32::try_from(link.ifindex).ok()?,
                    name: link.name.clone(),
                    pod_netns: None,
                    veth: link.kind.as_deref() == Some("veth"),
                })
            })
            .collect()
    }

    /// The host-side peer of the veth inside the network namespace at `path`
    /// (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
    pub fn host_side_of(path: &Path) -> Result<Self> {
        let accepted = "a network namespace file (/var/run/netns/NAME or /proc/PID/ns/net) with a veth whose peer is in this namespace";
        let netns = File::open(path).map_err(|err| {
            ChaosError::input(
                "scope.netns",
                format!("{}: {err}", path.display()),
                accepted,
            )
        })?;
        let inside = std::thread::scope(|scope| {
            scope
                .spawn(|| -> std::io::Result<Vec<netlink::Link>> {
                    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    netlink::links()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
        })
        .map_err(|err| {
            ChaosError::input(
                "scope.netns",
                format!("{}: {err}", path.display()),
                accepted,
            )
        })?;
        let peer = inside
            .iter()
            .filter(|link| link.kind.as_deref() == Some("veth"))
            .find_map(|link| link.link)
            .ok_or_else(|| {
                ChaosError::input(
                    "scope.netns",
                    format!("{} has no veth", path.display()),
                    accepted,
                )
            })?;
        let ifindex = u32::try_from(peer)
            .map_err(|_| ChaosError::input("scope.netns", "bad peer index", accepted))?;
        let name = name_of(ifindex).ok_or_else(|| {
            ChaosError::input(
                "scope.netns",
                format!("the veth peer (ifindex {ifindex}) is not in this namespace"),
                accepted,
            )
        })?;
        Ok(Self {
            name,
            ifindex,
            pod_netns: Some(path.display().to_string()),
            veth: true,
        })
    }

    /// The hooks for `direction` as the scope sees it: swapped on a pod's host-side veth.
    pub fn hooks(&self, direction: Direction) -> Hooks {
        let plain = Self::plain_hooks(direction);
        if self.pod_netns.is_some() {
            Hooks {
                egress: plain.ingress,
                ingress: plain.egress,
            }
        } else {
            plain
        }
    }

    /// The hooks for `direction` on an interface that is not a pod's host-side veth.
    pub fn plain_hooks(direction: Direction) -> Hooks {
        match direction {
            Direction::Egress => Hooks {
                egress: true,
                ingress: false,
            },
            Direction::Ingress => Hooks {
                egress: false,
                ingress: true,
            },
            Direction::Both => Hooks {
                egress: true,
                ingress: true,
            },
        }
    }
}

pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has IF_NAMESIZE bytes, as the call requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_unknown_names_are_input_errors() {
        let links = netlink::links().expect("rtnetlink dump");
        assert_eq!(InterfaceScope::by_name("lo", &links).unwrap().ifindex, 1);
        let err = InterfaceScope::by_name("nope0", &links)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("scope.iface: no interface named \"nope0\""),
            "{err}"
        );
    }

    #[test]
    fn pod_directions_are_swapped_on_the_host_side() {
        let host = InterfaceScope {
            name: "veth1".into(),
            ifindex: 9,
            pod_netns: Some("/x".into()),
            veth: true,
        };
        assert_eq!(
            host.hooks(Direction::Egress),
            Hooks {
                egress: false,
                ingress: true
            }
        );
        let plain = InterfaceScope {
            pod_netns: None,
            ..host
        };
        assert_eq!(
            plain.hooks(Direction::Egress),
            Hooks {
                egress: true,
                ingress: false
            }
        );
    }
}
