//! The processes the tests and the demo put inside a target cgroup: clients and servers that
//! report what the kernel did to them as one JSON line.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chaos_tests::close_without_time_wait;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "connect" => connect(arg(1).parse()?, arg(2).parse()?),
        "connect-watch" => connect_watch(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "udp-send" => udp_send(arg(1).parse()?, arg(2).parse()?),
        "udp-recv" => udp_recv(
            arg(1).parse()?,
            arg(2).parse()?,
            Duration::from_millis(arg(3).parse()?),
        ),
        "tcp-send" => tcp_send(arg(1).parse()?, arg(2).parse()?),
        "http-serve" => http_serve(arg(1).parse()?),
        "http-load" => http_load(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "socket-call" => socket_call(arg(1), arg(2).parse()?, arg(3).parse()?),
        "tcp-sink" => tcp_sink(arg(1).parse()?),
        "udp-echo" => udp_echo(arg(1).parse()?),
        "udp-rtt" => udp_rtt(arg(1).parse()?, arg(2).parse()?),
        "udp-load" => udp_load(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "tcp-echo" => tcp_echo(arg(1).parse()?),
        "tcp-rr" => tcp_rr(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "udp-flood" => udp_flood(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "resolve" => resolve(arg(1), arg(2)),
        "dns-serve" => dns_serve(arg(1).parse()?),
        "dns-query" => dns_query(arg(1).parse()?, arg(2), arg(3).parse()?),
        "alloc" => alloc(arg(1).parse()?, Duration::from_millis(arg(2).parse()?)),
        "hold" => hold(
            arg(1).parse()?,
            arg(2).parse()?,
            Duration::from_millis(arg(3).parse()?),
        ),
        "file-ops" => file_ops(arg(1)),
        "sqlite-write" => sqlite_write(arg(1), arg(2).parse()?),
        "connect-rate" => connect_rate(
            arg(1).parse()?,
            arg(2).parse()?,
            Duration::from_millis(arg(3).parse()?),
        ),
        other => bail!(
            "unknown command {other:?}; accepted: connect ADDR N | udp-send ADDR N | \
             udp-recv ADDR N IDLE_MS | tcp-send ADDR BYTES | http-serve ADDR | http-load ADDR MS | \
             socket-call read|recv|recvfrom|recvmsg|write|send|sendto|sendmsg ADDR N | \
             udp-echo ADDR | udp-rtt ADDR N | udp-load ADDR MS | tcp-echo ADDR | tcp-rr ADDR MS | \
             udp-flood ADDR MS | resolve NAME inet|inet6|any | dns-serve ADDR | \
             dns-query SERVER NAME N | alloc MIB HOLD_MS | hold ADDR N HOLD_MS | \
             connect-rate ADDR PER_SEC MS | file-ops PATH | sqlite-write DB ROWS"
        ),
    }
}

/// N connect() calls; prints how many succeeded, the errno of each failure, and the mean and
/// median time per call (a SYN the listener's full queue dropped costs a 1 s retransmit: the
/// median is the cost of the call itself).
fn connect(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let mut ok = 0;
    let mut errnos: BTreeMap<i32, u32> = BTreeMap::new();
    let mut each_ns = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for _ in 0..count {
        let call = Instant::now();
        let result = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        each_ns.push(call.elapsed().as_nanos() as u64);
        match result {
            Ok(stream) => {
                ok += 1;
                close_without_time_wait(&stream);
            }
            Err(err) => *errnos.entry(err.raw_os_error().unwrap_or(-1)).or_default() += 1,
        }
    }
    let ns_per_connect = started.elapsed().as_nanos() as u64 / u64::from(count.max(1));
    each_ns.sort_unstable();
    let median_ns = each_ns.get(each_ns.len() / 2).copied().unwrap_or(0);
    println!(
        "{}",
        json!({ "ok": ok, "errnos": errnos, "ns_per_connect": ns_per_connect, "median_ns": median_ns })
    );
    Ok(())
}

/// N connections opened at once (one thread each, released together) and held open for the
/// given time: a pool filling up. Prints how many connected and the errno of each failure, as
/// soon as every attempt is done, then holds.
fn hold(addr: SocketAddr, count: u32, hold: Duration) -> anyhow::Result<()> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(count as usize));
    let attempts: Vec<_> = (0..count)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut errnos: BTreeMap<i32, u32> = BTreeMap::new();
    for attempt in attempts {
        match attempt.join().expect("connect thread") {
            Ok(stream) => held.push(stream),
            Err(err) => *errnos.entry(err.raw_os_error().unwrap_or(-1)).or_default() += 1,
        }
    }
    println!("{}", json!({ "ok": held.len(), "errnos": errnos }));
    std::io::stdout().flush()?;
    std::thread::sleep(hold);
    Ok(())
}

/// Opens PATH (creating it), writes 4 KiB, reads them back: prints each step's errno (0 for
/// success; a step after a failed open is not tried and reports -1).
fn file_ops(path: &str) -> anyhow::Result<()> {
    use std::io::{Seek as _, SeekFrom};
    let errno = |err: std::io::Error| err.raw_os_error().unwrap_or(-1);
    let mut report = json!({ "open": -1, "write": -1, "read": -1 });
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Err(err) => report["open"] = json!(errno(err)),
        Ok(mut file) => {
            report["open"] = json!(0);
            report["write"] = json!(file.write_all(&[7u8; 4096]).map_or_else(errno, |()| 0));
            let mut back = Vec::new();
            let read = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut back));
            report["read"] = json!(read.map_or_else(errno, |_| 0));
        }
    }
    println!("{report}");
    Ok(())
}

/// A real database writing: SQLite in WAL mode (exclusive locking) inserts ROWS rows in one
/// transaction into DB.
/// Prints whether it committed, and SQLite's own message and extended code if not.
fn sqlite_write(path: &str, rows: u32) -> anyhow::Result<()> {
    let result = (|| -> rusqlite::Result<()> {
        let mut db = rusqlite::Connection::open(path)?;
        // Exclusive locking keeps the WAL's index in memory rather than in a -shm file, whose
        // sizing would otherwise be the first write to fail.
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, note TEXT)")?;
        let tx = db.transaction()?;
        for n in 0..rows {
            tx.execute(
                "INSERT INTO orders (note) VALUES (?1)",
                [format!("order {n}")],
            )?;
        }
        tx.commit()
    })();
    let report = match result {
        Ok(()) => json!({ "ok": true }),
        Err(err) => json!({
            "ok": false,
            "error": err.to_string(),
            "code": err.sqlite_error().map(|e| e.extended_code),
        }),
    };
    println!("{report}");
    Ok(())
}

/// Connects at PER_SEC attempts a second for the given time, closing each at once, and prints
/// how many connected in each whole second, and in all (the last attempt may start just before
/// the end and finish just after).
fn connect_rate(addr: SocketAddr, per_sec: u32, duration: Duration) -> anyhow::Result<()> {
    let spacing = Duration::from_secs(1) / per_sec.max(1);
    let started = Instant::now();
    let seconds = duration.as_secs() as usize;
    let mut per_second = vec![0u32; seconds.max(1)];
    let mut attempts = 0u32;
    let mut ok = 0u32;
    let mut errnos: BTreeMap<i32, u32> = BTreeMap::new();
    while started.elapsed() < duration {
        let due = started + spacing * attempts;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        attempts += 1;
        let second = started.elapsed().as_secs() as usize;
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                close_without_time_wait(&stream);
                ok += 1;
                if let Some(count) = per_second.get_mut(second) {
                    *count += 1;
                }
            }
            Err(err) => *errnos.entry(err.raw_os_error().unwrap_or(-1)).or_default() += 1,
        }
    }
    println!(
        "{}",
        json!({ "attempts": attempts, "ok": ok, "per_second": per_second, "errnos": errnos })
    );
    Ok(())
}

/// Connects to ADDR in a loop for the given time, and prints a line the moment the outcome
/// changes (the first one included): whether it connected, and when, in CLOCK_MONOTONIC
/// nanoseconds, which the bench compares with the moment it armed or stopped a fault. The
/// line is flushed at once; a connect takes tens of microseconds, so a flip is seen within that.
fn connect_watch(addr: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last: Option<bool> = None;
    let mut out = std::io::stdout();
    while started.elapsed() < duration {
        let result = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        let at_ns = monotonic_ns();
        let ok = match &result {
            Ok(stream) => {
                close_without_time_wait(stream);
                true
            }
            Err(_) => false,
        };
        if last != Some(ok) {
            writeln!(out, "{}", json!({ "ok": ok, "at_ns": at_ns }))?;
            out.flush()?;
            last = Some(ok);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every process of the machine shares.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
    })
}

/// N times: connect to ADDR (a `talk` server), then make one socket call of the given kind on
/// the connection. Prints how many calls succeeded and the errno of each failure.
fn socket_call(kind: &str, addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let mut ok = 0;
    let mut errnos: BTreeMap<i32, u32> = BTreeMap::new();
    for _ in 0..count {
        let stream = TcpStream::connect(addr).context("connect")?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let fd = stream.as_raw_fd();
        let mut buf = [0u8; 64];
        let payload = b"ping";
        // SAFETY: plain syscalls on a connected socket with valid buffers.
        let result = unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut out_iov = libc::iovec {
                iov_base: payload.as_ptr() as *mut _,
                iov_len: payload.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            match kind {
                "read" => libc::read(fd, buf.as_mut_ptr().cast(), buf.len()),
                "recv" => libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0),
                "recvfrom" => libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ),
                "recvmsg" => {
                    msg.msg_iov = &mut iov;
                    msg.msg_iovlen = 1;
                    libc::recvmsg(fd, &mut msg, 0)
                }
                "write" => libc::write(fd, payload.as_ptr().cast(), payload.len()),
                "send" => libc::send(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    libc::MSG_NOSIGNAL,
                ),
                "sendto" => libc::sendto(
                    fd,
                    payload.as_ptr().cast(),
                    payload.len(),
                    libc::MSG_NOSIGNAL,
                    std::ptr::null(),
                    0,
                ),
                "sendmsg" => {
                    msg.msg_iov = &mut out_iov;
                    msg.msg_iovlen = 1;
                    libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
                }
                other => bail!("unknown socket call {other}"),
            }
        };
        if result >= 0 {
            ok += 1;
        } else {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            *errnos.entry(errno).or_default() += 1;
        }
    }
    println!("{}", json!({ "ok": ok, "errnos": errnos }));
    Ok(())
}

/// A UDP socket of `addr`'s family on the unspecified address: the kernel picks the source for
/// the route to `addr`.
fn udp_socket_for(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
}

/// N numbered datagrams, paced so the receiver's buffer never overflows: every loss is chaos's.
fn udp_send(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let socket = udp_socket_for(addr)?;
    let mut failed = 0;
    for seq in 0..count {
        // Sequence number, its complement (so any flipped bit shows), then zeros.
        let mut payload = [0u8; 64];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        payload[4..8].copy_from_slice(&(!seq).to_be_bytes());
        if socket.send_to(&payload, addr).is_err() {
            failed += 1;
        }
        if seq % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!(
        "{}",
        json!({ "sent": count, "send_errors": failed, "cpu_ns": cpu_ns() })
    );
    Ok(())
}

/// This process's CPU time so far, user and system (the kernel's send path included).
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Receives numbered datagrams until `idle` passes without one; prints the distinct count.
/// Prints "ready" first, so the caller knows when to start sending.
fn udp_recv(addr: SocketAddr, expected: u32, idle: Duration) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    force_receive_buffer(&socket, 32 << 20);
    // The sender may start late (chaos-bpf arming under emulation takes seconds): wait long for
    // the first datagram, then end after `idle` without one.
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    println!("ready {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let mut seen = BTreeSet::new();
    let (mut delivered, mut altered, mut duplicates) = (0u32, 0u32, 0u32);
    let mut buf = [0u8; 128];
    while let Ok(n) = socket.recv(&mut buf) {
        if delivered == 0 {
            socket.set_read_timeout(Some(idle))?;
        }
        delivered += 1;
        // udp-send's datagrams: a sequence number, its complement, then zeros (64 bytes).
        let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let check = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let intact =
            n == 64 && seq < expected && check == !seq && buf[8..n].iter().all(|&b| b == 0);
        if !intact {
            altered += 1;
        } else if !seen.insert(seq) {
            duplicates += 1;
        }
        if seen.len() as u32 == expected {
            break;
        }
    }
    // Sequence numbers that never arrived (up to the highest expected), for burst and seed checks.
    let missing: Vec<u32> = (0..expected).filter(|n| !seen.contains(n)).collect();
    println!(
        "{}",
        json!({ "received": seen.len(), "missing": missing, "delivered": delivered, "altered": altered,
                "duplicates": duplicates })
    );
    Ok(())
}

fn force_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: setsockopt with a valid fd and an int option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Sends BYTES over TCP and waits for the server's byte count; prints it and the time taken, or
/// the error that ended the transfer (a reset shows as errno 104).
fn tcp_send(addr: SocketAddr, bytes: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let transfer = || -> std::io::Result<usize> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let chunk = vec![0x5au8; 16 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n])?;
            left -= n;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply.trim().parse().unwrap_or(0))
    };
    let ms = || started.elapsed().as_millis() as u64;
    match transfer() {
        Ok(acknowledged) => println!(
            "{}",
            json!({ "sent": bytes, "acknowledged": acknowledged, "ms": ms() })
        ),
        Err(err) => println!(
            "{}",
            json!({ "sent": bytes, "acknowledged": 0, "error": err.to_string(), "errno": err.raw_os_error(), "ms": ms() })
        ),
    }
    Ok(())
}

/// Echoes every datagram back to its sender. Prints "ready ADDR".
fn udp_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    println!("ready {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let mut buf = [0u8; 256];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], from)?;
    }
}

/// N sequential round trips to a `udp-echo` server; prints each RTT in microseconds (a lost one
/// is skipped after 2 s).
fn udp_rtt(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let socket = udp_socket_for(addr)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut rtts = Vec::new();
    let mut buf = [0u8; 16];
    for seq in 0..count {
        let started = Instant::now();
        socket.send(&seq.to_be_bytes())?;
        // Skip stale echoes of earlier, timed-out probes.
        while let Ok(n) = socket.recv(&mut buf) {
            if n == 4 && buf[..4] == seq.to_be_bytes() {
                rtts.push(started.elapsed().as_micros() as u64);
                break;
            }
        }
    }
    println!("{}", json!({ "rtts_us": rtts }));
    Ok(())
}

/// Request/response against a `udp-echo` server for a while, one datagram each way and a 50 ms
/// timeout: a lost request or reply is a failed request, so the failure share is the loss.
fn udp_load(addr: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let socket = udp_socket_for(addr)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + duration;
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut buf = [0u8; 16];
    let mut seq = 0u32;
    while Instant::now() < deadline {
        seq += 1;
        socket.send(&seq.to_be_bytes())?;
        // An echo of an earlier, timed-out request is not this one's answer.
        let answered = loop {
            match socket.recv(&mut buf) {
                Ok(4) if buf[..4] == seq.to_be_bytes() => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if answered {
            ok += 1
        } else {
            failed += 1
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("{}", json!({ "ok": ok, "failed": failed }));
    Ok(())
}

/// A TCP server that counts each connection's bytes and replies with the count. Prints "ready".
fn tcp_sink(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = write!(stream, "{total}");
        });
    }
    Ok(())
}

/// A tiny HTTP server: every request gets "200 OK". Prints "ready ADDR" once listening.
fn http_serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            if stream.read(&mut buf).is_ok() {
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
            }
        });
    }
    Ok(())
}

/// GET / in a loop for MS milliseconds, each with a 1 s timeout; prints successes and failures.
fn http_load(addr: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    while Instant::now() < deadline {
        match http_get(addr) {
            Ok(()) => ok += 1,
            Err(err) => {
                failed += 1;
                *errors.entry(err.to_string()).or_default() += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "{}",
        json!({ "ok": ok, "failed": failed, "errors": errors })
    );
    Ok(())
}

fn http_get(addr: SocketAddr) -> std::io::Result<()> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    if response.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("bad response"))
    }
}

/// Size of a request and of its response in `tcp-rr`: a small RPC.
const RR_BYTES: usize = 64;

/// Echoes every connection's bytes back, one thread per connection.
fn tcp_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut buf = [0u8; RR_BYTES];
            while stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {}
        });
    }
    Ok(())
}

/// Request/response over one TCP connection for `duration`: each transaction sends RR_BYTES and
/// waits for them to come back, so the rate measures what each packet costs on its way.
fn tcp_rr(addr: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut buf = [7u8; RR_BYTES];
    let started = Instant::now();
    let mut transactions = 0u64;
    while started.elapsed() < duration {
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        transactions += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "transactions": transactions, "per_second": transactions as f64 / seconds })
    );
    Ok(())
}

/// 64-byte datagrams to `addr` as fast as the stack takes them, for `duration`: sends per second
/// (refused ones too: an iptables DROP refuses with EPERM), the refusals, and the sender's CPU
/// time per send (TC egress and netfilter OUTPUT run in its context).
fn udp_flood(addr: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let socket = udp_socket_for(addr)?;
    socket.connect(addr)?;
    let payload = [0u8; 64];
    let (started, cpu_before) = (Instant::now(), cpu_ns());
    let (mut sent, mut errors) = (0u64, 0u64);
    while started.elapsed() < duration {
        for _ in 0..256 {
            match socket.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_ns() - cpu_before;
    let attempts = sent + errors;
    println!(
        "{}",
        json!({
            "sent": sent,
            "send_errors": errors,
            "per_second": attempts as f64 / seconds,
            "cpu_ns_per_datagram": cpu as f64 / attempts.max(1) as f64,
        })
    );
    Ok(())
}

/// glibc's getaddrinfo for NAME (no AI_ADDRCONFIG, so a namespace with only lo still asks): the
/// addresses, or the error as the resolver reports it (EAI_NONAME, EAI_AGAIN, ...), and how long
/// the lookup took.
fn resolve(name: &str, family: &str) -> anyhow::Result<()> {
    let family = match family {
        "inet" => libc::AF_INET,
        "inet6" => libc::AF_INET6,
        _ => libc::AF_UNSPEC,
    };
    let node = std::ffi::CString::new(name)?;
    // SAFETY: zeroed addrinfo is a valid "no hints" value, then the fields set.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = family;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut found: *mut libc::addrinfo = std::ptr::null_mut();
    let started = Instant::now();
    // SAFETY: valid C strings and out pointer; the list is freed below.
    let status = unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), &hints, &mut found) };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let mut addresses = Vec::new();
    let mut entry = found;
    while !entry.is_null() {
        // SAFETY: a node of the list getaddrinfo returned.
        let info = unsafe { &*entry };
        // SAFETY: ai_addr holds ai_addrlen bytes of a sockaddr of ai_family.
        let addr = unsafe {
            match info.ai_family {
                libc::AF_INET => {
                    let sin = &*(info.ai_addr as *const libc::sockaddr_in);
                    std::net::IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                _ => {
                    let sin6 = &*(info.ai_addr as *const libc::sockaddr_in6);
                    std::net::IpAddr::from(sin6.sin6_addr.s6_addr)
                }
            }
        };
        addresses.push(addr.to_string());
        entry = info.ai_next;
    }
    if !found.is_null() {
        // SAFETY: the list getaddrinfo allocated.
        unsafe { libc::freeaddrinfo(found) };
    }
    let error = match status {
        0 => None,
        // glibc's values (netdb.h).
        -2 => Some("EAI_NONAME".to_string()),
        -3 => Some("EAI_AGAIN".to_string()),
        -4 => Some("EAI_FAIL".to_string()),
        -5 => Some("EAI_NODATA".to_string()),
        other => Some(format!("EAI {other}")),
    };
    println!(
        "{}",
        json!({"name": name, "addresses": addresses, "error": error, "elapsed_ms": elapsed_ms})
    );
    Ok(())
}

/// A DNS query for NAME (type A, one question, as resolvers send it) with this id.
fn dns_query_packet(name: &str, id: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    // Recursion desired; one question.
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// A minimal DNS server for the VM suite (which has no dnsmasq): every A query gets 10.9.9.9,
/// anything else an empty NOERROR answer.
/// Allocates MIB mebibytes one at a time, touching every page, holds them for HOLD_MS, and
/// prints how long the allocation took (reclaim under memory.high slows it down; memory.max
/// ends it with the OOM killer's SIGKILL).
fn alloc(mib: usize, hold: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for _ in 0..mib {
        held.push(vec![1u8; 1 << 20]);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(hold);
    let total: usize = held
        .iter()
        .map(|chunk| chunk[chunk.len() / 2] as usize)
        .sum();
    println!("{}", json!({ "allocated_mib": total, "ms": ms }));
    Ok(())
}

fn dns_serve(addr: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    println!("ready {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = socket.recv_from(&mut buf)?;
        if len < 17 || buf[2] & 0x80 != 0 {
            continue;
        }
        let question_end = {
            let mut at = 12;
            while at < len && buf[at] != 0 {
                at += 1 + usize::from(buf[at]);
            }
            (at + 5).min(len)
        };
        let mut reply = buf[..question_end].to_vec();
        reply[2] = 0x81; // response, recursion desired
        reply[3] = 0x80; // recursion available, NOERROR
        reply[10] = 0; // no additional records (the question's EDNS is not echoed)
        reply[11] = 0;
        let qtype = u16::from_be_bytes([buf[question_end - 4], buf[question_end - 3]]);
        if qtype == 1 {
            reply[7] = 1; // one answer: the name (pointer to offset 12), A, IN, TTL 0, 10.9.9.9
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 9, 9, 9]);
        }
        socket.send_to(&reply, from)?;
    }
}

/// N sequential A queries for NAME to SERVER, each waiting up to 1 s: how many came back with
/// each response code ("timeout" for none), and the median time of those answered.
fn dns_query(server: SocketAddr, name: &str, count: u16) -> anyhow::Result<()> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut rcodes: BTreeMap<String, u32> = BTreeMap::new();
    let mut times_ns = Vec::new();
    let mut buf = [0u8; 1500];
    for id in 0..count {
        let started = Instant::now();
        socket.send(&dns_query_packet(name, id))?;
        let outcome = loop {
            match socket.recv(&mut buf) {
                Ok(len) if len >= 4 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    times_ns.push(started.elapsed().as_nanos() as u64);
                    break match buf[3] & 0x0f {
                        0 => "NOERROR".to_string(),
                        2 => "SERVFAIL".to_string(),
                        3 => "NXDOMAIN".to_string(),
                        5 => "REFUSED".to_string(),
                        other => format!("RCODE{other}"),
                    };
                }
                Ok(_) => continue,
                Err(_) => break "timeout".to_string(),
            }
        };
        *rcodes.entry(outcome).or_default() += 1;
    }
    times_ns.sort_unstable();
    let median_ns = times_ns.get(times_ns.len() / 2).copied();
    println!("{}", json!({"rcodes": rcodes, "median_ns": median_ns}));
    Ok(())
}
