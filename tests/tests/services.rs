//! The example backend of the chaos experiments (src/services.rs, examples/backend): Redis,
//! PostgreSQL and the web API start on loopback, each in its own cgroup; the API caches through
//! Redis; with Redis gone it answers 503, or serves from PostgreSQL with --fallback; and every
//! guard leaves nothing behind.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use chaos_tests::{
    TestCgroup, require_root,
    services::{Postgres, Redis, WebApi, cgroup_pids},
};

#[test]
fn without_fallback_a_dead_redis_is_a_503() {
    redis_dies(false);
}

#[test]
fn with_fallback_a_dead_redis_is_served_from_postgres() {
    redis_dies(true);
}

fn redis_dies(fallback: bool) {
    require_root();
    let mode = if fallback { "fallback" } else { "no-fallback" };
    let redis_cgroup = TestCgroup::new("svc-redis");
    let pg_cgroup = TestCgroup::new("svc-pg");
    let api_cgroup = TestCgroup::new("svc-api");

    let redis = Redis::start(&redis_cgroup);
    let pg = Postgres::start(&pg_cgroup);
    let api = WebApi::start(&api_cgroup, &redis, &pg, fallback);
    println!(
        "{mode}: started redis in {:?}, postgres in {:?}, the API in {:?}",
        redis.started_in, pg.started_in, api.started_in
    );
    // Each service in its own cgroup (PostgreSQL's backends with their postmaster).
    assert!(!cgroup_pids(&redis_cgroup).is_empty());
    assert!(cgroup_pids(&pg_cgroup).len() > 1, "postmaster and children");
    assert!(!cgroup_pids(&api_cgroup).is_empty());
    assert_eq!(pg.psql("SELECT count(*) FROM items"), "100");

    // A read-through cache: the first read misses, the next (within the 1 s TTL) hits, and
    // after the TTL it misses again.
    let item = |expect_status: u16| {
        let begin = Instant::now();
        let (status, body) = api.get_json("/items/7");
        assert_eq!(status, expect_status, "{body}\n{}", api.log());
        (body, begin.elapsed())
    };
    let (first, took) = item(200);
    assert_eq!(
        first,
        serde_json::json!({"id": 7, "name": "item 7", "source": "db"})
    );
    println!("{mode}: miss (db) in {took:?}");
    let (second, took) = item(200);
    assert_eq!(second["source"], "cache", "{second}");
    println!("{mode}: hit (cache) in {took:?}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(item(200).0["source"], "db", "the 1 s TTL expired");

    let (status, body) = api.get_json("/items/1000");
    assert_eq!((status, &body["error"]), (404, &"no item 1000".into()));
    assert_eq!(api.get("/healthz"), Ok((200, "ok".to_string())));

    // Redis dies (the guard kills it): new connections are refused.
    let redis_pattern = format!("redis-server 127.0.0.1:{}", redis.port);
    let redis_dir = redis.dir().to_path_buf();
    drop(redis);
    let (answer, took) = item(if fallback { 200 } else { 503 });
    println!("{mode}: redis down: {answer} in {took:?}");
    if fallback {
        assert_eq!(answer["source"], "db-fallback", "{answer}");
        assert_eq!(answer["name"], "item 7", "{answer}");
        assert!(api.log().contains("serving from postgres"), "{}", api.log());
    } else {
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("redis: "), "{answer}");
    }
    assert_eq!(api.get("/healthz"), Ok((200, "ok".to_string())));

    // PostgreSQL dies: no fallback for the source of truth, in either mode.
    let pg_pattern = pg.dir().to_string_lossy().into_owned();
    let pg_dir = pg.dir().to_path_buf();
    let shm_id = postgres_shm_id(pg.dir());
    assert!(shm_id.is_some(), "postmaster.pid names a shared memory id");
    drop(pg);
    let (answer, _) = item(503);
    if fallback {
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("postgres: "), "{answer}");
    }
    assert_eq!(api.get("/healthz"), Ok((200, "ok".to_string())));

    let api_pattern = format!("app.py --port {}", api.port);
    let api_dir = api.dir().to_path_buf();
    drop(api);

    // Nothing left: no processes (by command line, and in the cgroups), no temporary
    // directories, no shared memory segment; then the cgroups themselves go.
    for pattern in [&redis_pattern, &pg_pattern, &api_pattern] {
        let pgrep = Command::new("pgrep")
            .args(["-a", "-f", pattern])
            .output()
            .expect("pgrep");
        assert!(
            !pgrep.status.success(),
            "left running: {}",
            String::from_utf8_lossy(&pgrep.stdout)
        );
    }
    for cgroup in [&redis_cgroup, &pg_cgroup, &api_cgroup] {
        assert_eq!(cgroup_pids(cgroup), Vec::<i32>::new(), "{:?}", cgroup.path);
    }
    for dir in [&redis_dir, &pg_dir, &api_dir] {
        assert!(!dir.exists(), "left behind: {}", dir.display());
    }
    let segments = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    assert!(
        !segments
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == shm_id.map(|id| id.to_string()).as_deref()),
        "shared memory segment {shm_id:?} left behind"
    );
    let cgroup_paths: Vec<PathBuf> = [&redis_cgroup, &pg_cgroup, &api_cgroup]
        .iter()
        .map(|c| c.path.clone())
        .collect();
    drop((api_cgroup, pg_cgroup, redis_cgroup));
    for path in cgroup_paths {
        assert!(!path.exists(), "cgroup left behind: {}", path.display());
    }
}

/// The System V shared memory id of a running cluster: the second number on the 7th line of
/// postmaster.pid.
fn postgres_shm_id(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()?
        .lines()
        .nth(6)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
