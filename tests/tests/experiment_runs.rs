//! `chaos-bpf experiment run` end to end with the guides' backend (examples/backend: a Flask API
//! on Redis and PostgreSQL, each started here in its own cgroup on loopback) and the files of
//! examples/experiments, scaled down in time. The verdict is asserted both ways: the API with a
//! fallback passes, the same experiment without one fails with exit 1 and a JUnit failure naming
//! the condition; an abort reverts every fault within a probe interval; a broken warm-up
//! injects nothing; bad files are refused with file, line, column and field.
use std::{path::Path, process::Command};

use chaos_tests::{
    KnobCgroup, TempFile, TestCgroup, chaos_bin, require_root,
    services::{Postgres, Redis, WebApi},
};
use serde_yaml::Value;

/// The backend, each service in a cgroup of its own.
struct Backend {
    api: WebApi,
    _redis: Redis,
    _postgres: Postgres,
    redis_port: u16,
    pg_port: u16,
    api_cgroup: TestCgroup,
    /// Redis's cgroup, with its cpu and memory knobs.
    redis_cgroup: KnobCgroup,
    _pg_cgroup: TestCgroup,
}

impl Backend {
    fn start(fallback: bool) -> Self {
        Self::start_with(fallback, &[])
    }

    /// With more of app.py's options.
    fn start_with(fallback: bool, options: &[&str]) -> Self {
        let (redis_cgroup, pg_cgroup) = (KnobCgroup::new("exp-redis"), TestCgroup::new("exp-pg"));
        let api_cgroup = TestCgroup::new("exp-api");
        let redis = Redis::start_with_knobs(&redis_cgroup);
        let postgres = Postgres::start(&pg_cgroup);
        let api = WebApi::start_with_options(&api_cgroup, &redis, &postgres, fallback, options);
        Self {
            api,
            redis_port: redis.port,
            pg_port: postgres.port,
            _redis: redis,
            _postgres: postgres,
            api_cgroup,
            redis_cgroup,
            _pg_cgroup: pg_cgroup,
        }
    }
}

/// One of examples/experiments, pointed at this backend, with the schedule given.
fn example(
    name: &str,
    backend: &Backend,
    schedule: (&str, &str, &str),
    edit: impl FnOnce(&mut Value),
) -> TempFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/experiments")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut doc: Value = serde_yaml::from_str(&text).expect("example YAML");
    doc["steadyState"]["probes"][0]["http"]["url"] = format!("{}/items/7", backend.api.url).into();
    for timed in doc["faults"].as_sequence_mut().expect("faults") {
        timed["fault"]["scope"]["cgroup"] = backend.api_cgroup.path.display().to_string().into();
        timed["fault"]["match"]["port"] = vec![Value::from(backend.redis_port)].into();
        if timed.get("for").is_some() {
            timed["for"] = schedule.1.into();
        }
    }
    let (warmup, duration, cooldown) = schedule;
    doc["schedule"] = serde_yaml::from_str(&format!(
        "{{warmup: {warmup}, duration: {duration}, cooldown: {cooldown}}}"
    ))
    .expect("schedule");
    edit(&mut doc);
    TempFile::new(name, &serde_yaml::to_string(&doc).expect("YAML"))
}

struct Verdict {
    code: Option<i32>,
    stderr: String,
    report: serde_json::Value,
    junit: String,
    html: String,
}

fn run_experiment(file: &TempFile) -> Verdict {
    run_experiment_with(file, &[])
}

fn run_experiment_with(file: &TempFile, extra: &[&str]) -> Verdict {
    let outputs = [
        TempFile::new("report.json", ""),
        TempFile::new("junit.xml", ""),
        TempFile::new("report.html", ""),
    ];
    let output = Command::new(chaos_bin())
        .args(["experiment", "run", file.arg()])
        .args(extra)
        .args([
            "--report",
            outputs[0].arg(),
            "--junit",
            outputs[1].arg(),
            "--html",
            outputs[2].arg(),
        ])
        .output()
        .expect("chaos-bpf experiment run");
    let read = |file: &TempFile| std::fs::read_to_string(&file.path).unwrap_or_default();
    Verdict {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report: serde_json::from_str(&read(&outputs[0])).unwrap_or_default(),
        junit: read(&outputs[1]),
        html: read(&outputs[2]),
    }
}

/// "If Redis' name fails to resolve for 30 s, the API keeps answering from Postgres": the API
/// reaches Redis by a name a real dnsmasq serves (its own resolv.conf, in a mount namespace),
/// and the experiment's dns-error answers its lookups with NXDOMAIN. With a fallback the verdict
/// passes; without one it fails.
#[test]
fn redis_unresolvable_holds_with_a_fallback_and_fails_without_one() {
    require_root();
    const NAME: &str = "redis.backend.internal";
    let _dns = chaos_tests::services::Dnsmasq::start_on("127.0.0.1", &[(NAME, "127.0.0.1")]);
    let resolv_conf = TempFile::new(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    for (fallback, expected_code) in [(true, 0), (false, 1)] {
        let (redis_cgroup, pg_cgroup) = (TestCgroup::new("dns-redis"), TestCgroup::new("dns-pg"));
        let api_cgroup = TestCgroup::new("dns-api");
        let redis = Redis::start(&redis_cgroup);
        let postgres = Postgres::start(&pg_cgroup);
        let api = WebApi::start_resolving(
            &api_cgroup,
            &redis,
            &postgres,
            fallback,
            NAME,
            &resolv_conf.path,
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/experiments/redis-unresolvable.yaml");
        let mut doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("example")).expect("YAML");
        doc["steadyState"]["probes"][0]["http"]["url"] = format!("{}/items/7", api.url).into();
        let fault = &mut doc["faults"][0];
        fault["for"] = "4s".into();
        fault["fault"]["scope"]["cgroup"] = api_cgroup.path.display().to_string().into();
        doc["schedule"] =
            serde_yaml::from_str("{warmup: 2s, duration: 4s, cooldown: 2s}").expect("schedule");
        doc["abort"][0]["consecutiveFailures"] = 1000.into();
        let file = TempFile::new(
            "redis-unresolvable.yaml",
            &serde_yaml::to_string(&doc).expect("YAML"),
        );
        let verdict = run_experiment(&file);
        assert_eq!(
            verdict.code,
            Some(expected_code),
            "fallback {fallback}: {}\n{}",
            verdict.stderr,
            api.log()
        );
        let fault = &verdict.report["faults"][0];
        assert!(fault["injected"].as_u64().unwrap_or(0) > 10, "{fault}");
        let injection = &verdict.report["stats"]["api"]["injection"];
        if fallback {
            assert_eq!(injection["failures"], 0, "{injection}");
        } else {
            assert!(verdict.junit.contains("<failure"), "{}", verdict.junit);
        }
    }
}

#[test]
fn redis_refused_holds_with_a_fallback_and_fails_without_one() {
    require_root();
    for (fallback, expected_code) in [(true, 0), (false, 1)] {
        let backend = Backend::start(fallback);
        // The abort rule stays out of the way: this is about the verdict.
        let file = example("redis-refused.yaml", &backend, ("2s", "4s", "2s"), |doc| {
            doc["abort"][0]["consecutiveFailures"] = 1000.into();
        });
        let verdict = run_experiment(&file);
        assert_eq!(
            verdict.code,
            Some(expected_code),
            "fallback {fallback}: {}",
            verdict.stderr
        );
        let fault = &verdict.report["faults"][0];
        assert!(fault["injected"].as_u64().unwrap_or(0) > 10, "{fault}");
        let injection = &verdict.report["stats"]["api"]["injection"];
        if fallback {
            assert_eq!(injection["failures"], 0, "{injection}");
            assert!(!verdict.junit.contains("<failure"), "{}", verdict.junit);
        } else {
            assert!(
                injection["error_ratio"].as_f64().unwrap_or(0.0) > 0.9,
                "{injection}"
            );
            assert!(
                verdict.junit.contains(
                    "<failure message=\"api.error_ratio &lt; 0.01 did not hold in injection\">"
                ),
                "{}",
                verdict.junit
            );
            assert!(
                verdict
                    .stderr
                    .contains("FAIL injection api.error_ratio < 0.01"),
                "{}",
                verdict.stderr
            );
        }
        // Recovered: the cool-down held, and the API answers now.
        assert!(verdict.junit.contains("name=\"api.success\""));
        assert_eq!(backend.api.get("/items/7").map(|(s, _)| s), Ok(200));
        assert!(verdict.html.contains("<svg") && verdict.html.contains("class=\"fault\""));
    }
}

/// examples/experiments/postgres-pool-limited.yaml: the API, connecting to Postgres afresh for
/// every query (no idle pool), may hold 2 connections at once. Its probe needs one at a time, so
/// the hypothesis holds, and the fault counted every connection the API opened meanwhile.
#[test]
fn an_api_needing_one_connection_at_a_time_holds_under_a_pool_of_two() {
    require_root();
    let backend = Backend::start_with(true, &["--pg-pool-idle", "0"]);
    let pg_port = backend.pg_port;
    let file = example(
        "postgres-pool-limited.yaml",
        &backend,
        ("2s", "6s", "2s"),
        |doc| {
            doc["faults"][0]["fault"]["match"]["port"] = vec![Value::from(pg_port)].into();
        },
    );
    let verdict = run_experiment(&file);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stderr);
    let fault = &verdict.report["faults"][0];
    assert_eq!(fault["kind"], "connection-limit", "{fault}");
    // A cache miss a second at least over 6 s, each a connection of its own, all admitted.
    assert!(fault["matched"].as_u64().unwrap_or(0) >= 3, "{fault}");
    assert_eq!(fault["injected"], 0, "{fault}");
    let injection = &verdict.report["stats"]["api"]["injection"];
    assert_eq!(injection["failures"], 0, "{injection}");
    assert!(
        verdict
            .junit
            .contains("name=\"api.p99_latency &lt; 300ms\"")
    );
}

/// examples/experiments/redis-cpu-starved.yaml: Redis held to a tenth of a CPU by its own
/// cgroup knob still answers the API's light load; the knob is back afterwards.
#[test]
fn redis_at_a_tenth_of_a_cpu_keeps_the_api_under_1_percent_errors() {
    require_root();
    let backend = Backend::start(false);
    let redis_cgroup = backend.redis_cgroup.cgroup.path.display().to_string();
    let knob = backend
        .redis_cgroup
        .knob("cpu", "cpu.cfs_quota_us", "cpu.max");
    let before = backend.redis_cgroup.read(&knob);
    let file = example(
        "redis-cpu-starved.yaml",
        &backend,
        ("2s", "6s", "2s"),
        |doc| {
            let fault = &mut doc["faults"][0]["fault"];
            fault["scope"]["cgroup"] = redis_cgroup.clone().into();
            if let Some(fault) = fault.as_mapping_mut() {
                fault.remove("match");
            }
        },
    );
    let verdict = run_experiment(&file);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stderr);
    let fault = &verdict.report["faults"][0];
    assert_eq!(fault["kind"], "cpu-pressure", "{fault}");
    let injection = &verdict.report["stats"]["api"]["injection"];
    assert!(
        injection["error_ratio"].as_f64().unwrap_or(1.0) < 0.01,
        "{injection}"
    );
    assert_eq!(backend.redis_cgroup.read(&knob), before, "the knob is back");
    assert!(verdict.junit.contains("name=\"api.error_ratio &lt; 0.01\""));
}

#[test]
fn reset_mid_stream_on_redis_holds_with_a_fallback() {
    require_root();
    let backend = Backend::start(true);
    let file = example("redis-reset.yaml", &backend, ("2s", "4s", "2s"), |_| {});
    let verdict = run_experiment(&file);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stderr);
    assert!(
        verdict.report["faults"][0]["injected"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{}",
        verdict.report["faults"]
    );
}

#[test]
fn a_breaching_probe_aborts_and_reverts_every_fault_within_one_interval() {
    require_root();
    let backend = Backend::start(false);
    let file = example("redis-refused.yaml", &backend, ("2s", "20s", "2s"), |doc| {
        doc["abort"][0]["consecutiveFailures"] = 3.into();
    });
    let verdict = run_experiment(&file);
    assert_eq!(verdict.code, Some(3), "{}", verdict.stderr);
    assert_eq!(
        verdict.report["outcome"], "aborted",
        "{}",
        verdict.report["outcome"]
    );
    // The third failed check in a row, and the fault's end: within one probe interval (100 ms).
    let samples = verdict.report["samples"].as_array().expect("samples");
    let breach = samples
        .iter()
        .rev()
        .find(|s| s["ok"] == false)
        .expect("a failed check");
    let breached_at = breach["at_s"].as_f64().unwrap_or(0.0)
        + breach["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let ended_at = verdict.report["faults"][0]["end_s"]
        .as_f64()
        .expect("ended");
    println!(
        "abort: breaching check answered at {breached_at:.3}s, fault reverted at {ended_at:.3}s"
    );
    assert!(
        ended_at - breached_at < 0.1,
        "reverted {:.3}s after the breach",
        ended_at - breached_at
    );
    assert!(ended_at < 2.0 + 5.0, "aborted early in a 20 s injection");
    assert_eq!(
        backend.api.get("/items/7").map(|(s, _)| s),
        Ok(200),
        "the API's calls succeed afterwards"
    );
    assert!(
        verdict.junit.contains("<failure message=\"aborted\">"),
        "{}",
        verdict.junit
    );
}

#[test]
fn a_steady_state_that_does_not_hold_injects_nothing() {
    require_root();
    let backend = Backend::start(true);
    let file = example("redis-refused.yaml", &backend, ("1s", "4s", "1s"), |doc| {
        // An endpoint that never answers 200: the steady state does not hold.
        doc["steadyState"]["probes"][0]["http"]["url"] =
            format!("{}/items/1000", backend.api.url).into();
    });
    let verdict = run_experiment(&file);
    assert_eq!(verdict.code, Some(3), "{}", verdict.stderr);
    assert_eq!(verdict.report["outcome"], "steady_state_failed");
    assert_eq!(
        verdict.report["faults"],
        serde_json::json!([]),
        "nothing was injected"
    );
    assert!(
        verdict.stderr.contains("nothing was injected"),
        "{}",
        verdict.stderr
    );
}

#[test]
fn bad_files_name_the_file_line_column_and_field() {
    let good = "apiVersion: chaos-bpf.dev/v1\nkind: Experiment\nmetadata: {name: x}\nsteadyState:\n  probes:\n    - name: api\n      tcp: {address: 127.0.0.1:1}\nhypothesis:\n  injection: [api.error_ratio < 0.5]\nfaults:\n  - fault:\n      kind: connect-error\n      scope: {cgroup: /sys/fs/cgroup/unified}\n      match:\n        port: [6379]\nschedule: {warmup: 1s, duration: 1s, cooldown: 1s}\n";
    for (broken, line_col, field, accepted) in [
        (
            good.replace("port: [6379]", "port: [70000]"),
            ":15:",
            "faults[0].fault.match.port[0]",
            "1 to 65535",
        ),
        (
            good.replace("kind: connect-error", "kind: conect-error"),
            ":12:",
            "faults[0].fault.kind",
            "connect-error",
        ),
        (
            good.replace("api.error_ratio < 0.5", "api.error_rate < 0.5"),
            ":9:",
            "hypothesis.injection[0]",
            "error_ratio",
        ),
        (
            good.replace("    - name: api", "    - nme: api"),
            ":6:",
            "steadyState.probes[0]",
            "name",
        ),
    ] {
        let file = TempFile::new("bad-experiment.yaml", &broken);
        let output = Command::new(chaos_bin())
            .args(["experiment", "run", file.arg()])
            .output()
            .expect("chaos-bpf");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&format!("{}{line_col}", file.arg())),
            "{stderr}"
        );
        assert!(stderr.contains(field), "{stderr}");
        assert!(stderr.contains(accepted), "{stderr}");
    }
}

#[test]
fn the_html_report_renders_in_a_browser() {
    require_root();
    let backend = Backend::start(true);
    let file = example("redis-refused.yaml", &backend, ("1s", "2s", "1s"), |_| {});
    // The browser goes by the file's extension.
    let page =
        HtmlFile(std::env::temp_dir().join(format!("chaos-report-{}.html", std::process::id())));
    let output = Command::new(chaos_bin())
        .args(["experiment", "run", file.arg(), "--html"])
        .arg(&page.0)
        .output()
        .expect("chaos-bpf");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shot = HtmlFile(page.0.with_extension("png"));
    let browser = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--window-size=1100,1400",
            ])
            .args(extra)
            .arg(format!("file://{}", page.0.display()))
            .output()
            .expect("chromium (cargo xtask setup installs it)")
    };
    let shown = browser(&[&format!("--screenshot={}", shot.0.display())]);
    let png = std::fs::read(&shot.0).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    // The DOM the browser built: the timeline, the fault window, the verdict.
    let dom = String::from_utf8_lossy(&browser(&["--dump-dom"]).stdout).into_owned();
    for needle in [
        "<svg",
        "<polyline",
        "class=\"fault\"",
        "class=\"error-ratio\"",
        "held",
    ] {
        assert!(
            dom.contains(needle),
            "{needle} missing from the rendered page"
        );
    }
}

/// A file written by the test under a name with its extension, removed when it ends.
struct HtmlFile(std::path::PathBuf);

impl Drop for HtmlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// --dry-run: the faults attach in shadow mode; the report shows what they would have hit on
/// the live traffic, and the API without a fallback is untouched.
#[test]
fn a_dry_run_measures_the_blast_radius_and_injects_nothing() {
    require_root();
    let backend = Backend::start(false);
    let file = example("redis-refused.yaml", &backend, ("1s", "3s", "1s"), |_| {});
    let verdict = run_experiment_with(&file, &["--dry-run"]);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stderr);
    let fault = &verdict.report["faults"][0];
    assert_eq!(fault["dry_run"], true, "{fault}");
    assert!(fault["injected"].as_u64().unwrap_or(0) > 10, "{fault}");
    assert_eq!(verdict.report["stats"]["api"]["injection"]["failures"], 0);
    assert!(
        verdict.stderr.contains("would inject"),
        "{}",
        verdict.stderr
    );
}

/// The guides' "Redis dies": a kill fault on Redis' cgroup during the experiment, a supervisor
/// (this test) starting it again; the API with a fallback keeps the error ratio at 0.
#[test]
fn redis_killed_and_restarted_holds_with_a_fallback() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    require_root();
    let redis_cgroup = TestCgroup::new("exp-killed-redis");
    let pg_cgroup = TestCgroup::new("exp-killed-pg");
    let api_cgroup = TestCgroup::new("exp-killed-api");
    let redis = Redis::start(&redis_cgroup);
    let port = redis.port;
    let postgres = Postgres::start(&pg_cgroup);
    let api = WebApi::start(&api_cgroup, &redis, &postgres, true);
    // The supervisor: whenever Redis' cgroup is empty, Redis starts again on its port.
    let current = Arc::new(Mutex::new(Some(redis)));
    let stop = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(Mutex::new(0u32));
    let supervisor = {
        let (current, stop, restarts) = (current.clone(), stop.clone(), restarts.clone());
        let procs = redis_cgroup.path.join("cgroup.procs");
        let cgroup_path = redis_cgroup.path.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let empty = std::fs::read_to_string(&procs).is_ok_and(|p| p.trim().is_empty());
                if empty {
                    // The same directory; forgotten below so that it is not removed twice.
                    let again = TestCgroup {
                        path: cgroup_path.clone(),
                    };
                    let restarted = Redis::start_on(&again, port);
                    std::mem::forget(again);
                    *current.lock().expect("redis") = Some(restarted);
                    *restarts.lock().expect("restarts") += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/experiments/redis-killed.yaml");
    let mut doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("example")).expect("YAML");
    doc["steadyState"]["probes"][0]["http"]["url"] = format!("{}/items/7", api.url).into();
    doc["faults"][0]["fault"]["scope"]["cgroup"] = redis_cgroup.path.display().to_string().into();
    doc["faults"][0]["at"] = "1s".into();
    doc["schedule"] =
        serde_yaml::from_str("{warmup: 2s, duration: 4s, cooldown: 2s}").expect("schedule");
    let file = TempFile::new(
        "redis-killed.yaml",
        &serde_yaml::to_string(&doc).expect("YAML"),
    );
    let verdict = run_experiment(&file);
    stop.store(true, Ordering::Relaxed);
    supervisor.join().expect("supervisor");
    assert_eq!(verdict.code, Some(0), "{}", verdict.stderr);
    let fault = &verdict.report["faults"][0];
    assert_eq!(fault["kind"], "kill", "{fault}");
    assert!(
        fault["injected"].as_u64().unwrap_or(0) >= 1,
        "processes killed: {fault}"
    );
    assert!(
        *restarts.lock().expect("restarts") >= 1,
        "Redis was killed and restarted"
    );
    drop(current.lock().expect("redis").take());
}

/// An experiment through a node agent (--agent): the agent arms and stops the fault; a real
/// Prometheus scraping the agent answers a prometheus probe with the kernel's injection count;
/// the hypothesis fails without the fallback, so the rollback runs.
#[test]
fn through_an_agent_with_a_prometheus_probe_and_a_rollback() {
    require_root();
    let backend = Backend::start(false);
    let agent = chaos_tests::agent::Agent::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = agent.metrics.expect("metrics address");
    let data = std::env::temp_dir().join(format!("chaos-exp-prometheus-{}", std::process::id()));
    let config = TempFile::new(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: chaos-bpf\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    );
    let web = chaos_tests::agent::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.arg()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (cargo xtask setup installs it)");
    let rolled_back = TempFile::new("rolled-back", "");
    let _ = std::fs::remove_file(&rolled_back.path);
    let file = example("redis-refused.yaml", &backend, ("2s", "6s", "1s"), |doc| {
        doc["abort"] = Value::Sequence(Vec::new());
        doc["steadyState"]["probes"]
            .as_sequence_mut()
            .expect("probes")
            .push(
                serde_yaml::from_str(&format!(
                    "{{name: injected, prometheus: {{url: 'http://{web}', query: 'sum(chaos_fault_injected_total)'}}, interval: 500ms}}"
                ))
                .expect("probe"),
            );
        doc["hypothesis"]["injection"]
            .as_sequence_mut()
            .expect("conditions")
            .push("injected.max_value >= 1".into());
        doc["rollback"] = serde_yaml::from_str(&format!(
            "{{commands: [[touch, '{}']], when: deviation}}",
            rolled_back.arg()
        ))
        .expect("rollback");
    });
    let address = agent.addr.to_string();
    let verdict = run_experiment_with(
        &file,
        &["--agent", &address, "--token-file", agent.token_file.arg()],
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(verdict.code, Some(1), "{}", verdict.stderr);
    let conditions = verdict.report["conditions"].as_array().expect("conditions");
    let seen = conditions
        .iter()
        .find(|c| c["condition"] == "injected.max_value >= 1")
        .expect("the prometheus condition");
    assert_eq!(
        seen["held"], true,
        "Prometheus saw the agent's injections: {seen}"
    );
    assert!(
        rolled_back.path.exists(),
        "the rollback ran: {}",
        verdict.report["rollback"]
    );
    let faults = agent.get("/v1/faults").json();
    let armed = faults["faults"].as_array().expect("faults");
    assert_eq!(armed.len(), 1, "{faults}");
    assert_eq!(
        armed[0]["state"], "ended",
        "the experiment stopped what it armed"
    );
    assert!(armed[0]["counters"]["injected"].as_u64().unwrap_or(0) > 0);
}

/// No experiment leaves a fault behind: SIGKILLed in the middle of its injection phase, its
/// faults go with its process, and the API without a fallback answers again at once.
#[test]
fn a_killed_experiment_leaves_no_fault_behind() {
    require_root();
    let backend = Backend::start(false);
    let file = example("redis-refused.yaml", &backend, ("1s", "60s", "1s"), |doc| {
        doc["abort"] = Value::Sequence(Vec::new());
    });
    let mut run = Command::new(chaos_bin())
        .args(["experiment", "run", file.arg()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chaos-bpf experiment run");
    let injected = chaos_tests::eventually(std::time::Duration::from_secs(20), || {
        !chaos_tests::attached_program_ids(&backend.api_cgroup.path).is_empty()
            && backend.api.get("/items/7").map(|(s, _)| s) == Ok(503)
    });
    assert!(injected, "the fault was armed: {}", backend.api.log());
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        chaos_tests::attached_program_ids(&backend.api_cgroup.path).is_empty(),
        "nothing stays attached"
    );
    assert_eq!(backend.api.get("/items/7").map(|(s, _)| s), Ok(200));
}
