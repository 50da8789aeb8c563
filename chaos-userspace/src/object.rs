//! The kernel object, embedded so that `chaos-bpf` is a single file to copy to a host.
use aya::{Ebpf, EbpfLoader};

pub static CHAOS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos"));

/// Parses the object and creates its maps; programs are loaded one by one, on demand.
pub fn load() -> Result<Ebpf, aya::EbpfError> {
    EbpfLoader::new().load(CHAOS_OBJECT)
}
