//! The little rtnetlink chaos-bpf needs that aya does not offer: adding and deleting a qdisc by
//! kind, and listing links (to find a pod's veth peer).
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// Parent of the clsact qdisc (TC_H_CLSACT).
pub const TC_H_CLSACT: u32 = 0xFFFF_FFF1;

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: send(2) of a valid buffer on an owned socket.
        if unsafe {
            libc::send(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv(2) into a valid buffer on an owned socket.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn header(kind: u16, flags: i32, body_len: usize) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + body_len);
    msg.extend_from_slice(&((16 + body_len) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | flags) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg
}

/// A netlink attribute (type, value), padded to 4 bytes.
pub fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut attr = Vec::with_capacity(len.div_ceil(4) * 4);
    attr.extend_from_slice(&(len as u16).to_ne_bytes());
    attr.extend_from_slice(&kind.to_ne_bytes());
    attr.extend_from_slice(value);
    attr.resize(len.div_ceil(4) * 4, 0);
    attr
}

/// Sends a request and waits for its acknowledgement.
fn request_ack(message: &[u8]) -> io::Result<()> {
    let socket = Socket::open()?;
    socket.send(message)?;
    let mut reply = [0u8; 4096];
    let n = socket.recv(&mut reply)?;
    if n < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected netlink reply"));
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(-code)),
    }
}

fn qdisc_message(
    kind_of_message: u16,
    flags: i32,
    ifindex: i32,
    parent: u32,
    handle: u32,
    kind: &str,
    options: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = Vec::new();
    // struct tcmsg: family, padding, ifindex, handle, parent, info.
    body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&handle.to_ne_bytes());
    body.extend_from_slice(&parent.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut name = kind.as_bytes().to_vec();
    name.push(0);
    body.extend(attribute(TCA_KIND, &name));
    if let Some(options) = options {
        body.extend(attribute(TCA_OPTIONS, options));
    }
    let mut msg = header(kind_of_message, flags, body.len());
    msg.extend(body);
    msg
}

/// Adds a root qdisc of `kind` (such as "fq") to `ifindex` in the calling thread's namespace.
pub fn add_root_qdisc(ifindex: i32, kind: &str) -> io::Result<()> {
    let flags = libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    request_ack(&qdisc_message(
        RTM_NEWQDISC,
        flags,
        ifindex,
        TC_H_ROOT,
        0,
        kind,
        None,
    ))
}

/// Puts a root qdisc of `kind` with `handle` and raw `options` (its TCA_OPTIONS payload) on
/// `ifindex`, replacing the current root (fq for delay; netem, which the benchmark compares with).
pub fn replace_root(
    ifindex: i32,
    kind: &str,
    handle: u32,
    options: Option<&[u8]>,
) -> io::Result<()> {
    let flags = libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
    request_ack(&qdisc_message(
        RTM_NEWQDISC,
        flags,
        ifindex,
        TC_H_ROOT,
        handle,
        kind,
        options,
    ))
}

/// Adds a clsact qdisc; `AlreadyExists` when the interface has one.
pub fn add_clsact(ifindex: i32) -> io::Result<()> {
    let flags = libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    request_ack(&qdisc_message(
        RTM_NEWQDISC,
        flags,
        ifindex,
        TC_H_CLSACT,
        0xFFFF_0000,
        "clsact",
        None,
    ))
}

/// Deletes the clsact qdisc, and with it every filter on it.
pub fn delete_clsact(ifindex: i32) -> io::Result<()> {
    request_ack(&qdisc_message(
        RTM_DELQDISC,
        libc::NLM_F_ACK,
        ifindex,
        TC_H_CLSACT,
        0xFFFF_0000,
        "clsact",
        None,
    ))
}

/// The handle chaos-bpf gives the fq root qdisc it installs for delay ("ca05:"), so it can tell
/// its own from one an operator configured.
pub const CHAOS_FQ_HANDLE: u32 = 0xCA05_0000;

/// Replaces the interface's root qdisc with fq (handle [`CHAOS_FQ_HANDLE`]).
pub fn replace_root_with_fq(ifindex: i32) -> io::Result<()> {
    replace_root(ifindex, "fq", CHAOS_FQ_HANDLE, None)
}

/// Deletes the root qdisc with `handle`; the kernel puts the interface's default back.
pub fn delete_root(ifindex: i32, handle: u32, kind: &str) -> io::Result<()> {
    request_ack(&qdisc_message(
        RTM_DELQDISC,
        libc::NLM_F_ACK,
        ifindex,
        TC_H_ROOT,
        handle,
        kind,
        None,
    ))
}

/// A root qdisc as rtnetlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

/// Every qdisc in the calling thread's network namespace.
pub fn qdiscs() -> io::Result<Vec<Qdisc>> {
    let body = [0u8; 20]; // struct tcmsg, all zero: every interface
    dump(RTM_GETQDISC, &body, RTM_NEWQDISC, |payload| {
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
        };
        let kind = attributes(payload.get(20..).unwrap_or_default())
            .find(|(k, _)| *k == TCA_KIND)
            .map(|(_, v)| c_string(v))
            .unwrap_or_default();
        Qdisc {
            ifindex: word(4) as i32,
            handle: word(8),
            parent: word(12),
            kind,
        }
    })
}

/// One network interface as rtnetlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: i32,
    pub name: String,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<i32>,
    /// IFLA_INFO_KIND, such as "veth".
    pub kind: Option<String>,
    /// IFF_UP is set.
    pub up: bool,
    /// ARPHRD_* (1 for Ethernet, 772 for loopback).
    pub link_type: u16,
    /// IFLA_MASTER: the bridge, bond or VRF this link is enslaved to.
    pub master: Option<i32>,
    /// IFLA_LINK names a link in another namespace (IFLA_LINK_NETNSID is present).
    pub link_elsewhere: bool,
}

/// Every link in the calling thread's network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    dump(RTM_GETLINK, &[0u8; 16], RTM_NEWLINK, parse_link)
}

/// Sends a dump request and parses every reply of type `reply` with `parse`.
fn dump<T>(
    request: u16,
    body: &[u8],
    reply: u16,
    parse: impl Fn(&[u8]) -> T,
) -> io::Result<Vec<T>> {
    let socket = Socket::open()?;
    let mut msg = header(request, libc::NLM_F_DUMP, body.len());
    msg.extend_from_slice(body);
    socket.send(&msg)?;
    let mut items = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut buf)?;
        let mut offset = 0;
        while offset + 16 <= n {
            let len =
                u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes([buf[offset + 4], buf[offset + 5]]);
            if len < 16 || offset + len > n {
                return Err(io::Error::other("malformed netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(items),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(
                        buf[offset + 16..offset + 20].try_into().unwrap_or_default(),
                    );
                    return Err(io::Error::from_raw_os_error(-code));
                }
                k if k == reply => items.push(parse(&buf[offset + 16..offset + len])),
                _ => {}
            }
            offset += len.div_ceil(4) * 4;
        }
    }
}

fn parse_link(payload: &[u8]) -> Link {
    let ifindex = payload
        .get(4..8)
        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
    let flags = payload
        .get(8..12)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()));
    let link_type = payload
        .get(2..4)
        .map_or(0, |b| u16::from_ne_bytes(b.try_into().unwrap_or_default()));
    let mut link = Link {
        ifindex,
        name: String::new(),
        link: None,
        kind: None,
        up: flags & libc::IFF_UP as u32 != 0,
        link_type,
        master: None,
        link_elsewhere: false,
    };
    for (kind, value) in attributes(payload.get(16..).unwrap_or_default()) {
        match kind {
            IFLA_IFNAME => link.name = c_string(value),
            IFLA_LINK => {
                link.link = value
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
            }
            IFLA_MASTER => {
                link.master = value
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
            }
            IFLA_LINK_NETNSID => link.link_elsewhere = true,
            IFLA_LINKINFO => {
                link.kind = attributes(value)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| c_string(v));
            }
            _ => {}
        }
    }
    link
}

fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3FFF; // without NLA_F_NESTED etc.
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = data.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((kind, value))
    })
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_walk_padding_and_nesting() {
        let mut data = attribute(IFLA_IFNAME, b"eth0\0");
        data.extend(attribute(IFLA_LINK, &7i32.to_ne_bytes()));
        let info = attribute(IFLA_INFO_KIND, b"veth\0");
        data.extend(attribute(IFLA_LINKINFO | 0x8000, &info));
        let mut payload = vec![0u8; 16];
        payload[4..8].copy_from_slice(&3i32.to_ne_bytes());
        payload[2..4].copy_from_slice(&1u16.to_ne_bytes());
        payload[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        payload.extend(data);
        let link = parse_link(&payload);
        assert_eq!(
            link,
            Link {
                ifindex: 3,
                name: "eth0".into(),
                link: Some(7),
                kind: Some("veth".into()),
                up: true,
                link_type: 1,
                master: None,
                link_elsewhere: false,
            }
        );
    }

    #[test]
    fn qdiscs_lists_loopbacks_root() {
        let qdiscs = qdiscs().expect("rtnetlink dump");
        assert!(
            qdiscs
                .iter()
                .any(|q| q.ifindex == 1 && q.parent == TC_H_ROOT),
            "{qdiscs:?}"
        );
    }

    #[test]
    fn links_lists_loopback() {
        let links = links().expect("rtnetlink dump");
        assert!(
            links.iter().any(|l| l.name == "lo" && l.ifindex == 1),
            "{links:?}"
        );
    }
}
