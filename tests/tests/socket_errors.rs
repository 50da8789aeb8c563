//! connect-error, recv-error and send-error through every mechanism this kernel has. Pairs the
//! kernel lacks are skipped with the reason (after checking chaos-bpf refuses them with exit 2);
//! the VM suite (`cargo xtask test --vm`) runs them on kernels that have them.
use chaos_tests::{
    cases::{Outcome, SOCKET_FAULTS, socket_fault_case},
    doctor_report, require_root,
};

fn every_mechanism(fault: &str) {
    require_root();
    let doctor = doctor_report();
    let (_, mechanisms) = SOCKET_FAULTS
        .iter()
        .find(|(f, _)| *f == fault)
        .expect("known fault");
    let mut failures = Vec::new();
    for mechanism in *mechanisms {
        match socket_fault_case(&doctor, fault, mechanism) {
            Outcome::Pass(detail) => println!("{fault} via {mechanism}: pass: {detail}"),
            Outcome::Skip(reason) => println!("{fault} via {mechanism}: skipped: {reason}"),
            Outcome::Fail(reason) => failures.push(format!("{mechanism}: {reason}")),
        }
    }
    assert!(failures.is_empty(), "{fault}: {failures:#?}");
}

#[test]
fn connect_error_through_every_mechanism_here() {
    every_mechanism("connect-error");
}

#[test]
fn recv_error_through_every_mechanism_here() {
    every_mechanism("recv-error");
}

#[test]
fn send_error_through_every_mechanism_here() {
    every_mechanism("send-error");
}
