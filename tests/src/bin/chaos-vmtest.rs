//! Runs inside a VM's initramfs as /init's payload: every fault × mechanism pair, reported on the
//! console as `CHAOS-VM: RESULT <fault> <mechanism> <PASS|FAIL|SKIP> <detail>` for the xtask.
use chaos_tests::{
    cases::{
        Outcome, SOCKET_FAULTS, auto_mechanism_case, delay_case, drop_case, socket_fault_case,
    },
    chaos, doctor_report,
};

fn report(fault: &str, mechanism: &str, outcome: &Outcome) {
    let (status, detail) = match outcome {
        Outcome::Pass(detail) => ("PASS", detail),
        Outcome::Skip(reason) => ("SKIP", reason),
        Outcome::Fail(reason) => ("FAIL", reason),
    };
    // One line each: the xtask parses these.
    println!(
        "CHAOS-VM: RESULT {fault} {mechanism} {status} {}",
        detail.replace('\n', " ")
    );
}

fn main() {
    for line in chaos(&["doctor"]).stdout.lines() {
        println!("CHAOS-VM: DOCTOR {line}");
    }
    let doctor = doctor_report();
    for (fault, mechanisms) in SOCKET_FAULTS {
        report(fault, "auto", &auto_mechanism_case(&doctor, fault));
        for mechanism in *mechanisms {
            report(
                fault,
                mechanism,
                &socket_fault_case(&doctor, fault, mechanism),
            );
        }
    }
    report("drop", "cgroup-skb", &drop_case());
    report("delay", "tc", &delay_case(&doctor));
    println!("CHAOS-VM: FINISHED");
}
