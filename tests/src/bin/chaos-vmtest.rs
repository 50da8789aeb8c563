//! Runs inside a VM's initramfs as /init's payload: every fault × mechanism pair, planned on the
//! console as `CHAOS-VM: PLAN <fault> <mechanism>` and then reported as `CHAOS-VM: RESULT <fault>
//! <mechanism> <PASS|FAIL|SKIP> <detail>` for the xtask; or, with the argument `bench`, the
//! benchmark's in-VM part as one `CHAOS-VM: BENCH <json>` line.
use chaos_tests::{
    cases::{Outcome, vm_case, vm_cases},
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
    // `chaos_mode=bench` on the kernel command line reaches /init, and here, as an argument.
    if std::env::args().nth(1).as_deref() == Some("bench") {
        let report = chaos_tests::vm_bench::delay_versus_netem().and_then(|mut delay| {
            delay["per_call_cost"] = chaos_tests::vm_bench::per_call_cost()?;
            Ok(delay)
        });
        match report {
            Ok(report) => println!("CHAOS-VM: BENCH {report}"),
            Err(err) => println!(
                "CHAOS-VM: BENCH-FAILED {}",
                format!("{err:#}").replace('\n', " ")
            ),
        }
        println!("CHAOS-VM: FINISHED");
        return;
    }
    for line in chaos(&["doctor"]).stdout.lines() {
        println!("CHAOS-VM: DOCTOR {line}");
    }
    let doctor = doctor_report();
    // The plan first: the xtask checks that every planned case reports.
    for (fault, mechanism) in vm_cases() {
        println!("CHAOS-VM: PLAN {fault} {mechanism}");
    }
    for (fault, mechanism) in vm_cases() {
        report(fault, mechanism, &vm_case(&doctor, fault, mechanism));
    }
    println!("CHAOS-VM: FINISHED");
}
