//! io-error on this kernel: where it has a file-hook mechanism, a process of the cgroup gets the
//! errno on the path and only there; where it has none (this CI host refuses trampolines and BPF
//! LSM), chaos-bpf refuses the fault with doctor's reason and exit 2, and the VM suite covers the
//! mechanisms on kernels that have them.
use chaos_tests::{
    cases::{Outcome, io_error_case},
    doctor_report, require_root,
};

#[test]
fn io_error_works_or_is_refused_with_the_reason_on_each_mechanism() {
    require_root();
    let report = doctor_report();
    for mechanism in ["fmod-ret", "bpf-lsm"] {
        match io_error_case(&report, mechanism) {
            Outcome::Pass(detail) => println!("io-error via {mechanism}: {detail}"),
            Outcome::Skip(reason) => println!(
                "io-error via {mechanism} refused as it must be here ({reason}); the VM suite \
                 runs it on kernels that have it"
            ),
            Outcome::Fail(reason) => panic!("io-error via {mechanism}: {reason}"),
        }
    }
}
