//! The little rtnetlink chaos-bpf needs that aya does not offer: adding a root qdisc by kind.
use std::{io, mem::size_of};

const RTM_NEWQDISC: u16 = 36;
const NLMSG_ERROR: u16 = 2;
const TCA_KIND: u16 = 1;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// Adds a root qdisc of `kind` (such as "fq") to `ifindex` in the calling thread's namespace.
pub fn add_root_qdisc(ifindex: i32, kind: &str) -> io::Result<()> {
    let mut kind_attr = kind.as_bytes().to_vec();
    kind_attr.push(0);
    let attr_len = 4 + kind_attr.len();
    let attr_padded = attr_len.div_ceil(4) * 4;
    let tcmsg_len = 20;
    let total = 16 + tcmsg_len + attr_padded;

    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWQDISC.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct tcmsg: family, padding, ifindex, handle, parent, info.
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&TC_H_ROOT.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&TCA_KIND.to_ne_bytes());
    msg.extend_from_slice(&kind_attr);
    msg.resize(total, 0);

    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut reply = [0u8; 1024];
            let n = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < 16 + size_of::<i32>() {
                return Err(io::Error::other("short netlink reply"));
            }
            let kind = u16::from_ne_bytes([reply[4], reply[5]]);
            if kind != NLMSG_ERROR {
                return Err(io::Error::other(format!(
                    "unexpected netlink reply type {kind}"
                )));
            }
            let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            match code {
                0 => Ok(()),
                code => Err(io::Error::from_raw_os_error(-code)),
            }
        })();
        libc::close(fd);
        result
    }
}
