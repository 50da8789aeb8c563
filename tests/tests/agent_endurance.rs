//! The agent under abuse: SIGKILLed 20 times in a row, at random moments, with faults of every
//! kind this kernel has armed (up to 100), leaves no program, link or TC filter; 1,000
//! create/stop cycles under steady traffic and scrapes leave its descriptors, BPF objects and
//! memory where they started; a real Prometheus server scrapes its counters.
use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chaos_tests::{
    Netns, TempFile, TestCgroup, agent::Agent, attached_program_ids, eventually, program_loaded,
    require_root, tcp_sink,
};
use serde_json::json;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A pod-like network namespace: `eth0` inside, its veth peer in ours (where the agent runs).
struct Pod {
    netns: Netns,
    host_if: String,
}

impl Pod {
    fn new(tag: &str) -> Self {
        let netns = Netns::new(tag);
        let host_if = format!("cv{}", std::process::id() % 100_000);
        let status = Command::new("ip")
            .args([
                "link",
                "add",
                &host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns.name,
            ])
            .status()
            .expect("ip link add");
        assert!(status.success());
        let _ = Command::new("ip")
            .args(["link", "set", &host_if, "up"])
            .status();
        netns.ip(&["link", "set", "eth0", "up"]);
        // Deleting the namespace (Netns's drop) deletes eth0 and with it the host-side peer.
        Self { netns, host_if }
    }

    /// TC filters on the host-side veth: none may survive the agent.
    fn filters(&self) -> String {
        let mut all = String::new();
        for hook in ["ingress", "egress"] {
            let out = Command::new("tc")
                .args(["filter", "show", "dev", &self.host_if, hook])
                .output()
                .expect("tc");
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        all
    }
}

/// A small deterministic generator, seeded and printed, so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The kinds this kernel can arm through the agent, as faults on the test's scopes.
fn kinds(cgroup: &TestCgroup, pod: &Pod) -> Vec<(&'static str, serde_json::Value)> {
    let netns = pod.netns.path();
    vec![
        (
            "connect-error",
            json!({"kind": "connect-error", "scope": {"cgroup": cgroup.path}, "match": {"port": [9]}}),
        ),
        (
            "drop (cgroup_skb)",
            json!({"kind": "drop", "scope": {"cgroup": cgroup.path}, "match": {"port": [9]}}),
        ),
        (
            "drop (TC)",
            json!({"kind": "drop", "scope": {"netns": netns}, "match": {"dst": ["198.51.100.1"]}}),
        ),
        (
            "reset",
            json!({"kind": "reset", "scope": {"netns": netns}, "match": {"dst": ["198.51.100.1"]}}),
        ),
        (
            "corrupt",
            json!({"kind": "corrupt", "scope": {"netns": netns}, "match": {"dst": ["198.51.100.1"]}}),
        ),
    ]
}

#[test]
fn twenty_sigkills_at_random_moments_leave_nothing() {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Spread over cgroups: one cgroup takes at most 8 faults per operation (the kernel's list).
    let cgroups: Vec<TestCgroup> = (0..20)
        .map(|n| TestCgroup::new(&format!("agent-kills{n}")))
        .collect();
    let pod = Pod::new("agent-kills");
    let kinds = kinds(&cgroups[0], &pod);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!(
        "seed {seed}; kinds {:?} (recv/send-error need fmod_ret, LSM or kprobes: the VM suite)",
        kinds.iter().map(|k| k.0).collect::<Vec<_>>()
    );
    let mut random = Lcg(seed);
    let mut armed_at_kill = Vec::new();
    for round in 0..20 {
        let agent = Arc::new(Agent::start(&["--max-faults", "200"]));
        // One round holds 100 faults when killed; the others are killed at a random moment,
        // while creates are in flight.
        let target = if round == 0 {
            100
        } else {
            1 + random.next(100) as usize
        };
        let kill_after = Duration::from_millis(200 + random.next(6000));
        // Each TC fault created through the API is an object of its own, attached to the
        // pod's veth: the kernel takes at most 64 tcx programs per hook (BPF_MPROG_MAX), so a
        // round holds at most 40 of them and the rest are cgroup faults. (Random picks had put
        // more than 63 on the veth about one round 0 in five: HTTP 500, `bpf_mprog_attach`.)
        let mut tc_faults = 0;
        let picks: Vec<serde_json::Value> = (0..target)
            .map(|_| {
                let mut fault = kinds[random.next(kinds.len() as u64) as usize].1.clone();
                if fault["scope"]["netns"].is_string() {
                    tc_faults += 1;
                    if tc_faults > 40 {
                        fault = kinds[0].1.clone();
                    }
                }
                if fault["scope"]["cgroup"].is_string() {
                    let cgroup = &cgroups[random.next(cgroups.len() as u64) as usize];
                    fault["scope"]["cgroup"] = json!(cgroup.path);
                }
                fault
            })
            .collect();
        let creating = Arc::new(AtomicBool::new(true));
        let programs = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let creator = {
            let (agent, creating, programs) = (
                Arc::clone(&agent),
                Arc::clone(&creating),
                Arc::clone(&programs),
            );
            let token = agent.token.clone();
            std::thread::spawn(move || {
                for fault in picks {
                    if !creating.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = fault.to_string();
                    // A transport error is the agent killed mid-request: the round is over.
                    let Ok(answer) =
                        agent.try_request("POST", "/v1/faults", Some(&token), Some(&body))
                    else {
                        break;
                    };
                    if answer.status != 201 {
                        eprintln!("create refused ({}): {}", answer.status, answer.body);
                        break;
                    }
                    let ids = answer.json()["program_ids"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if let Ok(mut programs) = programs.lock() {
                        programs.extend(ids.iter().filter_map(|id| id.as_u64()));
                    }
                }
            })
        };
        let started = Instant::now();
        if round == 0 {
            // A hang guard, not a bound: 100 creates, most of them loading a TC object, share
            // two cores with the other tests of this binary.
            while !creator.is_finished() && started.elapsed() < Duration::from_secs(300) {
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("round 0: 100 creates took {:?}", started.elapsed());
        } else {
            std::thread::sleep(kill_after);
        }
        let armed = agent
            .try_request("GET", "/v1/faults", Some(&agent.token.clone()), None)
            .map_or(0, |a| a.json()["faults"].as_array().map_or(0, Vec::len));
        creating.store(false, Ordering::SeqCst);
        match Arc::try_unwrap(agent) {
            Ok(agent) => agent.kill_hard(),
            Err(agent) => agent.signal(nix::sys::signal::Signal::SIGKILL),
        }
        let _ = creator.join();
        let programs = programs.lock().map(|p| p.clone()).unwrap_or_default();
        armed_at_kill.push(armed);
        assert!(
            eventually(Duration::from_secs(10), || programs
                .iter()
                .all(|p| !program_loaded(*p))),
            "round {round} (seed {seed}): programs still loaded after SIGKILL with {armed} armed"
        );
        // A program only outlives its process through an attachment (nothing is pinned): none
        // on the cgroup, no tcx link and no clsact filter on the veth, including what a
        // create in flight at the kill had attached.
        assert!(
            chaos_tests::tcx_programs_here(&pod.host_if).is_empty(),
            "round {round}: tcx programs left: {:?}",
            chaos_tests::tcx_programs_here(&pod.host_if)
        );
        for cgroup in &cgroups {
            assert!(
                attached_program_ids(&cgroup.path).is_empty(),
                "round {round}: attachments left on {}",
                cgroup.path.display()
            );
        }
        assert_eq!(pod.filters().trim(), "", "round {round}: TC filters left");
    }
    assert_eq!(armed_at_kill[0], 100, "round 0 held 100 faults");
    println!("20 SIGKILLs, faults armed at each kill: {armed_at_kill:?}; nothing left behind");
}

#[test]
fn a_thousand_create_stop_cycles_leave_the_agent_as_it_was() {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-load");
    let agent = Arc::new(Agent::start(&["--metrics", "127.0.0.1:0"]));
    // Steady traffic in the cgroup: connects to a port no fault matches, counted at the end.
    let mut traffic = cgroup
        .command(chaos_tests::testkit_bin())
        .args(["connect", &addr.to_string(), "100000000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("traffic");
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let (agent, scraping) = (Arc::clone(&agent), Arc::clone(&scraping));
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while scraping.load(Ordering::SeqCst) {
                assert!(agent.scrape().contains("chaos_faults_active"));
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    };
    let fault =
        json!({"kind": "connect-error", "scope": {"cgroup": cgroup.path}, "match": {"port": [9]}});
    // Warm-up: what is allocated once (probes, the runtime's pools) and the allocator's
    // high-water mark, which loading one object per fault raises over the first few dozen
    // cycles (measured: 37 MiB after one, 58 MiB from about 75 on, then flat).
    // It also fills the agent's history of ended faults (256 kept), which then stays that size.
    let warm_up = agent.footprint();
    for _ in 0..300 {
        let warm = agent.create(&fault);
        agent.delete(&format!("/v1/faults/{}", warm["id"]));
    }
    let before = agent.footprint();
    println!(
        "RSS {} KiB at start, {} KiB after 300 warm-up cycles",
        warm_up.rss_kib, before.rss_kib
    );
    let started = Instant::now();
    const CYCLES: usize = 1000;
    let mut rss_every_250 = Vec::new();
    for cycle in 1..=CYCLES {
        let created = agent.create(&fault);
        let stopped = agent.delete(&format!("/v1/faults/{}", created["id"]));
        assert_eq!(stopped.status, 200, "{}", stopped.body);
        if cycle % 250 == 0 {
            rss_every_250.push(agent.footprint().rss_kib);
        }
    }
    println!("RSS KiB every 250 cycles: {rss_every_250:?}");
    let took = started.elapsed();
    scraping.store(false, Ordering::SeqCst);
    let scrapes = scraper.join().expect("scraper");
    let _ = traffic.kill();
    let _ = traffic.wait();
    let after = agent.footprint();
    println!(
        "{CYCLES} create/stop cycles in {took:.1?} ({:.1} cycles/s), {scrapes} scrapes; before {before:?}, after {after:?}",
        CYCLES as f64 / took.as_secs_f64()
    );
    let within = |name: &str, a: u64, b: u64, slack: u64| {
        assert!(b <= a + a / 10 + slack, "{name}: {a} before, {b} after");
    };
    within("descriptors", before.fds, after.fds, 2);
    within("BPF maps", before.maps, after.maps, 0);
    within("BPF programs", before.programs, after.programs, 0);
    within("RSS KiB", before.rss_kib, after.rss_kib, 0);
}

#[test]
fn a_real_prometheus_scrapes_the_agents_counters() {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!("prometheus is not installed: cargo xtask setup installs Debian's prometheus");
    };
    let addr = tcp_sink("127.0.0.1:0");
    let cgroup = TestCgroup::new("agent-prom");
    let agent = Agent::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = agent.metrics.expect("metrics address");
    let created = agent.create(&json!({
        "kind": "connect-error", "scope": {"cgroup": cgroup.path},
        "match": {"port": [addr.port()]}, "probability": 1
    }));
    assert_eq!(
        cgroup.testkit(&["connect", &addr.to_string(), "7"])["ok"],
        0
    );
    // The kubelet's probes are served on the metrics port (the DaemonSet's API is a Unix
    // socket), and no fault route is.
    let probe = |path: &str| {
        chaos_tests::services::http_get(&format!("http://{metrics}{path}"), Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("GET {path} on the metrics port: {err}"))
    };
    assert_eq!(probe("/healthz"), (200, "ok\n".to_string()));
    let (status, ready) = probe("/readyz");
    assert_eq!(status, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("readiness JSON");
    assert_eq!(
        (ready["ready"].clone(), ready["faults_active"].clone()),
        (json!(true), json!(1))
    );
    for path in ["/v1/faults", "/v1/events"] {
        assert_eq!(probe(path).0, 404, "{path} is the API's alone");
    }

    let data = tempdir("prometheus");
    let config = TempFile::new(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: chaos-bpf\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    );
    let web = chaos_tests::agent::free_port();
    let mut server = Command::new(prometheus)
        .args([
            &format!("--config.file={}", config.arg()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={web}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let query = format!("http://{web}/api/v1/query?query=chaos_fault_injected_total");
    let mut found = serde_json::Value::Null;
    let got = eventually(Duration::from_secs(30), || {
        let Ok(mut response) = http.get(&query).call() else {
            return false;
        };
        let Ok(body) = response.body_mut().read_to_string() else {
            return false;
        };
        found = serde_json::from_str(&body).unwrap_or_default();
        found["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        got,
        "Prometheus returned no chaos_fault_injected_total: {found}"
    );
    let series = &found["data"]["result"][0];
    assert_eq!(series["metric"]["fault_id"], created["id"].to_string());
    assert_eq!(series["metric"]["fault"], "connect-error");
    assert_eq!(series["value"][1], "7", "{series}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chaos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Two clsact TC faults in one process: each object has its own record and filter handle (they
/// were keyed by pid and collided), both filters attach, and after a SIGKILL, whose clsact
/// filters survive by design, `chaos-bpf cleanup` removes both and the qdisc.
#[test]
fn two_clsact_objects_in_one_agent_are_recorded_apart_and_cleaned_up() {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let pod = Pod::new("agent-clsact");
    let agent = Agent::start(&[]);
    for dst in ["198.51.100.1", "198.51.100.2"] {
        agent.create(&json!({
            "kind": "drop", "mechanism": "tc-clsact",
            "scope": {"netns": pod.netns.path()}, "match": {"dst": [dst]}
        }));
    }
    let filters = pod.filters();
    let handles: std::collections::BTreeSet<&str> = filters
        .lines()
        .filter_map(|l| l.split(" handle ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        handles.len(),
        2,
        "two filters with their own handles:\n{filters}"
    );
    agent.kill_hard();
    assert!(
        !pod.filters().trim().is_empty(),
        "clsact filters outlive a SIGKILL:\n{}",
        pod.filters()
    );
    let cleanup = chaos_tests::chaos(&["cleanup"]);
    assert_eq!(cleanup.code, Some(0), "{}", cleanup.stderr);
    assert!(
        cleanup.stdout.contains(r#""filters_removed":2"#),
        "{}",
        cleanup.stdout
    );
    assert_eq!(pod.filters().trim(), "", "cleanup removed both");
    let qdiscs = Command::new("tc")
        .args(["qdisc", "show", "dev", &pod.host_if])
        .output()
        .expect("tc");
    assert!(
        !String::from_utf8_lossy(&qdiscs.stdout).contains("clsact"),
        "and the clsact qdisc"
    );
}
