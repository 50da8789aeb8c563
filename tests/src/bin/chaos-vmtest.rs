//! Runs inside a VM's initramfs as /init's payload: every fault × mechanism pair, planned on the
//! console as `CHAOS-VM: PLAN <fault> <mechanism>` and then reported as `CHAOS-VM: RESULT <fault>
//! <mechanism> <PASS|FAIL|SKIP> <detail>` for the xtask; and, with the argument `bench` (alone)
//! or `test-bench-quick` (after the cases), the benchmark's in-VM part as one `CHAOS-VM: BENCH
//! <json>` line.
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

/// The in-VM part of the bench, as one `CHAOS-VM: BENCH <json>` line (or `BENCH-FAILED`).
fn bench(sizes: chaos_tests::vm_bench::VmSizes) {
    let report = chaos_tests::vm_bench::delay_versus_netem(sizes).and_then(|mut delay| {
        delay["per_call_cost"] = chaos_tests::vm_bench::per_call_cost(sizes)?;
        delay["bandwidth"] = chaos_tests::vm_bench::bandwidth_versus_tbf(sizes)?;
        delay["duplicate"] = chaos_tests::vm_bench::duplicate_versus_netem(sizes)?;
        Ok(delay)
    });
    match report {
        Ok(report) => println!("CHAOS-VM: BENCH {report}"),
        Err(err) => println!(
            "CHAOS-VM: BENCH-FAILED {}",
            format!("{err:#}").replace('\n', " ")
        ),
    }
}

fn main() {
    // `chaos_mode=...` on the kernel command line reaches /init, and here, as an argument:
    // `bench` (the full in-VM bench alone), `test` (the cases), or `test-bench-quick` (the
    // cases, then the quick bench in the same boot, as `cargo xtask test` runs it).
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "bench" {
        bench(chaos_tests::vm_bench::VmSizes::FULL);
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
    if mode == "test-bench-quick" {
        bench(chaos_tests::vm_bench::VmSizes::QUICK);
    }
    println!("CHAOS-VM: FINISHED");
}
