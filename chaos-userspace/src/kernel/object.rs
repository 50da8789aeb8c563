//! The kernel object, embedded so that `chaos-bpf` is a single file to copy to a host.
use aya::{Ebpf, EbpfLoader};

pub static CHAOS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos"));

/// Rules one shared object holds at most (the agent's default `--max-faults`): its per-rule
/// maps are sized at load, and with more faults of one mechanism armed at once a second object
/// is loaded. A probe sizes the object it verifies a program in the same way, so the first arm
/// can take it over.
pub const SHARED_CAPACITY: u32 = 1024;

/// Parses the object and creates its maps for one rule; programs are loaded one by one, on
/// demand.
pub fn load() -> Result<Ebpf, aya::EbpfError> {
    load_for_rules(1)
}

/// The same, with the per-rule maps sized for `rules` rules.
pub fn load_for_rules(rules: u32) -> Result<Ebpf, aya::EbpfError> {
    let mut loader = loader()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, per_rule) in chaos_common::maps::PER_RULE {
        loader.map_max_entries(name, per_rule * rules.max(1));
    }
    loader.load(CHAOS_OBJECT)
}

/// Makes the loader on a thread of its own while the caller goes on planning: making it reads
/// and parses the kernel's BTF (about 10 ms), which a one-fault launch otherwise waits for
/// before its first program loads.
pub fn prepare_loader() {
    std::thread::spawn(|| {
        let _ = loader();
    });
}

/// One loader per process: `EbpfLoader::new` parses the kernel's BTF (megabytes, hundreds of
/// thousands of small reads) every time it is called, so a probe and an arm each paid for a
/// parse. This one is made once and reused by every load.
fn loader() -> &'static std::sync::Mutex<EbpfLoader<'static>> {
    static LOADER: std::sync::OnceLock<std::sync::Mutex<EbpfLoader<'static>>> =
        std::sync::OnceLock::new();
    LOADER.get_or_init(|| {
        // Before the first maps are made; a refusal matters only on kernels before 5.11, where
        // the load then fails with EPERM and says so.
        let _ = crate::kernel::sys::raise_memlock();
        let mut loader = EbpfLoader::new();
        // The object has no CO-RE relocations (Rust eBPF emits none), so aya's parse of the
        // kernel's BTF, which `new` cannot skip, is dropped at once: megabytes a process would
        // otherwise hold for nothing. What needs the kernel's BTF reads `kernel_btf`.
        loader.btf(None);
        std::sync::Mutex::new(loader)
    })
}
