//! The running kernel's BTF, read once per process and held in one value: aya's parse (what
//! loading LSM and fmod_ret programs needs) and the struct layouts the programs read. Rust eBPF
//! has no CO-RE relocations, so programs that read kernel structs get the offsets through their
//! configuration; they are computed once, with btf-rs, because aya keeps its type walk private.
use btf_rs::{Btf, Struct, Type};
use chaos_common::{FdOffsets, FileOffsets, SockOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What chaos-bpf needs from the kernel's BTF (several megabytes: parsed once).
pub struct KernelBtf {
    pub aya: aya::Btf,
    /// The struct layouts, walked only when a program that reads kernel structs is armed (the
    /// global hooks): a cgroup or TC fault never pays for them.
    layouts: std::sync::OnceLock<Layouts>,
}

/// Each layout, or why the kernel's BTF does not give it.
struct Layouts {
    sock: Result<SockOffsets, String>,
    fd: Result<FdOffsets, String>,
    file: Result<FileOffsets, String>,
}

/// The kernel's BTF, or why there is none.
pub fn kernel() -> Result<&'static KernelBtf, String> {
    static KERNEL: std::sync::OnceLock<Result<KernelBtf, String>> = std::sync::OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let aya = aya::Btf::from_sys_fs().map_err(|err| format!("{VMLINUX_BTF}: {err}"))?;
            Ok(KernelBtf {
                aya,
                layouts: std::sync::OnceLock::new(),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl KernelBtf {
    fn layouts(&self) -> &Layouts {
        self.layouts.get_or_init(|| {
            // Read whole, then parsed in memory: btf-rs's file reader seeks once per read.
            let parsed = std::fs::read(VMLINUX_BTF)
                .map_err(|err| format!("{VMLINUX_BTF}: {err}"))
                .and_then(|bytes| {
                    Btf::from_bytes(&bytes).map_err(|err| format!("{VMLINUX_BTF}: {err}"))
                });
            match parsed {
                Ok(btf) => Layouts {
                    sock: read_sock_offsets(&btf),
                    fd: read_fd_offsets(&btf),
                    file: read_file_offsets(&btf),
                },
                Err(err) => Layouts {
                    sock: Err(err.clone()),
                    fd: Err(err.clone()),
                    file: Err(err),
                },
            }
        })
    }
}

/// Offsets of the socket fields the syscall-fault programs read.
pub fn sock_offsets() -> Result<SockOffsets, String> {
    kernel()?.layouts().sock.clone()
}

/// Offsets the kprobe programs need to go from a syscall's descriptor to its socket.
pub fn fd_offsets() -> Result<FdOffsets, String> {
    kernel()?.layouts().fd.clone()
}

/// Offsets io-error's programs need to walk from a file up its directories.
pub fn file_offsets() -> Result<FileOffsets, String> {
    kernel()?.layouts().file.clone()
}

fn read_file_offsets(btf: &Btf) -> Result<FileOffsets, String> {
    Ok(FileOffsets {
        file_dentry: member_offset(btf, "file", "f_path")? + member_offset(btf, "path", "dentry")?,
        dentry_parent: member_offset(btf, "dentry", "d_parent")?,
        dentry_inode: member_offset(btf, "dentry", "d_inode")?,
        inode_ino: member_offset(btf, "inode", "i_ino")?,
        inode_sb: member_offset(btf, "inode", "i_sb")?,
        sb_dev: member_offset(btf, "super_block", "s_dev")?,
        _pad: [0; 2],
    })
}

fn read_sock_offsets(btf: &Btf) -> Result<SockOffsets, String> {
    // `struct sock` starts with `struct sock_common __sk_common`; check rather than assume.
    let common = member_offset(btf, "sock", "__sk_common")?;
    let in_sock = |member: &str| member_offset(btf, "sock_common", member).map(|o| o + common);
    Ok(SockOffsets {
        socket_sk: member_offset(btf, "socket", "sk")?,
        socket_type: member_offset(btf, "socket", "type")?,
        skc_family: in_sock("skc_family")?,
        skc_daddr: in_sock("skc_daddr")?,
        skc_dport: in_sock("skc_dport")?,
        skc_v6_daddr: in_sock("skc_v6_daddr")?,
        _pad: [0; 2],
    })
}

fn read_fd_offsets(btf: &Btf) -> Result<FdOffsets, String> {
    let (regs_arg0, regs_arg1) = syscall_argument_offsets(btf)?;
    Ok(FdOffsets {
        regs_arg0,
        regs_arg1,
        task_files: member_offset(btf, "task_struct", "files")?,
        files_fdt: member_offset(btf, "files_struct", "fdt")?,
        fdtable_max_fds: member_offset(btf, "fdtable", "max_fds")?,
        fdtable_fd: member_offset(btf, "fdtable", "fd")?,
        file_inode: member_offset(btf, "file", "f_inode")?,
        file_private_data: member_offset(btf, "file", "private_data")?,
        inode_mode: member_offset(btf, "inode", "i_mode")?,
        _pad: [0; 3],
    })
}

/// Where the first two syscall arguments sit in `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
fn syscall_argument_offsets(btf: &Btf) -> Result<(u16, u16), String> {
    Ok((
        member_offset(btf, "pt_regs", "di")?,
        member_offset(btf, "pt_regs", "si")?,
    ))
}

#[cfg(target_arch = "aarch64")]
fn syscall_argument_offsets(btf: &Btf) -> Result<(u16, u16), String> {
    let regs = member_offset(btf, "user_pt_regs", "regs")?;
    Ok((regs, regs + 8))
}

/// Byte offset of `member` in `struct struct_name`, looking inside anonymous structs and unions.
fn member_offset(btf: &Btf, struct_name: &str, member: &str) -> Result<u16, String> {
    let types = btf
        .resolve_types_by_name(struct_name)
        .map_err(|err| format!("struct {struct_name} not in BTF: {err}"))?;
    let found = types.iter().find_map(|ty| match ty {
        Type::Struct(s) => find_member(btf, s, member, 0),
        _ => None,
    });
    let bits = found.ok_or_else(|| format!("struct {struct_name} has no member {member}"))?;
    if bits % 8 != 0 {
        return Err(format!("{struct_name}.{member} is a bitfield"));
    }
    u16::try_from(bits / 8).map_err(|_| format!("{struct_name}.{member} is beyond 64 KiB"))
}

fn find_member(btf: &Btf, parent: &Struct, name: &str, base_bits: u32) -> Option<u32> {
    for member in &parent.members {
        let offset = base_bits + member.bit_offset();
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == name {
            return Some(offset);
        }
        if member_name.is_empty()
            && let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(member)
            && let Some(found) = find_member(btf, &inner, name, offset)
        {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF; the layout of `sock_common` is stable ABI-wise
    /// for the first fields, which this pins.
    #[test]
    fn sock_offsets_resolve_on_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            println!("skipped: {VMLINUX_BTF} absent (CONFIG_DEBUG_INFO_BTF off)");
            return;
        }
        let offsets = sock_offsets().expect("offsets");
        assert_eq!(offsets.skc_daddr, 0, "skc_daddr opens sock_common");
        assert_eq!(offsets.skc_dport, 12);
        assert_eq!(offsets.skc_family, 16);
        assert!(offsets.skc_v6_daddr > offsets.skc_family);
        assert!(offsets.socket_sk > offsets.socket_type);
        let fd = fd_offsets().expect("fd offsets");
        // x86_64's pt_regs: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ...
        #[cfg(target_arch = "x86_64")]
        assert_eq!((fd.regs_arg0, fd.regs_arg1), (14 * 8, 13 * 8));
        assert!(fd.task_files > 0 && fd.fdtable_fd != fd.fdtable_max_fds);
    }
}
