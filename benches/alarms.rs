//! Alarm latency benchmark: with 5,000 messages/s of reference feed in the
//! background, a smoke detector's `alarm = true` is published every 100 ms
//! (a new device each time, so each is a new alarm) and timed until it is
//! (a) on MQTT (`campusgw/…/alarm/…`, published only after the alarm store
//! committed it) and (b) on the event stream of each of 200 signed-in SSE
//! clients, timed by the kernel's receive timestamp on the client's socket
//! (when the gateway's bytes arrived). Broker: mosquitto with
//! `set_tcp_nodelay true` and `max_inflight_messages 1000`
//! (deploy/mosquitto-gateway.conf); the gateway is the release binary as its
//! own process, writing to InfluxDB 1.x.
//!
//! The load generator, the SSE clients and the probe with its MQTT watcher
//! run on three separate runtimes (threads), so that a measurement does not
//! wait behind the benchmark's own work. In a school the 200 screens are 200
//! other machines; here one thread reads them all, several milliseconds of
//! CPU per alarm on the same two cores, so it runs at `SCHED_IDLE`: the
//! kernel's timestamp does not depend on when it reads.
//!
//! `cargo bench --bench alarms` (`BENCH_SECONDS`, default 20; `BENCH_SSE_CLIENTS`,
//! default 200; `BENCH_NO_INFLUX=1` to leave the database out;
//! `BENCH_INFLUX_NICE=10` to run it at that nice value; `BENCH_TRACE=1`
//! prints every probe's MQTT latency and every SSE delivery over 10 ms).
//!
//! `BENCH_SHAPE=campus` is issue 17's school instead: the background is
//! 1,000 msg/s (`BENCH_RATE`) from 500 devices of the five kinds over one
//! connection, 1 % of it alarm-worthy (each an alarm raised and cleared),
//! under the five threshold rules of `tests/common/campus.rs`; the probes
//! are smoke readings over the obscuration limit.
//!
//! `BENCH_FLOOD=1` times a flood instead: 1,000 smoke detectors going into
//! alarm within one second (no background; flood grouping on at its default
//! of 10 in 10 s): the gateway's CPU per alarm transition, the time until the
//! last alarm is on MQTT and on every SSE client's socket, when the flood
//! group was first published, and the gateway's peak RSS.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{campus, feed, free_port, Influx1, Mosquitto};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The background load: messages/s, devices, and whether it is the campus shape.
#[derive(Clone, Copy)]
struct Background {
    rate: u64,
    devices: usize,
    campus: bool,
}

fn background_shape() -> Background {
    let campus = std::env::var("BENCH_SHAPE").is_ok_and(|s| s == "campus");
    let (rate, devices) = if campus { (1_000, 500) } else { (5_000, 1_000) };
    Background {
        rate: std::env::var("BENCH_RATE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(rate),
        devices,
        campus,
    }
}

/// When each probe was published: monotonic for MQTT, wall clock for the kernel's timestamps.
type Sent = Arc<Mutex<HashMap<String, (Instant, SystemTime)>>>;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let clients: usize = std::env::var("BENCH_SSE_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // The broker as deploy/mosquitto-gateway.conf sets it up: with acknowledge
    // after persist, mosquitto's default window of 20 unacknowledged messages
    // would queue the background load in front of every alarm.
    let broker = Mosquitto::builder().for_gateway().start();
    let influx = Influx1::start();
    runtime().block_on(influx.create_database("campus"));
    // BENCH_INFLUX_NICE=10: the database at a lower priority, to tell its
    // CPU contention apart from its other effects on the tail.
    if let (Ok(nice), Some(pid)) = (std::env::var("BENCH_INFLUX_NICE"), influx.pid()) {
        renice_all_threads(pid, &nice);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let web_port = free_port();

    let shape = background_shape();
    let flood = std::env::var("BENCH_FLOOD").is_ok_and(|v| v == "1");
    let mut cfg = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"bench-alarms\"\n{}[web]\nlisten = \"127.0.0.1:{web_port}\"\n# 200 screens from one address and one session.\nmax_streams_per_session = 1000\nmax_streams_per_address = 1000\nmax_connections_per_address = 1000\n[alarms]\nflood_threshold = {}\n{}",
        data.display(),
        broker.url(),
        // BENCH_NO_INFLUX=1: readings are spooled but not written, to tell the database's share apart.
        if std::env::var("BENCH_NO_INFLUX").is_ok() {
            String::new()
        } else {
            format!("[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"campus\"\n", influx.url())
        },
        if flood { 10 } else { 0 },
        if shape.campus {
            campus::rules(5)
        } else {
            common::gateway::smoke_rule("smoke at {device}")
        }
    );
    for d in 0..shape.devices {
        let kind = if shape.campus {
            feed::KINDS[d % 5]
        } else {
            "smoke"
        };
        cfg.push_str(&format!("[[devices]]\nid = \"{kind}-{d}\"\nkind = \"{kind}\"\nsite = \"bench\"\nbuilding = \"B{}\"\n", d % 10));
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, cfg).expect("config");
    let mut add = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args([
            "user",
            "add",
            "bench",
            "--role",
            "viewer",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    if let Some(mut stdin) = add.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(b"bench-password-123\n");
    }
    let _ = add.wait();
    let gw = common::process::ChildGuard::gateway(&path, "warn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::http_sync(web_port, "GET", "/healthz", None, None)
        // Subscribed: without a session /healthz shows states only.
        .is_ok_and(|(c, b)| c == 200 && b.contains("\"mqtt\":{\"status\":\"ok\"}"))
    {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    if flood {
        run_flood(&broker.url(), web_port, clients, gw.id());
        gw.stop();
        return;
    }
    let (mqtt_lat, sse_lat, echo, probes) = run(&broker.url(), web_port, clients, seconds);
    let inside = common::http_sync(web_port, "GET", "/metrics", None, None)
        .map(|(_, body)| histogram_quantiles(&body, "campusgw_alarm_latency_seconds"))
        .unwrap_or_default();
    gw.stop();

    let report = |name: &str, mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * q) as usize]
            }
        };
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            p(0.5),
            p(0.99),
            p(0.999),
            v.last().copied().unwrap_or(f64::NAN)
        );
    };
    println!(
        "\n{probes} alarms, {} msg/s background from {} devices{}, {clients} SSE clients, {seconds} s; load average {}; latency from publish (ms):\n",
        shape.rate,
        shape.devices,
        if shape.campus { " (campus shape: 1 % alarm-worthy, five rules)" } else { "" },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| delivered on | samples | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|");
    report("MQTT (after the store commit)", mqtt_lat);
    let inexact = sse_lat.inexact;
    report(
        &format!("SSE, each of {clients} clients: at its socket (kernel receive timestamp)"),
        sse_lat.exact,
    );
    report(
        "control: the broker alone (probe → mosquitto → watcher)",
        echo,
    );
    if let Some([n, p50, p99, p999, max]) = inside {
        println!("| inside the gateway: arrival → stored and announced (`campusgw_alarm_latency_seconds`, bucket bounds) | {n} | ≤ {p50:.2} | ≤ {p99:.2} | ≤ {p999:.2} | ≤ {max:.2} |");
    }
    if inexact > 0 {
        println!("\n{inexact} SSE deliveries left out: read together with later bytes (the benchmark's reader fell behind) or without the kernel's timestamp, so their time is not theirs.");
    }
}

/// `renice` every thread of `pid` (a plain `renice -p` moves only the main thread).
fn renice_all_threads(pid: u32, nice: &str) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc");
    for t in tasks.flatten() {
        let status = Command::new("renice")
            .args(["-n", nice, "-p"])
            .arg(t.file_name())
            .stdout(Stdio::null())
            .status()
            .expect("renice");
        assert!(status.success(), "renice {nice} failed");
    }
}

/// Count, p50, p99, p99.9 and max (upper bucket bounds, ms) of a Prometheus histogram in `text`.
fn histogram_quantiles(text: &str, name: &str) -> Option<[f64; 5]> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            Some((le.parse().ok()?, n.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    let q = |f: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n as f64 >= f * total as f64)
            .map_or(f64::NAN, |(le, _)| le * 1000.0)
    };
    Some([total as f64, q(0.5), q(0.99), q(0.999), q(1.0)])
}

/// A single-threaded runtime of its own, on the calling thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn run(
    url: &str,
    web_port: u16,
    clients: usize,
    seconds: u64,
) -> (Vec<f64>, SseLatency, Vec<f64>, usize) {
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let window = Duration::from_secs(seconds);
    let connected = Arc::new(AtomicUsize::new(0));
    let sse = {
        let (sent, connected) = (sent.clone(), connected.clone());
        std::thread::spawn(move || {
            idle_priority();
            runtime().block_on(sse_clients(web_port, clients, sent, connected, window))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected.load(Ordering::Relaxed) < clients {
        assert!(
            Instant::now() < deadline,
            "{} of {clients} SSE clients connected",
            connected.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let probes = {
        let sent = sent.clone();
        std::thread::spawn(move || runtime().block_on(probe(port, sent, window)))
    };
    runtime().block_on(background(port, window, background_shape()));
    let (mqtt_lat, echo, n) = probes.join().expect("probe thread");
    let sse_lat = sse.join().expect("SSE thread");
    (mqtt_lat, sse_lat, echo, n)
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only on CPU time nothing else wants.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the scheduling policy of the calling thread (tid 0) only.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    assert_eq!(rc, 0, "SCHED_IDLE: {}", std::io::Error::last_os_error());
}

/// What the event streams measured.
#[derive(Default)]
struct SseLatency {
    /// Per alarm and client: publish → the kernel's receive timestamp (ms).
    exact: Vec<f64>,
    /// Alarms read together with later bytes, whose timestamp is that of
    /// the later bytes, or read without a timestamp: left out, counted.
    inexact: usize,
    /// Their latencies, upper bounds (the flood's "last on the page").
    late: Vec<f64>,
}

/// The length of the first complete SSE frame (up to and including its blank line).
fn frame_len(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn epoch_s(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `clients` signed-in event streams, each timing the alarms it sees.
///
/// Plain sockets with `SO_TIMESTAMPNS` instead of an HTTP client: one thread
/// reading 200 streams delays the last reader by the other 199, which says
/// nothing about the gateway; the kernel's timestamp does not wait for it.
/// A read that comes without a timestamp counts its alarms as inexact.
async fn sse_clients(
    web_port: u16,
    clients: usize,
    sent: Sent,
    connected: Arc<AtomicUsize>,
    window: Duration,
) -> SseLatency {
    // Sign in once; every client uses the session.
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let resp = http
        .post(format!("http://127.0.0.1:{web_port}/api/login"))
        .json(&serde_json::json!({ "username": "bench", "password": "bench-password-123" }))
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    // Held until the streams are done: the kernel stamps every stream's data.
    let _stamps = hold_timestamps().expect("receive timestamps");
    let lat = Arc::new(Mutex::new(SseLatency::default()));
    let trace = std::env::var("BENCH_TRACE").is_ok();
    let mut streams = Vec::new();
    for client in 0..clients {
        let (cookie, sent, lat, connected) =
            (cookie.clone(), sent.clone(), lat.clone(), connected.clone());
        streams.push(tokio::spawn(async move {
            let sock = match open_stream(web_port, &cookie).await {
                Ok(sock) => sock,
                Err(e) => {
                    eprintln!("SSE client {client}: {e}");
                    return;
                }
            };
            let mut hello = false;
            // The start of a frame not yet complete.
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 256 * 1024];
            while let Ok((n, stamp)) = recv_stamped(&sock, &mut chunk).await {
                if n == 0 {
                    break;
                }
                // A read without the kernel's timestamp (see `hold_timestamps`)
                // is timed by the clock now: an upper bound, never exact.
                let (arrived, stamped) = match stamp {
                    Some(t) => (t, true),
                    None => (SystemTime::now(), false),
                };
                pending.extend_from_slice(&chunk[..n]);
                let mut done = 0;
                while let Some(len) = frame_len(&pending[done..]) {
                    let frame = &pending[done..done + len];
                    done += len;
                    // The kernel's timestamp is that of the newest bytes of
                    // the read: exact only for a frame that ends the read
                    // (but for the `\r\n` closing its chunk, written with it).
                    let exact = stamped && pending.len() - done <= 2;
                    // The event's name comes first, past a chunk-size line
                    // of the chunked body (and the response's headers, the first time).
                    let head = String::from_utf8_lossy(&frame[..frame.len().min(4096)]);
                    // Connected once the gateway has subscribed the stream
                    // and said so, not when the request is sent.
                    if head.contains("event: hello") {
                        hello = true;
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    if trace && client == 0 && head.contains("event: devices") {
                        eprintln!("devices event of {len} bytes at {:.3}", epoch_s(arrived));
                    }
                    if !head.contains("event: alarm") {
                        continue;
                    }
                    let text = String::from_utf8_lossy(frame);
                    if !text.contains("\"action\":\"raise\"") {
                        continue;
                    }
                    let Some(dev) = text
                        .split("\"device\":\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                    else {
                        continue;
                    };
                    let Some(t0) = sent.lock().expect("sent").get(dev).map(|t| t.1) else {
                        continue;
                    };
                    let mut lat = lat.lock().expect("lat");
                    let at_socket =
                        arrived.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0;
                    if !exact {
                        lat.inexact += 1;
                        lat.late.push(at_socket);
                        continue;
                    }
                    lat.exact.push(at_socket);
                    if trace && at_socket > 10.0 {
                        eprintln!(
                            "slow sse {dev} {at_socket:.2} ms, published at {:.3}",
                            epoch_s(t0)
                        );
                    }
                }
                pending.drain(..done);
            }
            if !hello {
                eprintln!(
                    "SSE client {client}: the stream ended before its hello: {}",
                    String::from_utf8_lossy(&pending[..pending.len().min(300)])
                );
            }
        }));
    }
    // Until the probes are done and the last alarm had time to arrive.
    tokio::time::sleep(window + Duration::from_secs(5)).await;
    for s in streams {
        s.abort();
    }
    let mut l = lat.lock().expect("lat");
    std::mem::take(&mut *l)
}

/// Turns the kernel's receive timestamps on for the whole run and waits
/// until they are on; the returned socket keeps them on while it is held.
///
/// Linux stamps received packets only while some socket wants it, and the
/// first socket's wish takes effect later (`net_enable_timestamp` defers it
/// to a work queue), so the first bytes of the first streams came without a
/// timestamp, which ended those streams before their hello ("the stream
/// ended before its hello", now and then). Each TCP read then carries a
/// stamp only if its packets were stamped when they arrived.
fn hold_timestamps() -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let held = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut peer, _) = listener.accept()?;
    setsockopt(&held, sockopt::ReceiveTimestampns, &true)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        peer.write_all(b"x")?;
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            held.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )?;
        if msg
            .cmsgs()?
            .any(|c| matches!(c, ControlMessageOwned::ScmTimestampns(_)))
        {
            return Ok(held);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(std::io::Error::other(
        "the kernel does not stamp received packets",
    ))
}

/// `GET /api/stream` on a socket that timestamps what it receives.
async fn open_stream(web_port: u16, cookie: &str) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    // A receive window as large as a screen's: a campus coming online is
    // one ~100 KB `devices` event, and with the default window the alarm
    // behind it would wait until this one thread has read it from all 200
    // sockets, which says nothing about the gateway.
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4 << 20)?;
    let mut sock = sock
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], web_port)))
        .await?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)?;
    sock.write_all(
        format!(
            "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    Ok(sock)
}

/// One read, with the kernel's receive timestamp of the newest bytes in it.
async fn recv_stamped(
    sock: &tokio::net::TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd as _;
    loop {
        sock.readable().await?;
        let got = sock.try_io(tokio::io::Interest::READABLE, || {
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            )?;
            let stamp = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => Some(
                    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
                ),
                _ => None,
            });
            Ok((msg.bytes, stamp))
        });
        match got {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Publishes a new smoke alarm every 100 ms and times it until it is on MQTT.
async fn probe(port: u16, sent: Sent, window: Duration) -> (Vec<f64>, Vec<f64>, usize) {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut o = MqttOptions::new("bench-alarm-watch", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_events) = AsyncClient::new(o, 100);
    sub.subscribe("campusgw/+/alarm/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    sub.subscribe("bench/echo/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let echo = Arc::new(Mutex::new(Vec::new()));
    let (s2, l2, e2) = (sent.clone(), lat.clone(), echo.clone());
    let trace = std::env::var("BENCH_TRACE").is_ok();
    tokio::spawn(async move {
        while let Ok(ev) = sub_events.poll().await {
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            if let Some(dev) = p.topic.strip_prefix("bench/echo/") {
                if let Some((t0, _)) = s2.lock().expect("sent").get(dev) {
                    e2.lock()
                        .expect("echo")
                        .push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                continue;
            }
            let dev = p.topic.split('/').nth(3).unwrap_or("").to_owned();
            let Some((t0, _)) = s2.lock().expect("sent").get(&dev).copied() else {
                continue;
            };
            if String::from_utf8_lossy(&p.payload).contains("\"state\":\"unacked\"") {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                if trace {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    eprintln!("{dev} {ms:.2} ms at {now:.3}");
                }
                l2.lock().expect("lat").push(ms);
            }
        }
    });
    let mut o = MqttOptions::new("bench-probe", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (probe, mut probe_events) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while probe_events.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let mut n = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    while start.elapsed() < window {
        tick.tick().await;
        let dev = format!("probe-{n}");
        let p = campus::probe_payload(common::now_ms(), n as u64);
        sent.lock()
            .expect("sent")
            .insert(dev.clone(), (Instant::now(), SystemTime::now()));
        let _ = probe
            .publish(
                format!("campus/bench/smoke/{dev}"),
                QoS::AtLeastOnce,
                false,
                p.clone(),
            )
            .await;
        // The control: the same message through the broker alone.
        let _ = probe
            .publish(format!("bench/echo/{dev}"), QoS::AtLeastOnce, false, p)
            .await;
        n += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = lat.lock().expect("lat").clone();
    let e = echo.lock().expect("echo").clone();
    (v, e, n)
}

/// The background: `shape.rate` QoS 1 messages/s from `shape.devices`
/// detectors, none alarming; or the campus shape, 1 % alarm-worthy.
async fn background(port: u16, window: Duration, shape: Background) {
    let mut o = MqttOptions::new("bench-background", "127.0.0.1", port);
    o.set_inflight(1000).set_request_channel_capacity(10_000);
    let (bg, mut bg_events) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move { while bg_events.poll().await.is_ok() {} });
    let start = Instant::now();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < window {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * shape.rate as f64) as u64;
        while seq < due {
            let d = (seq as usize) % shape.devices;
            if shape.campus {
                let kind = feed::KINDS[d % 5];
                let alarm = campus::alarm_worthy(seq, campus::period(0.01));
                let t = feed::topic("bench", kind, &format!("{kind}-{d}"));
                let _ = bg.try_publish(
                    t,
                    QoS::AtLeastOnce,
                    false,
                    campus::payload(kind, common::now_ms(), seq, alarm),
                );
                seq += 1;
                continue;
            }
            let (t, p) = feed::message(
                "smoke",
                "bench",
                &format!("smoke-{d}"),
                common::now_ms(),
                seq,
            );
            // The feed's own alarm flag recurs every 50 messages: keep the background quiet.
            let p = p.replace("\"alarm\":true", "\"alarm\":false");
            let _ = bg.try_publish(t, QoS::AtLeastOnce, false, p);
            seq += 1;
        }
    }
}

/// The flood: 1,000 detectors into alarm within one second, timed until the
/// last is on MQTT and on every event stream, with the gateway's CPU per
/// alarm transition and its peak RSS.
fn run_flood(url: &str, web_port: u16, clients: usize, pid: u32) {
    const FLOOD: usize = 1_000;
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let connected = Arc::new(AtomicUsize::new(0));
    let window = Duration::from_secs(20);
    let sse = {
        let (sent, connected) = (sent.clone(), connected.clone());
        std::thread::spawn(move || {
            idle_priority();
            runtime().block_on(sse_clients(web_port, clients, sent, connected, window))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected.load(Ordering::Relaxed) < clients {
        assert!(Instant::now() < deadline, "SSE clients did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = || {
        common::http_sync(web_port, "GET", "/metrics", None, None)
            .map(|(_, t)| t)
            .unwrap_or_default()
    };
    let transitions = |text: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix("campusgw_alarm_transitions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum()
    };
    let before = transitions(&metrics());
    let (cpu0, _) = common::process::cpu_and_peak_rss(pid);
    let (mqtt_last, group_first, on_mqtt) = runtime().block_on(async {
        let mut o = MqttOptions::new("bench-flood-watch", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (sub, mut events) = AsyncClient::new(o, 100);
        sub.subscribe("campusgw/+/alarm/#", QoS::AtMostOnce)
            .await
            .expect("subscribe");
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut seen = std::collections::HashSet::new();
            let (mut last, mut group) = (None, None);
            while let Ok(Ok(ev)) =
                tokio::time::timeout(Duration::from_secs(15), events.poll()).await
            {
                match ev {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let dev = p.topic.split('/').nth(3).unwrap_or("").to_owned();
                        if dev.starts_with("group-") {
                            group.get_or_insert(Instant::now());
                        } else if String::from_utf8_lossy(&p.payload)
                            .contains("\"state\":\"unacked\"")
                            && seen.insert(dev)
                        {
                            last = Some(Instant::now());
                            if seen.len() == FLOOD {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            (last, group, seen.len())
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
        let mut o = MqttOptions::new("bench-flood", "127.0.0.1", port);
        o.set_inflight(1000).set_request_channel_capacity(2_000);
        let (publ, mut publ_events) = AsyncClient::new(o, 2_000);
        tokio::spawn(async move { while publ_events.poll().await.is_ok() {} });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = Instant::now();
        let wall = SystemTime::now();
        {
            // Every detector's alarm is timed from the flood's start.
            let mut s = sent.lock().expect("sent");
            for d in 0..FLOOD {
                s.insert(format!("smoke-{d}"), (start, wall));
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for burst in 0..100 {
            tick.tick().await;
            for d in burst * 10..burst * 10 + 10 {
                let mut p = feed::payload("smoke", common::now_ms(), d as u64);
                p["alarm"] = serde_json::json!(true);
                let _ = publ
                    .publish(
                        format!("campus/bench/smoke/smoke-{d}"),
                        QoS::AtLeastOnce,
                        false,
                        p.to_string(),
                    )
                    .await;
            }
        }
        eprintln!(
            "flood published in {:.0} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        let (last, group, n) = watch.await.expect("watcher");
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(start));
        (since(last), since(group), n)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, rss) = common::process::cpu_and_peak_rss(pid);
    let made = transitions(&metrics()) - before;
    let sse_lat = sse.join().expect("SSE thread");
    let mut all: Vec<f64> = sse_lat.exact.iter().chain(&sse_lat.late).copied().collect();
    all.sort_by(f64::total_cmp);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "\nFlood: {FLOOD} smoke detectors into alarm within 1 s, {clients} SSE clients; load average {}.\n",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| alarm transitions | gateway CPU | per transition | last on MQTT | flood group on MQTT | SSE deliveries | last on the page (SSE) | gateway peak RSS |\n|---|---|---|---|---|---|---|---|");
    println!(
        "| {made:.0} | {:.0} ms | {:.0} µs | {:.0} ms ({on_mqtt} of {FLOOD}) | {:.0} ms | {} of {} | {:.0} ms | {rss:.1} MB |",
        (cpu1 - cpu0) * 1000.0,
        if made > 0.0 { (cpu1 - cpu0) * 1e6 / made } else { f64::NAN },
        ms(mqtt_last),
        ms(group_first),
        all.len(),
        FLOOD * clients,
        all.last().copied().unwrap_or(f64::NAN),
    );
}
