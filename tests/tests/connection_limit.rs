//! connection-limit on the real kernel: a real PostgreSQL whose clients in the cgroup find the
//! pool run dry at exactly --max, seats that come back however a socket ends, a rate held by
//! the kernel's bucket, and nothing left behind.
use std::{
    process::{Child, Stdio},
    time::Duration,
};

use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, eventually, hold_connections, require_root,
    services::Postgres, still_loaded, tcp_sink,
};

fn path(cgroup: &TestCgroup) -> &str {
    cgroup.path.to_str().expect("utf-8 path")
}

fn hold(cgroup: &TestCgroup, addr: &str, count: u32, hold_ms: u32) -> (serde_json::Value, Child) {
    hold_connections(cgroup, addr, count, hold_ms).expect("testkit hold")
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_real_postgres_pool_runs_dry_at_max_and_recovers_when_clients_close() {
    require_root();
    let server = TestCgroup::new("pg-server");
    let pg = Postgres::start(&server);
    let clients = TestCgroup::new("pg-clients");
    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cgroup",
        path(&clients),
        "--dst",
        "127.0.0.1/32",
        "--port",
        &pg.port.to_string(),
        "--max",
        "5",
        "--events",
        "json",
    ]);
    // 20 clients at once, each holding its connection in a query for 3 s.
    let psqls: Vec<Child> = (0..20)
        .map(|_| {
            pg.psql_in(&clients, "SELECT pg_sleep(3)")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn psql")
        })
        .collect();
    // While they hold: the server sees exactly 5 client backends besides this query's.
    assert!(
        eventually(Duration::from_secs(5), || pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'"
        ) == "5"),
        "5 clients hold a connection"
    );
    let mut refused = 0;
    let mut succeeded = 0;
    for psql in psqls {
        let output = psql.wait_with_output().expect("wait psql");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            succeeded += 1;
        } else {
            assert!(
                stderr.contains("Connection refused"),
                "libpq's own words for ECONNREFUSED: {stderr}"
            );
            refused += 1;
        }
    }
    assert_eq!((succeeded, refused), (5, 15));
    // Every seat came back with its client: five more get in at once.
    let again: Vec<Child> = (0..5)
        .map(|_| {
            pg.psql_in(&clients, "SELECT 1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn psql")
        })
        .collect();
    for psql in again {
        assert!(psql.wait_with_output().expect("psql").status.success());
    }
    let output = run.stop();
    let summary = output.summary();
    assert_eq!(summary["injected"], 15, "{summary}");
    assert_eq!(summary["fault"], "connection-limit", "{summary}");
    let events = output.events();
    assert!(
        !events.is_empty() && events.iter().all(|e| e["errno"] == "ECONNREFUSED"),
        "{events:?}"
    );
}

#[test]
fn counts_stay_exact_through_10000_cycles_resets_and_killed_holders() {
    require_root();
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let resetter = chaos_tests::tcp_resetter("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("limit-cycles");
    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cgroup",
        path(&cgroup),
        "--max",
        "5",
        "--errno",
        "EAGAIN",
    ]);
    // 10,000 connections opened and closed one after another: each takes and frees a seat.
    let cycles = cgroup.testkit(&["connect", &sink, "10000"]);
    assert_eq!(cycles["ok"], 10000, "{cycles}");
    // Connections the server resets (some before connect() even returns), closed by the client
    // after: every one connects or is reset, none is refused.
    let resets = cgroup.testkit(&["connect", &resetter, "500"]);
    let reset = resets["errnos"]["104"].as_u64().unwrap_or(0);
    assert_eq!(resets["ok"].as_u64().expect("ok") + reset, 500, "{resets}");
    // Holders killed with their seats taken.
    for _ in 0..3 {
        let (report, holder) = hold(&cgroup, &sink, 5, 60_000);
        assert_eq!(report["ok"], 5, "{report}");
        kill(holder);
    }
    // Exactly 5 seats still: 8 at once get 5, the rest EAGAIN.
    let (report, holder) = hold(&cgroup, &sink, 8, 60_000);
    assert_eq!(report["ok"], 5, "{report}");
    assert_eq!(report["errnos"]["11"], 3, "{report}");
    // A process outside the cgroup is not counted, nor limited.
    let outside: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(&sink).expect("connect from outside"))
        .collect();
    drop(outside);
    kill(holder);
    let (report, holder) = hold(&cgroup, &sink, 5, 60_000);
    assert_eq!(report["ok"], 5, "{report}");
    kill(holder);
    let summary = run.stop().summary();
    assert_eq!(summary["injected"], 3, "{summary}");
}

#[test]
fn a_rate_of_50_per_second_admits_50_a_second_of_a_500_a_second_client() {
    require_root();
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("limit-rate");
    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cgroup",
        path(&cgroup),
        "--rate",
        "50/s",
    ]);
    let report = cgroup.testkit(&["connect-rate", &sink, "500", "10000"]);
    let output = run.stop();
    let per_second: Vec<u64> = report["per_second"]
        .as_array()
        .expect("per_second")
        .iter()
        .map(|n| n.as_u64().expect("count"))
        .collect();
    assert_eq!(per_second.len(), 10, "{report}");
    for (second, admitted) in per_second.iter().enumerate() {
        assert!(
            (45..=55).contains(admitted),
            "second {second}: {admitted} admitted; {report}"
        );
    }
    let attempts = report["attempts"].as_u64().expect("attempts");
    assert!(attempts >= 4500, "the client kept its 500/s: {report}");
    let refused = report["errnos"]["111"].as_u64().unwrap_or(0);
    assert_eq!(refused + report["ok"].as_u64().expect("ok"), attempts);
    assert_eq!(output.summary()["injected"], refused, "{report}");
}

#[test]
fn dry_run_counts_refusals_but_admits_and_nothing_stays_after_a_sigkill() {
    require_root();
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("limit-dry");
    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cgroup",
        path(&cgroup),
        "--max",
        "2",
        "--dry-run",
    ]);
    let (report, holder) = hold(&cgroup, &sink, 6, 60_000);
    assert_eq!(report["ok"], 6, "a dry run refuses nothing: {report}");
    kill(holder);
    assert_eq!(run.stop().summary()["injected"], 4);

    let run = ChaosRun::start(&[
        "inject",
        "connection-limit",
        "--cgroup",
        path(&cgroup),
        "--max",
        "1",
    ]);
    let ids = run.program_ids();
    assert_eq!(ids.len(), 3, "two connect hooks and the release hook");
    let (report, holder) = hold(&cgroup, &sink, 3, 60_000);
    assert_eq!(report["ok"], 1, "{report}");
    run.kill_hard();
    assert!(
        eventually(Duration::from_secs(5), || still_loaded(&ids).is_empty()),
        "programs left behind"
    );
    assert!(attached_program_ids(&cgroup.path).is_empty());
    // The holder's seat died with the maps: it closes without a program to tell.
    kill(holder);
    let (report, holder) = hold(&cgroup, &sink, 3, 60_000);
    assert_eq!(report["ok"], 3, "{report}");
    kill(holder);
}
