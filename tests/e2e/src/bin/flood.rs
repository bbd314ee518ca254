//! Benchmark (prints figures, asserts nothing): the real `converge` binary under floods of
//! sign-ins, slow clients and event streams, while a legitimate client keeps using it.
//!
//! Phases, in this order (each sees what the earlier ones left, e.g. a throttled name):
//! `signin-one-user` (N wrong passwords for `flood`, all from 127.0.1.1),
//! `signin-many-users` (`user-<n>`, from 127.0.2.1), `signin-many-addresses` (`flood`, each
//! from its own 127.0.16.1…), `slow-headers` (N connections that never finish their
//! headers) and `stream-flood` (N `GET /api/events` on one admin session). Throughout, a
//! probe from 127.0.8.8 asks `/api/health` every 100 ms and signs in as `admin` every 500 ms.
//! Usage: `flood [--converge PATH] [--concurrency N] [--phase-seconds S]
//! [--slow-wait-seconds S] [--stream-hold-seconds S]`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{RequestBuilder, Response};
use serde_json::json;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout, timeout_at};

/// The phases, in the order they run (see [`load`]).
const PHASES: [&str; 5] = [
    "signin-one-user",
    "signin-many-users",
    "signin-many-addresses",
    "slow-headers",
    "stream-flood",
];
/// Password of `admin`, the account the probe and the stream flood sign in with.
const ADMIN_PASSWORD: &str = "flood admin password";
/// Where the legitimate probe comes from.
const PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 8, 8);
/// Where the stream flood's one correct sign-in comes from.
const STREAM_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 9, 9);
/// A probe request slower than this counts as `timeout`, with this latency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Targets the final line checks: legitimate p99 and the server's peak RSS.
const TARGET_P99_MS: f64 = 1000.0;
const TARGET_RSS_MIB: f64 = 256.0;
/// Unit of the CPU times in `/proc/<pid>/stat`: USER_HZ, 100 in Linux's ABI on every
/// architecture (what `getconf CLK_TCK` prints).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// One legitimate request: latency in ms and status (`200`, `timeout`, `error`, …).
type Sample = (f64, String);

/// Command-line settings; defaults in [`Options::parse`].
#[derive(Debug)]
struct Options {
    converge: PathBuf,
    concurrency: usize,
    phase_seconds: u64,
    slow_wait_seconds: u64,
    stream_hold_seconds: u64,
}

impl Options {
    /// Parses `--flag value` pairs; an unknown flag is an error.
    fn parse() -> Result<Self> {
        let mut options = Self {
            converge: PathBuf::from("target/server/converge"),
            concurrency: 200,
            phase_seconds: 30,
            slow_wait_seconds: 20,
            stream_hold_seconds: 5,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{flag} {value}"))
            };
            match flag.as_str() {
                "--converge" => options.converge = PathBuf::from(&value),
                "--concurrency" => options.concurrency = number()? as usize,
                "--phase-seconds" => options.phase_seconds = number()?,
                "--slow-wait-seconds" => options.slow_wait_seconds = number()?,
                "--stream-hold-seconds" => options.stream_hold_seconds = number()?,
                _ => bail!("unknown flag {flag}; see tests/e2e/src/bin/flood.rs"),
            }
        }
        Ok(options)
    }
}

/// The `converge` child process (killed on drop) and what the phases share.
#[derive(Debug)]
struct Server {
    options: Options,
    child: Child,
    pid: u32,
    port: u16,
    base: String,
    log: PathBuf,
    dir: Option<TempDir>,
    /// Highest VmRSS (KiB) the sampler has seen since the current phase began.
    peak_rss_kib: Arc<AtomicU64>,
}

impl Server {
    /// Writes a config into a temp dir, starts `converge serve`, waits for `/api/health`
    /// (at most 20 s) and starts sampling its RSS every 100 ms.
    async fn start(options: Options) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist)?;
        let hash = |p: &str| converge_server::auth::hash_password(p).map_err(|e| anyhow!("{e}"));
        let user = |name: &str, hash: String, role: &str| {
            format!(
                "[[users]]\nusername = \"{name}\"\npassword_hash = \"{hash}\"\nrole = \"{role}\"\n"
            )
        };
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndist_dir = \"{}\"\n\n\
             [database]\npath = \"{}\"\n\n{}\n{}",
            dist.display(),
            dir.path().join("converge.db").display(),
            user("admin", hash(ADMIN_PASSWORD)?, "admin"),
            user("flood", hash("flood password")?, "operator"),
        );
        let config_path = dir.path().join("converge.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("converge.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&options.converge)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", options.converge.display()))?;
        let mut server = Self {
            options,
            pid: child.id(),
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            dir: Some(dir),
            peak_rss_kib: Arc::new(AtomicU64::new(0)),
        };
        let http = client(Ipv4Addr::LOCALHOST)?;
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("server exited ({status}); log: {}", server.keep_log());
            }
            let health = http.get(format!("{}/api/health", server.base));
            let health = health.timeout(Duration::from_secs(1)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("no /api/health in 20 s; log: {}", server.keep_log());
            }
            sleep(Duration::from_millis(100)).await;
        }
        let (pid, peak) = (server.pid, server.peak_rss_kib.clone());
        tokio::spawn(async move {
            loop {
                if let Some(kib) = proc_status_kib(pid, "VmRSS") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(server)
    }

    /// Keeps the temp dir (so that the log outlives this process); returns the log's path.
    fn keep_log(&mut self) -> String {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.log.display().to_string()
    }

    /// The server's CPU time so far (utime + stime of `/proc/<pid>/stat`), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // After the command name in parentheses (it may hold spaces), utime and stime are
        // the 12th and 13th fields (14 and 15 of the whole line).
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields = rest.split_whitespace().skip(11).take(2);
        fields.filter_map(|f| f.parse::<f64>().ok()).sum::<f64>() / CLOCK_TICKS_PER_S
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a phase's load produced: requests or connections, answers by status, and for
/// `slow-headers` how many connections the server left open.
#[derive(Debug, Default)]
struct Load {
    sent: usize,
    answers: BTreeMap<String, usize>,
    still_open: Option<usize>,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    name: &'static str,
    load: Load,
    health: Vec<Sample>,
    signin: Vec<Sample>,
    peak_rss_mib: f64,
    cpu_s: f64,
    /// Wall time of the phase (its load, then the probe's last request).
    seconds: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("flood: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the server, runs the phases, prints the table; FAILURE only if the server died.
async fn run() -> Result<ExitCode> {
    let started = Instant::now();
    let mut server = Server::start(Options::parse()?).await?;
    let o = &server.options;
    println!(
        "flood: {} (pid {}) on {}: {} per phase, each at most {} s",
        o.converge.display(),
        server.pid,
        server.base,
        o.concurrency,
        o.phase_seconds
    );
    let mut rows = Vec::new();
    for name in PHASES {
        let row = phase(&server, name).await;
        if let Some(status) = server.child.try_wait()? {
            print_table(&rows);
            let log = server.keep_log();
            eprintln!("flood: the server died in {name} ({status}); log: {log}");
            return Ok(ExitCode::FAILURE);
        }
        rows.push(row?);
    }
    print_table(&rows);
    let hwm = proc_status_kib(server.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let mut slow = Vec::new();
    for row in &rows {
        for (what, samples) in [("health", &row.health), ("sign-in", &row.signin)] {
            let p99 = percentile(samples, 0.99);
            if p99 >= TARGET_P99_MS {
                slow.push(format!("{} {what} {p99:.0} ms", row.name));
            }
        }
    }
    let latency = match slow.is_empty() {
        true => "yes".to_owned(),
        false => format!("NO ({})", slow.join(", ")),
    };
    let peak = rows.iter().map(|r| r.peak_rss_mib).fold(hwm, f64::max);
    println!(
        "VmHWM {hwm:.1} MiB. Targets: legit p99 < {TARGET_P99_MS:.0} ms in every phase: \
         {latency}; peak RSS < {TARGET_RSS_MIB:.0} MiB: {}. Took {:.1} s.",
        if peak < TARGET_RSS_MIB { "yes" } else { "NO" },
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the load of phase `name` with the legitimate probe alongside, measuring the
/// server's peak RSS and CPU time.
async fn phase(server: &Server, name: &'static str) -> Result<Row> {
    let rss_now = proc_status_kib(server.pid, "VmRSS").unwrap_or(0);
    server.peak_rss_kib.store(rss_now, Ordering::Relaxed);
    let (started, cpu_start) = (Instant::now(), server.cpu_seconds());
    let stop = Arc::new(AtomicBool::new(false));
    let probe = client(PROBE_ADDR)?;
    let health = probe.get(format!("{}/api/health", server.base));
    let health = tokio::spawn(probe_loop(health, 100, stop.clone()));
    let signin = probe
        .post(format!("{}/api/login", server.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}));
    let signin = tokio::spawn(probe_loop(signin, 500, stop.clone()));
    let load = load(server, name).await;
    stop.store(true, Ordering::Relaxed);
    let (health, signin) = (health.await?, signin.await?);
    Ok(Row {
        name,
        load: load?,
        health,
        signin,
        peak_rss_mib: server.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        cpu_s: server.cpu_seconds() - cpu_start,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The load of one phase, bounded by `--concurrency` and `--phase-seconds`.
async fn load(server: &Server, name: &str) -> Result<Load> {
    let (n, base) = (server.options.concurrency, &server.base);
    let deadline = Instant::now() + Duration::from_secs(server.options.phase_seconds);
    let signin = |http: &reqwest::Client, i: usize, username: String| {
        let body = json!({"username": username, "password": format!("wrong-{i}")});
        http.post(format!("{base}/api/login")).json(&body)
    };
    let requests: Vec<RequestBuilder> = match name {
        "signin-one-user" => {
            let http = client(Ipv4Addr::new(127, 0, 1, 1))?;
            (0..n).map(|i| signin(&http, i, "flood".into())).collect()
        }
        "signin-many-users" => {
            let http = client(Ipv4Addr::new(127, 0, 2, 1))?;
            (0..n)
                .map(|i| signin(&http, i, format!("user-{i}")))
                .collect()
        }
        "signin-many-addresses" => (0..n)
            .map(|i| {
                let address = Ipv4Addr::new(127, 0, 16 + (i / 250) as u8, 1 + (i % 250) as u8);
                Ok(signin(&client(address)?, i, "flood".into()))
            })
            .collect::<Result<_>>()?,
        "slow-headers" => return slow_headers(server, deadline).await,
        "stream-flood" => {
            let http = client(STREAM_ADDR)?;
            let cookie = admin_cookie(&http, base).await?;
            let events = format!("{base}/api/events");
            let requests = (0..n).map(|_| http.get(&events).header("cookie", &cookie));
            let (load, open) = flood(requests.collect(), deadline, true).await;
            sleep(Duration::from_secs(server.options.stream_hold_seconds)).await;
            drop(open);
            return Ok(load);
        }
        _ => bail!("no phase {name}"),
    };
    Ok(flood(requests, deadline, false).await.0)
}

/// Sends all `requests` at once and counts the answers by status until `deadline`, when
/// the unanswered count as `timeout`. With `keep_open`, 200-OK responses are returned
/// unread (their streams stay open while they are held).
async fn flood(
    requests: Vec<RequestBuilder>,
    deadline: Instant,
    keep_open: bool,
) -> (Load, Vec<Response>) {
    let mut tasks = JoinSet::new();
    for request in requests {
        tasks.spawn(answer(request, keep_open));
    }
    let mut load = Load {
        sent: tasks.len(),
        ..Load::default()
    };
    let mut open = Vec::new();
    loop {
        let label = match timeout_at(deadline, tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((label, response)))) => {
                open.extend(response);
                label
            }
            Ok(Some(Err(_))) => "error".to_owned(),
            Err(_) => {
                *load.answers.entry("timeout".into()).or_default() += tasks.len();
                tasks.abort_all();
                break;
            }
        };
        *load.answers.entry(label).or_default() += 1;
    }
    (load, open)
}

/// Sends `request`: its status (or `timeout` / `error`), and with `keep_open` a 200-OK
/// response unread; otherwise the body is read to its end.
async fn answer(request: RequestBuilder, keep_open: bool) -> (String, Option<Response>) {
    match request.send().await {
        Ok(reply) => {
            let status = reply.status().as_u16().to_string();
            if keep_open && reply.status().is_success() {
                return (status, Some(reply));
            }
            let _ = reply.bytes().await;
            (status, None)
        }
        Err(err) if err.is_timeout() => ("timeout".to_owned(), None),
        Err(_) => ("error".to_owned(), None),
    }
}

/// Sends `request` every `every_ms` (the next waits for the last) until `stop`.
async fn probe_loop(request: RequestBuilder, every_ms: u64, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Some(request) = request.try_clone() else {
            break;
        };
        let started = Instant::now();
        samples.push(match timeout(PROBE_TIMEOUT, answer(request, false)).await {
            Ok((label, _)) => (started.elapsed().as_secs_f64() * 1000.0, label),
            Err(_) => (PROBE_TIMEOUT.as_secs_f64() * 1000.0, "timeout".to_owned()),
        });
    }
    samples
}

/// Signs in as `admin` with the right password; the session cookie's `name=value`.
async fn admin_cookie(http: &reqwest::Client, base: &str) -> Result<String> {
    let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let reply = http
        .post(format!("{base}/api/login"))
        .json(&body)
        .send()
        .await?;
    if !reply.status().is_success() {
        bail!("admin sign-in for the stream flood: {}", reply.status());
    }
    let cookie = reply.headers().get(reqwest::header::SET_COOKIE);
    let cookie = cookie.and_then(|v| v.to_str().ok()?.split(';').next());
    Ok(cookie.context("no session cookie")?.to_owned())
}

/// Opens N connections that send part of a request's headers and then nothing; after
/// `--slow-wait-seconds`, counts those still open (then closes them all).
async fn slow_headers(server: &Server, deadline: Instant) -> Result<Load> {
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Slow: ",
        server.port
    );
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let mut load = Load::default();
    let mut streams = Vec::new();
    while load.sent < server.options.concurrency && Instant::now() < deadline {
        load.sent += 1;
        // Connected by tokio (a lost SYN is retried without blocking the runtime), then
        // used as a non-blocking std socket: the short write fits its empty buffer.
        let connect = timeout_at(deadline, tokio::net::TcpStream::connect(address)).await;
        match connect.map(|stream| stream.and_then(|s| s.into_std())) {
            Ok(Ok(stream)) if (&stream).write_all(head.as_bytes()).is_ok() => streams.push(stream),
            _ => *load.answers.entry("error".into()).or_default() += 1,
        }
    }
    sleep(Duration::from_secs(server.options.slow_wait_seconds)).await;
    let open = streams.iter().filter(|stream| still_open(stream)).count();
    load.answers.insert("closed".into(), streams.len() - open);
    load.still_open = Some(open);
    Ok(load)
}

/// True when a non-blocking read finds nothing yet: no data, no close, no error.
fn still_open(mut stream: &std::net::TcpStream) -> bool {
    matches!(stream.read(&mut [0; 512]), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// A client whose connections come from `address`.
fn client(address: Ipv4Addr) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::V4(address))
        .build()?)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The `q` quantile of the samples' latencies, in ms (0 when there are none).
fn percentile(samples: &[Sample], q: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|(ms, _)| *ms).collect();
    ms.sort_by(f64::total_cmp);
    let i = (ms.len().saturating_sub(1) as f64 * q).round() as usize;
    ms.get(i).copied().unwrap_or(0.0)
}

/// `p50/p99 (n)`, then `!k` when k of the n answers were not 200.
fn latency_cell(samples: &[Sample]) -> String {
    let bad = samples.iter().filter(|(_, status)| status != "200").count();
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    let cell = format!("{p50:.0}/{p99:.0} ({})", samples.len());
    if bad > 0 {
        format!("{cell} !{bad}")
    } else {
        cell
    }
}

/// The table: one row per phase.
fn print_table(rows: &[Row]) {
    println!(
        "phase                   sent  answers                       open  \
         health p50/p99 ms  sign-in p50/p99    peak MiB  cpu s   secs"
    );
    for row in rows {
        let answers = row.load.answers.iter().map(|(k, v)| format!("{k}:{v}"));
        println!(
            "{:<22} {:>5}  {:<28} {:>5}  {:<18} {:<18} {:>8.1} {:>6.2} {:>6.1}",
            row.name,
            row.load.sent,
            answers.collect::<Vec<_>>().join(" "),
            row.load.still_open.map_or("-".into(), |n| n.to_string()),
            latency_cell(&row.health),
            latency_cell(&row.signin),
            row.peak_rss_mib,
            row.cpu_s,
            row.seconds
        );
    }
}
