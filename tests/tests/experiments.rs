//! `chaos-bpf run FILE`: several faults in one run, each with its own id, counters and deadline.
//! TC faults on one interface are rules of one program and combine per packet.
use std::time::{Duration, Instant};

use chaos_tests::{
    TempFile, TestCgroup, VethPair, attached_program_ids, binomial_bound, chaos, require_root,
    tcp_sink,
};

const SENT: u64 = 3000;

/// drop 30% and corrupt (with fixed checksums) on the same interface: each packet meets both
/// rules in one program; survivors of the drop all arrive corrupted.
#[test]
fn drop_and_corrupt_on_one_interface_combine_per_packet() {
    require_root();
    let net = VethPair::new("excomb");
    net.software_checksums();
    let experiment = TempFile::new(
        "combine",
        &format!(
            "# two rules, one program\n\
             drop --iface {0} --proto udp --probability 0.3\n\
             corrupt --iface {0} --proto udp --fix-checksum\n",
            net.a_if
        ),
    );
    let run = net.a.start_chaos(&["run", experiment.arg()]);
    let ids = run.program_ids();
    assert_eq!(ids.len(), 1, "one egress program for both rules: {ids:?}");
    let result = net.a.udp_to(None, &net.b, &net.b_addr, SENT);
    let output = run.stop();
    let summaries = output.summaries();
    assert_eq!(summaries.len(), 2, "{}", output.stdout);
    let (drop, corrupt) = (&summaries[0], &summaries[1]);
    let dropped = drop["injected"].as_u64().unwrap();
    let delivered = result["delivered"].as_u64().unwrap();
    println!(
        "combined: {dropped} dropped, {delivered} delivered, {} altered",
        result["altered"]
    );
    assert!(
        (dropped as f64 - SENT as f64 * 0.3).abs() <= binomial_bound(SENT, 0.3),
        "drop rate {dropped}/{SENT}"
    );
    assert_eq!(delivered, SENT - dropped, "only the drop rule lost packets");
    assert_eq!(
        result["altered"], delivered,
        "every survivor was corrupted too"
    );
    assert_eq!(
        corrupt["matched"], delivered,
        "a dropped packet never reaches the next rule: {corrupt}"
    );
    assert_eq!(drop["program_ids"], corrupt["program_ids"]);
    assert_eq!(
        (drop["fault_id"].as_u64(), corrupt["fault_id"].as_u64()),
        (Some(1), Some(2))
    );
}

/// Each fault ends at its own deadline: a connect-error with --duration 1s is detached after a
/// second while a drop on an interface runs on until the run's --duration.
#[test]
fn each_fault_ends_at_its_own_deadline() {
    require_root();
    let net = VethPair::new("exdead");
    let cgroup = TestCgroup::new("exdead");
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let experiment = TempFile::new(
        "deadlines",
        &format!(
            "connect-error --cgroup {} --duration 1s\n\
             drop --iface {} --proto udp\n",
            cgroup.path.display(),
            net.a_if
        ),
    );
    let run = net
        .a
        .start_chaos(&["run", experiment.arg(), "--duration", "4s"]);
    let armed = Instant::now();
    assert_eq!(cgroup.testkit(&["connect", &sink, "2"])["ok"], 0, "armed");
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(armed.elapsed()));
    assert!(
        attached_program_ids(&cgroup.path).is_empty(),
        "the connect-error detached at its deadline"
    );
    assert_eq!(cgroup.testkit(&["connect", &sink, "2"])["ok"], 2);
    let result = net.a.udp_to(None, &net.b, &net.b_addr, 100);
    assert_eq!(result["received"], 0, "the drop still runs");
    let mut run = run;
    let output = run.wait();
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let summaries = output.summaries();
    let ms = |i: usize| summaries[i]["duration_ms"].as_u64().unwrap();
    assert!((1000..2500).contains(&ms(0)), "{}", summaries[0]);
    assert!((4000..5500).contains(&ms(1)), "{}", summaries[1]);
    assert_eq!(summaries[0]["ended_by"], "duration");
    assert_eq!(summaries[0]["injected"], 2);
    assert_eq!(summaries[1]["injected"], 100);
}

/// 10,000 rules whose destinations the traffic never meets, and one that it does: the run arms,
/// only the matching rule counts anything, and packets see one index lookup either way.
#[test]
fn ten_thousand_rules_arm_and_only_the_matching_one_fires() {
    require_root();
    let net = VethPair::new("exmany");
    let mut lines = String::new();
    for i in 0..10_000 {
        lines.push_str(&format!(
            "drop --iface {} --dst 10.250.{}.{}\n",
            net.a_if,
            i / 250,
            i % 250 + 1
        ));
    }
    lines.push_str(&format!("drop --iface {} --dst {}\n", net.a_if, net.b_addr));
    let experiment = TempFile::new("many", &lines);
    let started = Instant::now();
    let run = net.a.start_chaos(&["run", experiment.arg()]);
    println!("10,001 rules armed in {:?}", started.elapsed());
    assert_eq!(run.program_ids().len(), 1);
    let result = net.a.udp_to(None, &net.b, &net.b_addr, 200);
    assert_eq!(result["received"], 0);
    let summaries = run.stop().summaries();
    assert_eq!(summaries.len(), 10_001);
    assert_eq!(summaries[10_000]["injected"], 200);
    assert!(summaries[..10_000].iter().all(|s| s["matched"] == 0));
}

/// `chaos-bpf run` on an experiment file that must be refused: exit 2, nothing on stdout; its
/// stderr.
fn refused_run(name: &str, contents: &str) -> String {
    let experiment = TempFile::new(name, contents);
    let output = chaos(&["run", experiment.arg()]);
    let stderr = output.stderr.trim_end().to_string();
    assert_eq!(output.code, Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    stderr
}

/// A bad line is named with its number, exit 2, and nothing from earlier lines is attached.
#[test]
fn a_bad_line_names_its_number_and_attaches_nothing() {
    require_root();
    let cgroup = TestCgroup::new("exbad");
    let path = cgroup.path.display();
    let stderr = refused_run(
        "bad",
        &format!(
            "connect-error --cgroup {path}\n\n# fine so far\ndrop --cgroup {path} --probability 2\n"
        ),
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 4:") && stderr.contains("--probability"),
        "{stderr}"
    );
    assert!(attached_program_ids(&cgroup.path).is_empty());

    // A line the kernel-side checks reject (after blank and comment lines), and TC rules that
    // only fail together: the earlier connect-error line must not have been armed meanwhile.
    let stderr = refused_run(
        "bad-iface",
        &format!("\n# c\nconnect-error --cgroup {path}\n\ndrop --iface chaosnope0\n"),
    );
    assert!(stderr.contains("line 5: --iface"), "{stderr}");
    let mut overlapping = format!("connect-error --cgroup {path}\n");
    for _ in 0..16 {
        overlapping.push_str("drop --iface lo --dst 10.0.0.0/8\n");
    }
    let stderr = refused_run("overlap", &overlapping);
    assert!(stderr.contains("16 rules cover 10.0.0.0/8"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "nothing was armed first: {stderr}"
    );

    let stderr = refused_run(
        "events-per-line",
        &format!("connect-error --cgroup {path} --events json\n"),
    );
    assert!(
        stderr.contains("chaos-bpf run --events json FILE"),
        "{stderr}"
    );
}
