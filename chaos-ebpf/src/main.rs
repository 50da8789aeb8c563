//! chaos-bpf's kernel programs. Each fault mechanism has its own module; matching, randomness and
//! telemetry are shared so every mechanism decides and reports the same way.
#![no_std]
// On the host (`cargo build --workspace`) this is an empty program, so workspace-wide builds link.
#![cfg_attr(target_arch = "bpf", no_main)]
// For `socket_ops::negative_errno`: the one place that needs exact instructions.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod connect;
mod connection_limit;
mod dns;
mod file_io;
mod fmod_ret;
mod kprobe_override;
mod lsm;
mod maps;
mod matching;
mod packet_drop;
mod probes;
mod socket_ops;
mod tc;
mod telemetry;

// On the host (`cargo clippy --workspace`) a dependency links std, which brings its own.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves panics unreachable; this only satisfies the compiler.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

// GPL-compatible: bpf_probe_read, bpf_override_return and trampolines require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
