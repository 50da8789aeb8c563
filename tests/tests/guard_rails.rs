//! Guard rails on the real kernel: exclusions keep traffic out of a fault whatever else matches;
//! a scope that reaches chaos-bpf itself, the container runtime or the root cgroup is refused
//! unless named exactly, and one wider than half of the node's cgroups unless --force. Refusals
//! exit 2 with one line and attach nothing.
use chaos_tests::{
    ChaosRun, TestCgroup, attached_program_ids, chaos, chaos_bin, require_root, tcp_sink,
};

#[test]
fn exclusions_keep_their_traffic_out_of_a_fault() {
    require_root();
    let (kept, hit) = (tcp_sink("127.0.0.1:0"), tcp_sink("127.0.0.1:0"));
    let other_address = tcp_sink("127.0.0.2:0");
    let cgroup = TestCgroup::new("exclusions");
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        &cgroup.path.display().to_string(),
        "--exclude-port",
        &kept.port().to_string(),
        "--exclude-dst",
        "127.0.0.2/32",
    ]);
    let connect = |addr: std::net::SocketAddr| cgroup.testkit(&["connect", &addr.to_string(), "5"]);
    assert_eq!(connect(kept)["ok"], 5, "an excluded port");
    assert_eq!(connect(other_address)["ok"], 5, "an excluded destination");
    assert_eq!(connect(hit)["errnos"]["111"], 5, "everything else");
    drop(run.stop());

    let everything = chaos(&[
        "inject",
        "connect-error",
        "--cgroup",
        &cgroup.path.display().to_string(),
        "--port",
        "53",
        "--exclude-port",
        "53",
    ]);
    assert_eq!(everything.code, Some(2), "{}", everything.stderr);
    assert!(
        everything
            .stderr
            .contains("--exclude-port: excludes everything"),
        "{}",
        everything.stderr
    );
}

/// Refused with exit 2 and one line containing `needle`, and nothing attached to `cgroup`.
fn refused(args: &[&str], needle: &str, cgroup: &TestCgroup) {
    let output = chaos(args);
    assert_eq!(output.code, Some(2), "{args:?}: {}", output.stderr);
    assert!(
        output.stderr.contains(needle),
        "{args:?}: {}",
        output.stderr
    );
    assert_eq!(output.stderr.trim().lines().count(), 1, "{}", output.stderr);
    assert!(attached_program_ids(&cgroup.path).is_empty());
}

#[test]
fn protected_processes_are_reached_only_when_named() {
    require_root();
    // A process named as a container runtime, in a cgroup below the one a fault would take.
    let parent = TestCgroup::new("guard-runtime");
    let runtime_cgroup = parent.child("runtime");
    let fake_runtime = std::env::temp_dir().join(format!("guard-{}", std::process::id()));
    std::fs::create_dir_all(&fake_runtime).expect("temp dir");
    let binary = fake_runtime.join("containerd");
    std::fs::copy("/bin/sleep", &binary).expect("copy sleep");
    let mut runtime = runtime_cgroup
        .command(&binary)
        .arg("60")
        .spawn()
        .expect("fake runtime");
    refused(
        &[
            "inject",
            "connect-error",
            "--cgroup",
            &parent.path.display().to_string(),
            "--port",
            "9",
            "--duration",
            "5s",
        ],
        "the container runtime (containerd)",
        &parent,
    );
    // Named exactly (its cgroup, or its pid), it is the user's intent.
    let pid = runtime.id().to_string();
    for scope in [
        ["--cgroup", &runtime_cgroup.path.display().to_string()],
        ["--pid", &pid],
    ] {
        let mut args = vec![
            "inject",
            "connect-error",
            "--port",
            "9",
            "--duration",
            "30s",
        ];
        args.extend_from_slice(&scope);
        drop(ChaosRun::start(&args).stop());
    }
    let _ = runtime.kill();
    let _ = runtime.wait();
    let _ = std::fs::remove_dir_all(&fake_runtime);
    drop(runtime_cgroup);

    // chaos-bpf's own cgroup: refused, for it would fail its own calls.
    let own = TestCgroup::new("guard-self");
    let inner = own.child("inner");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} inject connect-error --cgroup {} --port 9 --duration 5s",
        inner.path.display(),
        chaos_bin().display(),
        own.path.display()
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("chaos-bpf itself"), "{stderr}");
    drop(inner);

    // The root cgroup is the whole node.
    let root = chaos_tests::cgroup2_root().display().to_string();
    let output = chaos(&[
        "inject",
        "connect-error",
        "--cgroup",
        &root,
        "--port",
        "9",
        "--duration",
        "5s",
    ]);
    assert_eq!(output.code, Some(2), "{}", output.stderr);
    assert!(output.stderr.contains("root cgroup"), "{}", output.stderr);
}

#[test]
fn a_scope_wider_than_half_the_node_needs_force() {
    require_root();
    let wide = TestCgroup::new("guard-wide");
    let children: Vec<TestCgroup> = (0..24).map(|i| wide.child(&format!("c{i}"))).collect();
    let path = wide.path.display().to_string();
    refused(
        &[
            "inject",
            "connect-error",
            "--cgroup",
            &path,
            "--port",
            "9",
            "--duration",
            "5s",
        ],
        "more than 50%",
        &wide,
    );
    let run = ChaosRun::start(&[
        "inject",
        "connect-error",
        "--cgroup",
        &path,
        "--port",
        "9",
        "--force",
    ]);
    assert!(
        !attached_program_ids(&wide.path).is_empty(),
        "armed with --force"
    );
    drop(run.stop());
    drop(children);
}

/// A dry run is the kernel's shadow mode: the same programs and decisions, counted and
/// reported, nothing injected. On the same scripted traffic its count equals what the real fault
/// then injects.
#[test]
fn a_dry_run_counts_what_the_real_fault_then_injects() {
    require_root();
    let server = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("dry-run");
    let path = cgroup.path.display().to_string();
    let port = server.port().to_string();
    let mut counts = Vec::new();
    for dry_run in [true, false] {
        let mut args = vec![
            "inject",
            "connect-error",
            "--cgroup",
            &path,
            "--port",
            &port,
            "--duration",
            "60s",
        ];
        if dry_run {
            args.push("--dry-run");
        }
        let run = ChaosRun::start(&args);
        if dry_run {
            assert!(
                run.first_lines().contains("DRY RUN"),
                "{}",
                run.first_lines()
            );
        }
        let seen = cgroup.testkit(&["connect", &server.to_string(), "40"]);
        let output = run.stop();
        let summary = output.summary();
        let refused = seen["errnos"]["111"].as_u64().unwrap_or(0);
        println!("dry run {dry_run}: {seen}; summary {summary}");
        if dry_run {
            assert_eq!(seen["ok"], 40, "a dry run injects nothing");
        } else {
            assert_eq!(refused, 40, "the real fault refuses them");
        }
        counts.push((summary["matched"].clone(), summary["injected"].clone()));
    }
    assert_eq!(counts[0], counts[1], "dry-run counts equal the real run's");
    assert_eq!(counts[0].1, 40);
}

/// A TC fault that takes every packet of the interface carrying the node's default route cuts
/// the node off (the kubelet from the API server, the agent from its callers): refused unless
/// --force, with one line naming the interface and the flag, and nothing attached. A --dst or
/// --port narrows it, and the same fault on an interface without the default route arms.
#[test]
fn an_unfiltered_fault_on_the_default_route_interface_needs_force() {
    require_root();
    let net = chaos_tests::VethPair::new("uplink");
    net.a.ip(&["route", "add", "default", "via", &net.b_addr]);
    let in_a = |args: &[&str]| {
        let output = std::process::Command::new("nsenter")
            .arg(format!("--net={}", net.a.path()))
            .arg(chaos_bin())
            .args(args)
            .output()
            .expect("nsenter chaos-bpf");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let before = chaos_tests::tc_state(&net.a, &net.a_if);
    for kind in [
        &["drop", "--probability", "1"][..],
        &["corrupt"][..],
        &["reset"][..],
    ] {
        let mut args = vec!["inject"];
        args.extend_from_slice(kind);
        args.extend(["--iface", &net.a_if, "--duration", "5s"]);
        let (code, stderr) = in_a(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("{} carries this node's default route", net.a_if))
                && stderr.contains("--force")
                && stderr.contains("--dst"),
            "{stderr}"
        );
        assert_eq!(
            chaos_tests::tc_state(&net.a, &net.a_if),
            before,
            "nothing attached"
        );
    }
    let b_dst = format!("{}/32", net.b_addr);
    for narrowed in [
        &["--dst", b_dst.as_str()][..],
        &["--port", "9"][..],
        &["--force"][..],
    ] {
        let mut args = vec![
            "inject",
            "drop",
            "--iface",
            &net.a_if,
            "--probability",
            "1",
            "--duration",
            "30s",
        ];
        args.extend_from_slice(narrowed);
        let run = net.a.start_chaos(&args);
        assert!(!run.program_ids().is_empty(), "{narrowed:?} armed");
        drop(run.stop());
    }
    // The other end has no default route: the same unfiltered fault arms there.
    let run = net.b.start_chaos(&[
        "inject",
        "drop",
        "--iface",
        &net.b_if,
        "--probability",
        "1",
        "--duration",
        "30s",
    ]);
    assert!(!run.program_ids().is_empty(), "armed without the route");
    drop(run.stop());
    assert_eq!(chaos_tests::tc_state(&net.a, &net.a_if), before);
}

/// Forced onto all of the default-route interface's traffic, a fault spares what keeps the node
/// manageable: the API server's address (here `KUBERNETES_SERVICE_HOST`, one peer of the test
/// netns) and the agent's own port, both ways. A client in the peer namespace arms it through
/// the agent's API, lists and stops it over the same interface, while datagrams to another
/// address on that link are all lost and those to the API server all arrive.
#[test]
fn a_forced_node_level_fault_spares_the_api_server_and_the_agent_port() {
    require_root();
    let net = chaos_tests::VethPair::new("spare");
    let other = net.b_addr.replace(".2", ".3");
    net.b
        .ip(&["addr", "add", &format!("{other}/24"), "dev", &net.b_if]);
    net.a.ip(&["route", "add", "default", "via", &net.b_addr]);
    let api_server = std::ffi::OsString::from(&net.b_addr);
    let agent = chaos_tests::agent::Agent::start_in(
        &net.a,
        &format!("{}:0", net.a_addr),
        &[("KUBERNETES_SERVICE_HOST", &api_server)],
    );
    let client = |args: &[&str]| {
        let output = std::process::Command::new("nsenter")
            .arg(format!("--net={}", net.b.path()))
            .arg(chaos_bin())
            .args(["fault", "--agent", &agent.addr.to_string()])
            .args(["--token-file", agent.token_file.arg()])
            .args(args)
            .output()
            .expect("chaos-bpf fault");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "fault {args:?}: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let fault = chaos_tests::TempFile::new(
        "node-level.json",
        &serde_json::json!({
            "kind": "drop", "probability": 1, "force": true, "duration": "60s",
            "scope": {"iface": net.a_if},
        })
        .to_string(),
    );
    let created: serde_json::Value =
        serde_json::from_str(&client(&["create", fault.arg()])).expect("the fault's view");
    let spared = &created["spec"]["match"];
    let host = serde_json::json!([format!("{}/32", net.b_addr)]);
    let port = serde_json::json!([agent.addr.port()]);
    assert_eq!(
        (&spared["excludeDst"], &spared["excludeSrc"]),
        (&host, &host),
        "{created}"
    );
    assert_eq!(
        (&spared["excludePort"], &spared["excludeSport"]),
        (&port, &port),
        "{created}"
    );
    // Asked and answered over the faulted interface.
    let listed = client(&["list"]);
    assert!(listed.contains("armed"), "{listed}");
    let to_other = net.a.udp_to(None, &net.b, &other, 200);
    let to_api_server = net.a.udp_to(None, &net.b, &net.b_addr, 200);
    println!("other: {to_other}; API server: {to_api_server}");
    assert_eq!(to_other["delivered"], 0, "the fault drops the rest");
    assert_eq!(to_api_server["delivered"], 200, "the API server is spared");
    client(&["stop", "--all"]);
    assert_eq!(net.a.udp_to(None, &net.b, &other, 50)["delivered"], 50);
    drop(agent.stop());
}
