//! partition on the real kernel, on loopback: a cgroup's sockets and their peers stop reaching
//! each other both ways, the way a partition does (connections time out, datagrams vanish
//! without an error), everyone else is spared, `--keep-established` keeps the flows open before
//! it, and a dry run only counts. Pods and peers by label: tests/pod_faults.rs.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, last_json_line, require_root, serve_with,
    testkit_bin,
};

/// What the testkit's `connect ADDR 1` reports: `None` when it connected, else the error (-1 is
/// its 2 s timeout).
fn connect_from(cgroup: Option<&TestCgroup>, addr: &str) -> Option<serde_json::Value> {
    let result = match cgroup {
        Some(cgroup) => cgroup.testkit(&["connect", addr, "1"]),
        None => {
            let output = Command::new(testkit_bin())
                .args(["connect", addr, "1"])
                .output()
                .expect("testkit");
            last_json_line(&output.stdout)
        }
    };
    (result["ok"] != 1).then(|| result["errnos"].clone())
}

/// A TCP echo server outside every test cgroup (a thread of the test).
fn echo_server(ip: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// One echo over an open connection, within a second (64 bytes: the testkit's tcp-echo answers
/// whole messages of that size).
fn echoes(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let sent = [7u8; 64];
    let mut buf = [0u8; 64];
    stream.write_all(&sent).is_ok() && stream.read_exact(&mut buf).is_ok() && buf == sent
}

fn partition(cgroup: &TestCgroup, extra: &[&str]) -> ChaosRun {
    let mut args = vec![
        "inject",
        "partition",
        "--cgroup",
        cgroup.path.to_str().expect("path"),
        "--from-peers",
        "127.0.0.1/32",
        "--duration",
        "60s",
    ];
    args.extend_from_slice(extra);
    ChaosRun::start(&args)
}

/// Both ways: the cgroup's connects to a peer time out, a peer's connects to the cgroup's
/// listener time out, its open connection goes silent, its datagrams leave without an error and
/// never arrive; processes outside the cgroup, and other addresses, are untouched. All of it
/// heals, and nothing stays attached.
#[test]
fn a_partition_cuts_both_ways_silently_and_spares_everyone_else() {
    require_root();
    let cgroup = TestCgroup::new("partition");
    let outside = echo_server("127.0.0.1").to_string();
    let (_inside_server, inside) = serve_with({
        let mut command = cgroup.command(testkit_bin());
        command.args(["tcp-echo", "127.0.0.1:0"]);
        command
    });
    let mut open = TcpStream::connect(&inside).expect("connect before the fault");
    assert!(echoes(&mut open));
    let run = partition(&cgroup, &[]);
    let timed_out = Some(serde_json::json!({"-1": 1}));
    assert_eq!(
        connect_from(Some(&cgroup), &outside),
        timed_out,
        "to a peer"
    );
    assert_eq!(connect_from(None, &inside), timed_out, "from a peer");
    assert!(!echoes(&mut open), "an established flow is cut too");
    assert_eq!(connect_from(None, &outside), None, "outside the cgroup");
    // Another address of the same host is not a peer.
    let other = echo_server("127.0.0.2").to_string();
    assert_eq!(connect_from(Some(&cgroup), &other), None, "not a peer");
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = receiver.local_addr().expect("addr").to_string();
    let sent = cgroup.testkit(&["udp-send", &addr, "100"]);
    assert_eq!(sent["send_errors"], 0, "a partition is no error: {sent}");
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 128];
    assert!(receiver.recv(&mut buf).is_err(), "a datagram arrived");
    let ids = run.program_ids();
    let summary = run.stop().summary();
    assert!(summary["injected"].as_u64() >= Some(100), "{summary}");
    assert_eq!(summary["fault"], "partition");
    assert!(chaos_tests::still_loaded(&ids).is_empty());
    assert!(attached_program_ids(&cgroup.path).is_empty());
    assert_eq!(connect_from(Some(&cgroup), &outside), None, "healed");
    assert_eq!(connect_from(None, &inside), None, "healed");
    assert!(
        echoes(&mut open),
        "the open flow recovers (TCP retransmits)"
    );
}

/// `--keep-established`: connections open before the fault keep working both ways while new
/// ones time out; `--direction to` cuts only what the cgroup starts; a dry run changes nothing
/// and counts what it would have cut.
#[test]
fn keep_established_one_way_and_dry_run() {
    require_root();
    let cgroup = TestCgroup::new("partition-modes");
    let outside = echo_server("127.0.0.1").to_string();
    let (_inside_server, inside) = serve_with({
        let mut command = cgroup.command(testkit_bin());
        command.args(["tcp-echo", "127.0.0.1:0"]);
        command
    });
    let timed_out = Some(serde_json::json!({"-1": 1}));

    let mut open = TcpStream::connect(&inside).expect("connect before the fault");
    assert!(echoes(&mut open));
    let run = partition(&cgroup, &["--keep-established"]);
    assert!(echoes(&mut open), "an established flow is kept");
    assert_eq!(connect_from(Some(&cgroup), &outside), timed_out);
    assert_eq!(connect_from(None, &inside), timed_out);
    assert!(echoes(&mut open), "still kept");
    let summary = run.stop().summary();
    // Two SYNs in each 2 s connect (the first and its retransmission), no segment of the
    // open flow.
    let injected = summary["injected"].as_u64().unwrap_or(0);
    assert!((4..=6).contains(&injected), "SYNs only: {summary}");

    // `to`: the cgroup's packets to its peers. Its own connects time out; a peer's SYN reaches
    // its listener, whose answer is lost, so that connect times out too: one-way loss breaks
    // TCP both ways, as on a real network.
    let run = partition(&cgroup, &["--direction", "to"]);
    assert_eq!(connect_from(Some(&cgroup), &outside), timed_out);
    assert_eq!(connect_from(None, &inside), timed_out);
    run.stop();

    let run = partition(&cgroup, &["--dry-run"]);
    assert_eq!(connect_from(Some(&cgroup), &outside), None);
    assert_eq!(connect_from(None, &inside), None);
    let summary = run.stop().summary();
    assert!(summary["injected"].as_u64() >= Some(4), "{summary}");
}
