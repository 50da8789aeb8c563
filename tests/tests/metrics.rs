//! `--metrics ADDR`: Prometheus scrapes each fault's counters, as the kernel counts them, while
//! the run lasts; a bad address is refused before anything is attached.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, chaos, eventually, require_root, tcp_sink,
};

/// One HTTP GET; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    // HTTP/1.1 keeps the connection open unless asked not to; this client reads to the end.
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn prometheus_scrapes_follow_the_kernel_counters() {
    require_root();
    let sink = tcp_sink("127.0.0.1:0").to_string();
    let cgroup = TestCgroup::new("metrics");
    let path = cgroup.path.to_str().unwrap();
    let mut run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        path,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let line = run
        .wait_for_line("metrics on http://")
        .expect("the metrics line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("address")
        .to_string();
    assert_eq!(cgroup.testkit(&["connect", &sink, "3"])["ok"], 0);
    let series = format!(
        r#"chaos_fault_injected_total{{fault_id="1",fault="connect-error",mechanism="cgroup-sockaddr",scope="{path}"}} 3"#
    );
    let mut body = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            body = get(&addr, "/metrics").1;
            body.contains(&series)
        }),
        "{series} not in\n{body}"
    );
    assert!(body.contains("chaos_fault_armed{"), "{body}");
    assert!(body.contains("# EOF"), "OpenMetrics text ends with # EOF");
    assert!(get(&addr, "/other").0.contains("404"));
    let summary = run.stop().summary();
    assert_eq!(summary["injected"], 3);
}

#[test]
fn a_metrics_address_in_use_is_refused_before_arming() {
    require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cgroup = TestCgroup::new("metrics-bad");
    let output = chaos(&[
        "inject",
        "connect-error",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--metrics",
        &addr,
    ]);
    let stderr = output.stderr.trim_end();
    assert_eq!(output.code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--metrics: cannot listen on"), "{stderr}");
    assert!(attached_program_ids(&cgroup.path).is_empty());
}
