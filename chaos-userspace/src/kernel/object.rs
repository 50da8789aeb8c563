//! The kernel object, embedded so that `chaos-bpf` is a single file to copy to a host.
use aya::{Ebpf, EbpfLoader};

pub static CHAOS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos"));

/// Parses the object and creates its maps for one rule; programs are loaded one by one, on
/// demand.
pub fn load() -> Result<Ebpf, aya::EbpfError> {
    load_for_rules(1)
}

/// The same, with the per-rule maps sized for `rules` rules.
pub fn load_for_rules(rules: u32) -> Result<Ebpf, aya::EbpfError> {
    // Once per process, before the first maps are made; a refusal matters only on kernels
    // before 5.11, where the load then fails with EPERM and says so.
    static MEMLOCK: std::sync::Once = std::sync::Once::new();
    MEMLOCK.call_once(|| {
        let _ = crate::sys::raise_memlock();
    });
    let mut loader = EbpfLoader::new();
    // The process's one parse of the kernel's BTF: `EbpfLoader::new` parses vmlinux again on
    // every load (tens of megabytes of allocations each time an idle agent arms a fault).
    loader.btf(crate::kernel_btf::kernel().ok().map(|kernel| &kernel.aya));
    for (name, per_rule) in chaos_common::maps::PER_RULE {
        loader.map_max_entries(name, per_rule * rules.max(1));
    }
    loader.load(CHAOS_OBJECT)
}
