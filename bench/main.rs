//! `cargo bench`: bridge overhead, throughput, memory and scaling against real Synapse and the
//! fake Bot API, each figure next to a baseline measured in the same run (a direct client send to
//! the same Synapse, or the 1-portal figure). Prints a Markdown report; `bench/RESULTS.md` holds
//! the last one.
//!
//! Arrival on Matrix is observed by one `/sync` long-poll loop per bridge for both the bridged and
//! the direct messages, so both include the same observation delay. Direct sends go to unbridged
//! control rooms of the same shape (four members, none in the bridge's namespace), so the
//! baseline is Matrix without the bridge: no relay to Telegram runs during it.
//!
//! Sections (each with its own bridge: slot, fake Telegram, rooms, database, daemon process):
//! - `base`: one portal; latency and throughput against direct sends, Matrix -> Telegram latency,
//!   idle RSS and startup.
//! - `portals`: 50 portals and 500 puppets (one message from each of 500 new Telegram users);
//!   idle RSS, and startup to ready after a restart with the portals loaded.
//! - `scale`: 100 portals configured; latency p50 and throughput with messages spread round-robin
//!   over 1, 10 and 100 of them, against the 1-portal figures.
//! - `burst`: many messages at once; all counted on Matrix and in the bridge's database, time to
//!   drain, peak RSS.
//!
//! For `2 × gateway.matrix.catch_up_secs` after a start the bridge looks up the timeline before
//! every batch of Matrix events (src/bridge/catch_up.rs). `base`, `scale` and `burst` start their
//! bridges first and measure after that window (`portals` runs meanwhile); `base` also takes a
//! few samples inside it.
//!
//! Environment (defaults in brackets):
//! - `TGMX_BENCH_N` [200]: messages per series in `base`; `TGMX_BENCH_WINDOW_N` [50]: samples
//!   inside the start-up window.
//! - `TGMX_BENCH_BURST` [2000]: messages in `burst`. The 10,000 is
//!   `TGMX_BENCH_ONLY=burst TGMX_BENCH_BURST=10000`: about 12 minutes on a 2-core machine (the
//!   drain alone about 10), too long for the default run.
//! - `TGMX_BENCH_PORTALS` [50], `TGMX_BENCH_PUPPETS` [500]: the `portals` configuration.
//! - `TGMX_BENCH_SCALE` [1,10,100]: portal counts of the scale curve; `TGMX_BENCH_SCALE_N` [200]:
//!   messages per series at each point.
//! - `TGMX_BENCH_ONLY` [base,portals,scale,burst]: the sections to run.
//! - `TGMX_BENCH_SETTLE_MS` [30]: pause before each one-at-a-time sample.
//! - `TGMX_BENCH_STEADY_AFTER` [125]: seconds after a start before steady-state series.
//! - `TGMX_BENCH_GATEWAY`: more lines for the config's `gateway:` block (indented two spaces),
//!   e.g. `  matrix: {catch_up_secs: 0}`; `TGMX_BENCH_LOG`: the log filter [info,tgmx=debug].
//! - `TGMX_BIN`: the daemon binary to measure [this build's]; compares builds (for example one
//!   made with `--no-default-features`) under the same bench.
//! - `TGMX_BENCH_ATTACH`: a command run while a section's measured traffic flows, `{pid}` replaced
//!   by the daemon's process id and `{section}` by `tp` (base throughput, Telegram -> Matrix),
//!   `m2t` (base, Matrix -> Telegram) or `burst`; stopped with SIGINT afterwards. For example
//!   `perf stat -e task-clock -p {pid} -o target/perf-{section}.txt`. `TGMX_BENCH_ATTACH_AT`
//!   [burst] picks the sections.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tgmx_testkit::fake_telegram;
use tgmx_testkit::harness::{self, MxUser, TestApp};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The 1-minute load average (other processes on the machine show here).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// VmRSS split into its anonymous (heap, stacks) and file-backed (the binary's pages) parts.
fn rss_split(pid: u32) -> String {
    format!(
        "{:.1} MB anonymous + {:.1} MB file-backed",
        mb(rss_kb(pid, "RssAnon:")),
        mb(rss_kb(pid, "RssFile:") + rss_kb(pid, "RssShmem:"))
    )
}

/// Where the resident pages are, from `/proc/<pid>/smaps`: the binary's code and read-only data
/// (file-backed), its relocated and writable data (private dirty), the heap and anonymous
/// mappings (malloc arenas, thread stacks, SQLite caches), and everything else (shared libraries).
fn rss_map(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let exe = exe.to_string_lossy().trim_end_matches(" (deleted)").to_owned();
    let (mut code, mut data, mut heap, mut anon, mut other) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut current = (String::new(), String::new());
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            current = (
                fields.get(1).unwrap_or(&"").to_string(),
                fields.get(5).map(|s| s.to_string()).unwrap_or_default(),
            );
            continue;
        }
        if fields.first() != Some(&"Rss:") {
            continue;
        }
        let kb: u64 = fields.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let (perms, path) = (&current.0, &current.1);
        if *path == exe {
            if perms.starts_with("rw") {
                data += kb
            } else {
                code += kb
            }
        } else if path == "[heap]" {
            heap += kb
        } else if path.is_empty() || path.starts_with("[stack") {
            anon += kb
        } else {
            other += kb
        }
    }
    format!(
        "binary code+rodata {:.1} / binary data {:.1} / heap {:.1} / other anonymous {:.1} / libraries {:.1} MB",
        mb(code),
        mb(data),
        mb(heap),
        mb(anon),
        mb(other)
    )
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Process figures from /proc
// ---------------------------------------------------------------------------------------------

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process used so far, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / hz
}

/// Synapse's process id (written by `tests/rig/synapse.sh` into this process's rig directory).
fn synapse_pid() -> Option<u32> {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/it")
        .join(format!("run-{}", std::process::id()))
        .join("synapse/synapse.pid");
    std::fs::read_to_string(f).ok()?.trim().parse().ok()
}

/// CPU used by the daemon, Synapse and this process (fake Bot API, /sync observer, senders).
#[derive(Clone, Copy)]
struct Cpu {
    daemon: f64,
    synapse: f64,
    bench: f64,
    machine: f64,
    wall: Instant,
}

/// CPU time all processes on the machine used so far (user, nice, system, irq, softirq, steal),
/// in ms.
fn machine_busy_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 * 1000.0 / hz
}

impl Cpu {
    fn now(daemon: u32) -> Cpu {
        Cpu {
            daemon: cpu_ms(daemon),
            synapse: synapse_pid().map(cpu_ms).unwrap_or(0.0),
            bench: cpu_ms(std::process::id()),
            machine: machine_busy_ms(),
            wall: Instant::now(),
        }
    }

    /// Per-message CPU ms since `self`: daemon, Synapse, bench, every other process on the
    /// machine (the other engineer's builds and tests show here), and wall time.
    fn per_msg(&self, daemon: u32, n: usize) -> [f64; 5] {
        let now = Cpu::now(daemon);
        let n = n.max(1) as f64;
        let (d, s, b) = (
            now.daemon - self.daemon,
            now.synapse - self.synapse,
            now.bench - self.bench,
        );
        let others = (now.machine - self.machine - d - s - b).max(0.0);
        [d / n, s / n, b / n, others / n, ms(now.wall - self.wall) / n]
    }
}

/// Samples VmRSS every 50 ms until stopped; the peak in kB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// An optional tool attached to the daemon for one section (`TGMX_BENCH_ATTACH`).
struct Attach(Option<Child>);

impl Attach {
    async fn start(section: &str, pid: u32) -> Attach {
        let Ok(template) = std::env::var("TGMX_BENCH_ATTACH") else {
            return Attach(None);
        };
        let at = std::env::var("TGMX_BENCH_ATTACH_AT").unwrap_or_else(|_| "burst".into());
        if !at.split(',').any(|s| s.trim() == section) {
            return Attach(None);
        }
        let cmd = template
            .replace("{pid}", &pid.to_string())
            .replace("{section}", section);
        eprintln!("[bench] attaching to {section}: {cmd}");
        let child = Command::new("sh").arg("-c").arg(format!("exec {cmd}")).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        Attach(Some(child))
    }

    fn finish(self) {
        if let Some(mut c) = self.0 {
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon, started by the bench itself (to time startup precisely and to restart it)
// ---------------------------------------------------------------------------------------------

struct Daemon {
    child: Option<Child>,
    pub pid: u32,
}

impl Daemon {
    fn spawn(app: &TestApp) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(app.log_path())
            .unwrap();
        let child = Command::new(harness::tgmx_bin())
            .args(["run", "-c"])
            .arg(app.config_path())
            .env("TGMX_TELEGRAM_TOKEN", harness::TG_TOKEN)
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        Daemon {
            child: Some(child),
            pid,
        }
    }

    /// Poll `GET /ready` every 2 ms until it says `ready: true`.
    async fn wait_ready(&mut self, app: &TestApp, timeout: Duration) {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{}/ready", app.url());
        let start = Instant::now();
        loop {
            if let Ok(r) = c.get(&url).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["ready"] == true
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", app.log());
            }
            assert!(
                start.elapsed() < timeout,
                "daemon not ready in {timeout:?}:\n{}",
                app.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Spawn and time: (to `/ready` true, to the first `getUpdates` call).
    async fn start_timed(app: &TestApp, timeout: Duration) -> (Daemon, Duration, Duration) {
        let polls = app.tg.calls("getUpdates");
        let t0 = Instant::now();
        let mut d = Daemon::spawn(app);
        let (mut ready, mut polling) = (None, None);
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{}/ready", app.url());
        while ready.is_none() || polling.is_none() {
            if polling.is_none() && app.tg.calls("getUpdates") > polls {
                polling = Some(t0.elapsed());
            }
            if ready.is_none()
                && let Ok(r) = c.get(&url).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["ready"] == true
            {
                ready = Some(t0.elapsed());
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", app.log());
            }
            assert!(
                t0.elapsed() < timeout,
                "daemon not ready in {timeout:?}:\n{}",
                app.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        d.wait_ready(app, timeout).await;
        (d, ready.unwrap(), polling.unwrap())
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(15) {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix side: a direct sender with one kept-alive connection, and the /sync observer
// ---------------------------------------------------------------------------------------------

static NEXT_TXN: AtomicUsize = AtomicUsize::new(0);

/// A real user's client sends with one reused HTTP client (as the daemon does), so the baseline
/// pays no per-send connection or client setup.
#[derive(Clone)]
struct Direct {
    http: reqwest::Client,
    hs: String,
    token: String,
}

impl Direct {
    fn new(u: &MxUser) -> Direct {
        Direct {
            http: http(),
            hs: harness::Homeserver::get().url.clone(),
            token: u.token.clone(),
        }
    }

    async fn send_text(&self, room: &str, body: &str) {
        let txn = format!(
            "bench{}_{}",
            std::process::id(),
            NEXT_TXN.fetch_add(1, Ordering::SeqCst)
        );
        let r = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                self.hs,
                enc(room)
            ))
            .bearer_auth(&self.token)
            .json(&json!({"msgtype": "m.text", "body": body}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "direct send: {}", r.status());
        let _ = r.bytes().await;
    }
}

/// Arrival times and counts of message bodies in every joined room, fed by a /sync loop.
/// When each one-at-a-time sample started, by body (wall clock, ms), to split its latency at
/// the event's `origin_server_ts`: before it is the way to the homeserver's event creation
/// (Telegram, bridge, or client, plus the send request), after it the homeserver's persisting
/// and its `/sync` answer.
static STARTED: std::sync::LazyLock<Mutex<HashMap<String, i64>>> = std::sync::LazyLock::new(Default::default);

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Clone)]
struct Arrivals {
    seen: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    /// Arrival wall clock (ms) and `origin_server_ts` of each body's first sighting.
    stamps: Arc<Mutex<HashMap<String, (i64, i64)>>>,
    /// Incremental syncs that reported a room's timeline as `limited` (events may be skipped).
    limited: Arc<AtomicUsize>,
    task: Arc<tokio::task::AbortHandle>,
}

impl Arrivals {
    async fn start(user: &MxUser) -> Arrivals {
        let seen: Arc<Mutex<HashMap<String, (Instant, u32)>>> = Default::default();
        let stamps: Arc<Mutex<HashMap<String, (i64, i64)>>> = Default::default();
        let limited = Arc::new(AtomicUsize::new(0));
        let (map, lim, st) = (seen.clone(), limited.clone(), stamps.clone());
        let filter = json!({
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "timeline": {"limit": 1000, "types": ["m.room.message"]},
                "state": {"types": []},
                "ephemeral": {"types": []},
                "account_data": {"types": []},
            },
        });
        let base = format!(
            "{}/_matrix/client/v3/sync?timeout=10000&filter={}",
            harness::Homeserver::get().url,
            enc(&filter.to_string())
        );
        let token = user.token.clone();
        let first = Arc::new(tokio::sync::Notify::new());
        let first2 = first.clone();
        let first_done = first.notified();
        let task = tokio::spawn(async move {
            let c = http();
            let mut since: Option<String> = None;
            loop {
                let mut url = base.clone();
                if let Some(s) = &since {
                    url.push_str(&format!("&since={s}"));
                }
                let v: Value = match c.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => match r.json().await {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let now = Instant::now();
                let now_wall = wall_ms();
                let incremental = since.is_some();
                since = v["next_batch"].as_str().map(str::to_owned);
                if let Some(rooms) = v["rooms"]["join"].as_object() {
                    let mut m = map.lock().unwrap();
                    for room in rooms.values() {
                        if incremental && room["timeline"]["limited"] == true {
                            lim.fetch_add(1, Ordering::Relaxed);
                        }
                        for e in room["timeline"]["events"].as_array().into_iter().flatten() {
                            if let Some(b) = e["content"]["body"].as_str() {
                                m.entry(b.to_owned()).or_insert((now, 0)).1 += 1;
                                let ts = e["origin_server_ts"].as_i64().unwrap_or(0);
                                st.lock().unwrap().entry(b.to_owned()).or_insert((now_wall, ts));
                            }
                        }
                    }
                }
                if !incremental {
                    first2.notify_one();
                }
            }
        });
        first_done.await;
        Arrivals {
            seen,
            stamps,
            limited,
            task: Arc::new(task.abort_handle()),
        }
    }

    fn stop(&self) {
        self.task.abort();
    }

    /// For one-at-a-time samples: (start -> `origin_server_ts`, `origin_server_ts` -> arrival), ms.
    fn split(&self, body: &str) -> Option<(f64, f64)> {
        let started = *STARTED.lock().unwrap().get(body)?;
        let (arrived, ts) = *self.stamps.lock().unwrap().get(body)?;
        Some(((ts - started) as f64, (arrived - ts) as f64))
    }

    /// Medians of [`Arrivals::split`] over the bodies `name(i)`, `i < n`.
    fn split_p50(&self, n: usize, name: impl Fn(usize) -> String) -> (f64, f64) {
        let parts: Vec<(f64, f64)> = (0..n).filter_map(|i| self.split(&name(i))).collect();
        let a: Vec<f64> = parts.iter().map(|p| p.0).collect();
        let b: Vec<f64> = parts.iter().map(|p| p.1).collect();
        (pct(&a, 0.5), pct(&b, 0.5))
    }

    async fn wait(&self, body: &str, timeout: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if let Some((t, _)) = self.seen.lock().unwrap().get(body) {
                return *t;
            }
            assert!(start.elapsed() < timeout, "{body:?} never arrived");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Wait until every body arrived, or nothing new arrived for `stall`. Returns how many
    /// arrived, how many arrived more than once, and the last arrival.
    async fn wait_all(&self, bodies: &[String], stall: Duration) -> (usize, usize, Option<Instant>) {
        let mut pending: Vec<&String> = bodies.iter().collect();
        let mut last_progress = Instant::now();
        loop {
            let before = pending.len();
            {
                let m = self.seen.lock().unwrap();
                pending.retain(|b| !m.contains_key(b.as_str()));
            }
            if pending.len() < before {
                last_progress = Instant::now();
            }
            if pending.is_empty() || last_progress.elapsed() > stall {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = self.seen.lock().unwrap();
        let (mut n, mut dup, mut last) = (0, 0, None::<Instant>);
        for b in bodies {
            if let Some((t, c)) = m.get(b) {
                n += 1;
                dup += (*c as usize).saturating_sub(1);
                last = Some(last.map_or(*t, |l| l.max(*t)));
            }
        }
        (n, dup, last)
    }
}

/// Pause before each one-at-a-time sample, so the previous message's after-effects (its echo
/// coming back to the bridge as an appservice transaction) do not overlap the next sample.
fn settle() -> Duration {
    Duration::from_millis(env_or("TGMX_BENCH_SETTLE_MS", 30))
}

/// One-at-a-time latency of one direct send (to an unbridged control room), in ms.
async fn direct_once(arr: &Arrivals, d: &Direct, room: &str, body: String) -> f64 {
    tokio::time::sleep(settle()).await;
    STARTED.lock().unwrap().insert(body.clone(), wall_ms());
    let t = Instant::now();
    d.send_text(room, &body).await;
    ms(arr.wait(&body, Duration::from_secs(60)).await.duration_since(t))
}

/// One-at-a-time latency of one Telegram message to Matrix, in ms.
async fn bridged_once(arr: &Arrivals, app: &TestApp, chat: i64, user: &fake_telegram::TgUser, body: String) -> f64 {
    tokio::time::sleep(settle()).await;
    STARTED.lock().unwrap().insert(body.clone(), wall_ms());
    let t = Instant::now();
    app.tg.inject_text(chat, user, &body);
    ms(arr.wait(&body, Duration::from_secs(60)).await.duration_since(t))
}

/// One-at-a-time latency of one Matrix message in a bridged room to its `sendMessage` request
/// on the fake Bot API, in ms.
async fn m2t_once(app: &TestApp, d: &Direct, room: &str, body: String) -> f64 {
    tokio::time::sleep(settle()).await;
    let before = app.tg.calls("sendMessage");
    let t = Instant::now();
    d.send_text(room, &body).await;
    while app.tg.calls("sendMessage") == before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{body:?} never reached the Bot API"
        );
        tokio::time::sleep(Duration::from_micros(250)).await;
    }
    ms(t.elapsed())
}

/// Seconds after a daemon's start before its steady-state series: for `2 × catch_up_secs`
/// (60 s by default) after a start the bridge looks up the room timeline before every batch of
/// Matrix events (src/bridge/catch_up.rs), which is a start-up cost, not a per-message one.
fn steady_after() -> Duration {
    Duration::from_secs(env_or("TGMX_BENCH_STEADY_AFTER", 125))
}

async fn until_steady(what: &str, started: Instant) {
    let t = started + steady_after();
    if Instant::now() < t {
        eprintln!(
            "[bench] {what}: waiting {:.0} s for the start-up catch-up window to end",
            (t - Instant::now()).as_secs_f64()
        );
        tokio::time::sleep_until(t.into()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

/// Give `app` `n` portals in all: `n - 1` more rooms (created by Ezra, the bot invited) and
/// chats, written into its config. Returns (room, chat) of every portal, the harness's first.
async fn add_portals(app: &TestApp, n: usize) -> Vec<(String, i64)> {
    let mut rooms = vec![(app.room.clone(), app.chat)];
    let created: Vec<(String, i64)> = futures::stream::iter(1..n)
        .map(|i| {
            let (ezra, bot) = (app.ezra.clone(), app.bot.clone());
            let chat = app.chat - 1000 * i as i64;
            async move { (ezra.create_room(&[&bot]).await, chat) }
        })
        .buffered(4)
        .collect()
        .await;
    for (i, (_, chat)) in created.iter().enumerate() {
        app.tg.add_chat(*chat, &format!("portal {}", i + 1));
    }
    rooms.extend(created);
    write_config(app, &rooms);
    rooms
}

/// `n` unbridged control rooms for the direct baseline, shaped like a portal: Ezra and three
/// plain users (a portal has Ezra, Alex, the bot and a puppet). No member is in the bridge's
/// namespace, so the homeserver sends the bridge nothing from them.
async fn control_rooms(app: &TestApp, n: usize) -> Vec<String> {
    let mut peers = Vec::new();
    for j in 0..3 {
        peers.push(MxUser::register(&format!("peer{}_{j}", app.slot), "Peer").await);
    }
    let ids: Vec<String> = peers.iter().map(|p| p.user_id.clone()).collect();
    futures::stream::iter(0..n)
        .map(|_| {
            let (ezra, peers, ids) = (app.ezra.clone(), peers.clone(), ids.clone());
            async move {
                let invite: Vec<&str> = ids.iter().map(String::as_str).collect();
                let room = ezra.create_room(&invite).await;
                for p in &peers {
                    p.join(&room).await;
                }
                room
            }
        })
        .buffered(4)
        .collect()
        .await
}

/// The harness's config for `rooms`, with `TGMX_BENCH_GATEWAY` (more lines for the `gateway:`
/// block, e.g. `  matrix: {catch_up_secs: 0}`) and `TGMX_BENCH_LOG` (the log filter; the harness
/// logs `info,tgmx=debug`).
fn write_config(app: &TestApp, rooms: &[(String, i64)]) {
    let extra = std::env::var("TGMX_BENCH_GATEWAY").unwrap_or_default();
    let mut cfg = harness::slot_config(app.slot, app.port, &app.hs_url, &app.tg.api_url(), rooms, &extra);
    if let Ok(level) = std::env::var("TGMX_BENCH_LOG") {
        cfg = cfg
            .lines()
            .map(|l| {
                if l.starts_with("logging:") {
                    format!("logging: {{level: \"{level}\"}}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
    }
    std::fs::write(app.config_path(), cfg).unwrap();
}

async fn db_scalar(app: &TestApp, sql: &'static str) -> i64 {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(app.db_path());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

struct Report(Vec<String>);

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.0.push(s);
    }
}

type CpuRows = Vec<(String, [f64; 5])>;

/// `base`: one portal.
struct Base {
    app: TestApp,
    daemon: Daemon,
    started: Instant,
    startup: Duration,
    polling: Duration,
    idle_rss: u64,
    idle_split: String,
    arr: Arrivals,
    ezra: Direct,
    user: fake_telegram::TgUser,
    control: String,
    /// Samples taken in the start-up catch-up window: (direct, bridged, Matrix -> Telegram).
    window: (Vec<f64>, Vec<f64>, Vec<f64>),
}

impl Base {
    async fn start() -> Base {
        let app = TestApp::prepare().await;
        write_config(&app, &[(app.room.clone(), app.chat)]);
        let control = control_rooms(&app, 1).await.remove(0);
        let started = Instant::now();
        let (daemon, startup, polling) = Daemon::start_timed(&app, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_kb(daemon.pid, "VmRSS:");
        let idle_split = rss_split(daemon.pid);
        let arr = Arrivals::start(&app.ezra).await;
        let ezra = Direct::new(&app.ezra);
        let user = app.tg.add_user(7001, "Bench", None, None);
        // Warm-up: puppet registration and join are one-off costs, not per-message ones.
        bridged_once(&arr, &app, app.chat, &user, "warm-up".into()).await;
        direct_once(&arr, &ezra, &control, "warm-up direct".into()).await;
        m2t_once(&app, &ezra, &app.room, "warm-up to telegram".into()).await;
        // A few samples while the start-up catch-up is active.
        let nw: usize = env_or("TGMX_BENCH_WINDOW_N", 50);
        let mut window = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..nw {
            window
                .0
                .push(direct_once(&arr, &ezra, &control, format!("window direct {i}")).await);
            window
                .1
                .push(bridged_once(&arr, &app, app.chat, &user, format!("window bridged {i}")).await);
            window
                .2
                .push(m2t_once(&app, &ezra, &app.room, format!("window to telegram {i}")).await);
        }
        Base {
            app,
            daemon,
            started,
            startup,
            polling,
            idle_rss,
            idle_split,
            arr,
            ezra,
            user,
            control,
            window,
        }
    }

    async fn finish(self, r: &mut Report, cpu_rows: &mut CpuRows) {
        let Base {
            app,
            daemon,
            started,
            startup,
            polling,
            idle_rss,
            idle_split,
            arr,
            ezra,
            user,
            control,
            window,
        } = self;
        until_steady("base", started).await;
        let n: usize = env_or("TGMX_BENCH_N", 200);
        let pid = daemon.pid;

        // Latency, one message at a time: direct send to the control room, and (as the earlier
        // runs measured) to the bridged room itself, where the homeserver also pushes it to the
        // bridge, which relays it to Telegram (waited for before the next sample), vs Telegram ->
        // Matrix. The order alternates, so no series always follows another.
        let (mut direct, mut direct_in_portal, mut bridged) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let in_portal = async {
                let relays = app.tg.calls("sendMessage");
                let v = direct_once(&arr, &ezra, &app.room, format!("direct in portal {i}")).await;
                while app.tg.calls("sendMessage") == relays {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                v
            };
            if i % 2 == 0 {
                direct.push(direct_once(&arr, &ezra, &control, format!("direct {i}")).await);
                direct_in_portal.push(in_portal.await);
                bridged.push(bridged_once(&arr, &app, app.chat, &user, format!("bridged {i}")).await);
            } else {
                bridged.push(bridged_once(&arr, &app, app.chat, &user, format!("bridged {i}")).await);
                direct_in_portal.push(in_portal.await);
                direct.push(direct_once(&arr, &ezra, &control, format!("direct {i}")).await);
            }
        }

        // Throughput: n direct sends back to back vs n Telegram messages at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bodies: Vec<String> = (0..n).map(|i| format!("direct tp {i}")).collect();
        let cpu = Cpu::now(pid);
        let t = Instant::now();
        for b in &bodies {
            ezra.send_text(&control, b).await;
        }
        let (got, _, last) = arr.wait_all(&bodies, Duration::from_secs(60)).await;
        assert_eq!(got, n, "direct sends lost");
        let direct_tp = n as f64 / last.unwrap().duration_since(t).as_secs_f64();
        cpu_rows.push((
            "direct sends, control room (base throughput baseline)".into(),
            cpu.per_msg(pid, n),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bodies: Vec<String> = (0..n).map(|i| format!("bridged tp {i}")).collect();
        let attach = Attach::start("tp", pid).await;
        let cpu = Cpu::now(pid);
        let t = Instant::now();
        for b in &bodies {
            app.tg.inject_text(app.chat, &user, b);
        }
        let (got, dup, last) = arr.wait_all(&bodies, Duration::from_secs(60)).await;
        let bridged_tp = got as f64 / last.unwrap().duration_since(t).as_secs_f64();
        // Let the echoes of the last messages come back before the CPU is read.
        tokio::time::sleep(Duration::from_secs(1)).await;
        cpu_rows.push((
            "Telegram -> Matrix, 1 portal (base throughput series)".into(),
            cpu.per_msg(pid, n),
        ));
        attach.finish();

        // Matrix -> Telegram: event sent to the Bot API request, one at a time.
        let attach = Attach::start("m2t", pid).await;
        let cpu = Cpu::now(pid);
        let sent_before = app.tg.calls("sendMessage");
        let mut m2t = Vec::new();
        for i in 0..n {
            m2t.push(m2t_once(&app, &ezra, &app.room, format!("to telegram {i}")).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        cpu_rows.push((
            "Matrix -> Telegram, 1 portal, one at a time (m2t series)".into(),
            cpu.per_msg(pid, n),
        ));
        attach.finish();
        let m2t_sent = app.tg.calls("sendMessage") - sent_before;

        let (dp50, dp99) = (pct(&direct, 0.5), pct(&direct, 0.99));
        let (fp50, fp99) = (pct(&direct_in_portal, 0.5), pct(&direct_in_portal, 0.99));
        let (bp50, bp99) = (pct(&bridged, 0.5), pct(&bridged, 0.99));
        r.line(format!(
            "### Base: one portal ({n} messages per series, from {} s after the start)\n",
            steady_after().as_secs()
        ));
        r.line("| figure | tgmx | baseline (direct send, same run) | ratio / overhead |");
        r.line("| --- | --- | --- | --- |");
        r.line(format!(
            "| Telegram -> Matrix latency p50 | {bp50:.1} ms | {dp50:.1} ms | {:+.1} ms |",
            bp50 - dp50
        ));
        r.line(format!(
            "| Telegram -> Matrix latency p99 | {bp99:.1} ms | {dp99:.1} ms | {:+.1} ms |",
            bp99 - dp99
        ));
        let (b_create, b_sync) = arr.split_p50(n, |i| format!("bridged {i}"));
        let (d_create, d_sync) = arr.split_p50(n, |i| format!("direct {i}"));
        let (f_create, f_sync) = arr.split_p50(n, |i| format!("direct in portal {i}"));
        r.line(format!(
            "| ... split at the event's `origin_server_ts` (ms resolution), p50: start -> created / created -> seen by `/sync` | {b_create:.0} / {b_sync:.0} ms | {d_create:.0} / {d_sync:.0} ms (in the bridged room: {f_create:.0} / {f_sync:.0} ms) | {:+.0} / {:+.0} ms |",
            b_create - d_create,
            b_sync - d_sync
        ));
        r.line(format!(
            "| (baseline as in earlier runs: direct send in the bridged room, which the bridge relays) p50 / p99 | - | {fp50:.1} / {fp99:.1} ms | {:+.1} / {:+.1} ms |",
            bp50 - fp50,
            bp99 - fp99
        ));
        r.line(format!(
            "| Telegram -> Matrix throughput | {bridged_tp:.1} msg/s | {direct_tp:.1} msg/s | {:.0}% |",
            100.0 * bridged_tp / direct_tp
        ));
        r.line(format!(
            "| Telegram -> Matrix throughput series: delivered, duplicates | {got}/{n}, {dup} | - | - |"
        ));
        r.line(format!(
            "| Matrix -> Telegram (event sent to Bot API request) p50 / p99 | {:.1} / {:.1} ms | - | - |",
            pct(&m2t, 0.5),
            pct(&m2t, 0.99)
        ));
        r.line(format!(
            "| Matrix -> Telegram sent to the Bot API | {m2t_sent}/{n} | - | - |"
        ));
        r.line(format!(
            "| RSS idle (1 portal, 1 s after ready) | {:.1} MB ({idle_split}) | - | - |",
            mb(idle_rss)
        ));
        r.line(format!(
            "| startup to ready (`/ready` true; fresh database, joins 1 room) / to first getUpdates | {:.0} ms / {:.0} ms | - | - |",
            ms(startup),
            ms(polling)
        ));
        r.line(format!(
            "| /sync timelines reported `limited` (possible gaps in the observer) | {} | - | - |\n",
            arr.limited.load(Ordering::Relaxed)
        ));
        let nw = window.0.len();
        if nw > 0 {
            r.line(format!(
                "Right after the start (inside the catch-up window; {nw} samples each): Telegram -> Matrix p50 {:.1} ms (direct {:.1} ms, {:+.1} ms), Matrix -> Telegram p50 {:.1} ms (after the window: {:.1} ms).\n",
                pct(&window.1, 0.5),
                pct(&window.0, 0.5),
                pct(&window.1, 0.5) - pct(&window.0, 0.5),
                pct(&window.2, 0.5),
                pct(&m2t, 0.5)
            ));
        }
        assert_eq!(got, n, "messages lost in the throughput series");
        arr.stop();
        drop(daemon);
    }
}

/// `portals`: many portals and puppets; memory and restart.
async fn section_portals(r: &mut Report) {
    let portals: usize = env_or("TGMX_BENCH_PORTALS", 50);
    let puppets: usize = env_or("TGMX_BENCH_PUPPETS", 500);
    let app = TestApp::prepare().await;
    let t = Instant::now();
    let rooms = add_portals(&app, portals).await;
    eprintln!("[bench] {portals} rooms created in {:.1} s", t.elapsed().as_secs_f64());
    let (mut daemon, first_ready, _) = Daemon::start_timed(&app, Duration::from_secs(300)).await;
    let pid = daemon.pid;
    let arr = Arrivals::start(&app.ezra).await;
    // One message from each of `puppets` new Telegram users, spread over the portals.
    let users: Vec<_> = (0..puppets)
        .map(|j| app.tg.add_user(100_000 + j as i64, &format!("Puppet {j}"), None, None))
        .collect();
    let bodies: Vec<String> = (0..puppets).map(|j| format!("puppet {j} says hi")).collect();
    let rss = RssSampler::start(pid);
    let cpu = Cpu::now(pid);
    let t = Instant::now();
    for (j, u) in users.iter().enumerate() {
        app.tg.inject_text(rooms[j % portals].1, u, &bodies[j]);
    }
    let (got, dup, last) = arr.wait_all(&bodies, Duration::from_secs(120)).await;
    let drain = last.map(|l| l.duration_since(t)).unwrap_or_default();
    let c = cpu.per_msg(pid, puppets);
    let peak_during = rss.finish().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_5s = rss_kb(pid, "VmRSS:");
    // The bridge returns the allocator's free memory once nothing moved for a few seconds
    // (`release_memory_after_bursts` in src/app.rs); the idle figure is read after that.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = rss_kb(pid, "VmRSS:");
    let idle_split = rss_split(pid);
    let idle_map = rss_map(pid);
    let hwm = rss_kb(pid, "VmHWM:");
    let db_puppets = db_scalar(&app, "SELECT COUNT(*) FROM puppets").await;
    let db_portals = db_scalar(&app, "SELECT COUNT(*) FROM portals").await;
    let db_members = db_scalar(&app, "SELECT COUNT(*) FROM memberships").await;

    // Restart with the portals (and puppets) in the database.
    daemon.stop();
    let (daemon2, restart_ready, restart_polling) = Daemon::start_timed(&app, Duration::from_secs(120)).await;
    let pid2 = daemon2.pid;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_after_restart = rss_kb(pid2, "VmRSS:");
    let restart_split = rss_split(pid2);
    let restart_map = rss_map(pid2);
    // Still bridging, and with a known puppet: no re-registration needed.
    let t2 = Instant::now();
    app.tg
        .inject_text(rooms[portals - 1].1, &users[puppets - 1], "after restart");
    let after_restart = ms(arr
        .wait("after restart", Duration::from_secs(60))
        .await
        .duration_since(t2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_after_restart_msg = rss_kb(pid2, "VmRSS:");

    r.line(format!("### {portals} portals, {puppets} puppets\n"));
    r.line("| figure | value |");
    r.line("| --- | --- |");
    r.line(format!(
        "| first start to ready (fresh database, joins {portals} rooms) | {:.0} ms |",
        ms(first_ready)
    ));
    r.line(format!(
        "| one message from each of {puppets} new Telegram users, at once: delivered, duplicates | {got}/{puppets}, {dup} |"
    ));
    r.line(format!(
        "| ... time to drain (each a new puppet: register, name, invite, join, send) | {:.1} s ({:.1} ms per new puppet) |",
        drain.as_secs_f64(),
        ms(drain) / puppets as f64
    ));
    r.line(format!(
        "| ... CPU per new puppet: daemon / Synapse / bench / other processes | {:.2} / {:.2} / {:.2} / {:.2} ms |",
        c[0], c[1], c[2], c[3]
    ));
    r.line(format!(
        "| database after: portals, puppets, memberships | {db_portals}, {db_puppets}, {db_members} |"
    ));
    r.line(format!(
        "| RSS peak while the puppets were created (sampled 50 ms) / VmHWM | {:.1} MB / {:.1} MB |",
        mb(peak_during),
        mb(hwm)
    ));
    r.line(format!(
        "| **RSS idle, {portals} portals + {puppets} puppets (15 s after the last message)** | **{:.1} MB** ({idle_split}; {idle_map}) |",
        mb(idle)
    ));
    r.line(format!(
        "| ... the same, 5 s after the last message | {:.1} MB |",
        mb(idle_5s)
    ));
    r.line(format!(
        "| **restart: startup to ready (`/ready` true, {portals} portals loaded)** / to first getUpdates | **{:.0} ms** / {:.0} ms |",
        ms(restart_ready),
        ms(restart_polling)
    ));
    r.line(format!(
        "| RSS idle after the restart (5 s; {restart_split}; {restart_map}) / after one more message | {:.1} MB / {:.1} MB |",
        mb(idle_after_restart),
        mb(idle_after_restart_msg)
    ));
    r.line(format!(
        "| a known puppet's message after the restart, latency | {after_restart:.1} ms |\n"
    ));
    arr.stop();
    drop(daemon2);
}

/// `scale`: up to 100 portals configured; messages spread over 1, 10, 100 of them.
struct Scale {
    app: TestApp,
    daemon: Daemon,
    started: Instant,
    ready: Duration,
    rooms: Vec<(String, i64)>,
    control: Vec<String>,
    arr: Arrivals,
    ezra: Direct,
    user: fake_telegram::TgUser,
    levels: Vec<usize>,
}

impl Scale {
    async fn start() -> Scale {
        let levels: Vec<usize> = std::env::var("TGMX_BENCH_SCALE")
            .unwrap_or_else(|_| "1,10,100".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let max = *levels.iter().max().unwrap();
        let app = TestApp::prepare().await;
        let t = Instant::now();
        let rooms = add_portals(&app, max).await;
        let control = control_rooms(&app, max).await;
        eprintln!(
            "[bench] scale: {max} portals and {max} control rooms created in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let (daemon, ready, _) = Daemon::start_timed(&app, Duration::from_secs(300)).await;
        let arr = Arrivals::start(&app.ezra).await;
        let ezra = Direct::new(&app.ezra);
        let user = app.tg.add_user(7001, "Bench", None, None);
        // Warm-up: the puppet joins every room once.
        let warm: Vec<String> = (0..max).map(|i| format!("warm-up {i}")).collect();
        for (i, b) in warm.iter().enumerate() {
            app.tg.inject_text(rooms[i].1, &user, b);
        }
        let (got, _, _) = arr.wait_all(&warm, Duration::from_secs(120)).await;
        assert_eq!(got, max, "warm-up messages lost");
        direct_once(&arr, &ezra, &control[0], "warm-up direct".into()).await;
        Scale {
            app,
            daemon,
            started,
            ready,
            rooms,
            control,
            arr,
            ezra,
            user,
            levels,
        }
    }

    async fn finish(self, r: &mut Report, cpu_rows: &mut CpuRows) {
        let Scale {
            app,
            daemon,
            started,
            ready,
            rooms,
            control,
            arr,
            ezra,
            user,
            levels,
        } = self;
        until_steady("scale", started).await;
        let n: usize = env_or("TGMX_BENCH_SCALE_N", 200);
        let max = rooms.len();
        let pid = daemon.pid;
        struct Point {
            k: usize,
            bp50: f64,
            bp99: f64,
            dp50: f64,
            btp: f64,
            dtp: f64,
            cpu: [f64; 5],
            dsyn: f64,
            got: usize,
            dup: usize,
        }
        let mut points = Vec::new();
        for &k in &levels {
            let (mut direct, mut bridged) = (Vec::new(), Vec::new());
            for i in 0..n {
                let (room, chat) = (&control[i % k], rooms[i % k].1);
                if i % 2 == 0 {
                    direct.push(direct_once(&arr, &ezra, room, format!("s{k} direct {i}")).await);
                    bridged.push(bridged_once(&arr, &app, chat, &user, format!("s{k} bridged {i}")).await);
                } else {
                    bridged.push(bridged_once(&arr, &app, chat, &user, format!("s{k} bridged {i}")).await);
                    direct.push(direct_once(&arr, &ezra, room, format!("s{k} direct {i}")).await);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let bodies: Vec<String> = (0..n).map(|i| format!("s{k} direct tp {i}")).collect();
            let dcpu = Cpu::now(pid);
            let t = Instant::now();
            for (i, b) in bodies.iter().enumerate() {
                ezra.send_text(&control[i % k], b).await;
            }
            let (dgot, _, last) = arr.wait_all(&bodies, Duration::from_secs(60)).await;
            assert_eq!(dgot, n, "direct sends lost");
            let dtp = n as f64 / last.unwrap().duration_since(t).as_secs_f64();
            let dsyn = dcpu.per_msg(pid, n)[1];
            tokio::time::sleep(Duration::from_secs(1)).await;
            let bodies: Vec<String> = (0..n).map(|i| format!("s{k} bridged tp {i}")).collect();
            let cpu = Cpu::now(pid);
            let t = Instant::now();
            for (i, b) in bodies.iter().enumerate() {
                app.tg.inject_text(rooms[i % k].1, &user, b);
            }
            let (got, dup, last) = arr.wait_all(&bodies, Duration::from_secs(60)).await;
            let btp = got as f64 / last.unwrap().duration_since(t).as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c = cpu.per_msg(pid, n);
            cpu_rows.push((
                format!("Telegram -> Matrix, {k} portals active (scale throughput series)"),
                c,
            ));
            points.push(Point {
                k,
                bp50: pct(&bridged, 0.5),
                bp99: pct(&bridged, 0.99),
                dp50: pct(&direct, 0.5),
                btp,
                dtp,
                cpu: c,
                dsyn,
                got,
                dup,
            });
        }
        r.line(format!(
            "### Scale curve: {max} portals configured, {n} messages per series spread round-robin over the active ones (from {} s after the start)\n",
            steady_after().as_secs()
        ));
        r.line(format!(
            "Startup to ready with {max} rooms to join (fresh database): {:.0} ms. Direct baseline: the same number of unbridged control rooms.\n",
            ms(ready)
        ));
        r.line("| portals active | T->M latency p50 (p99) | p50 vs 1 portal | direct p50 | overhead p50 | T->M throughput | vs 1 portal | direct throughput | bridged / direct | CPU per message: daemon / Synapse (direct: Synapse) / other processes | daemon vs 1 portal | delivered, dup |");
        r.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let base = points
            .iter()
            .find(|p| p.k == 1)
            .or(points.first())
            .map(|p| (p.bp50, p.btp, p.cpu[0]))
            .unwrap();
        for p in &points {
            let (b50, btp, bcpu) = base;
            r.line(format!(
                "| {} | {:.1} ({:.1}) ms | {:.2}x | {:.1} ms | {:+.1} ms | {:.1} msg/s | {:.2}x | {:.1} msg/s | {:.0}% | {:.2} / {:.1} ({:.1}) / {:.1} ms | {:.2}x | {}/{n}, {} |",
                p.k,
                p.bp50,
                p.bp99,
                p.bp50 / b50,
                p.dp50,
                p.bp50 - p.dp50,
                p.btp,
                p.btp / btp,
                p.dtp,
                100.0 * p.btp / p.dtp,
                p.cpu[0],
                p.cpu[1],
                p.dsyn,
                p.cpu[3],
                p.cpu[0] / bcpu,
                p.got,
                p.dup
            ));
        }
        r.line(format!(
            "\n/sync timelines reported `limited`: {}; daemon RSS at the end: {:.1} MB (VmHWM {:.1} MB).\n",
            arr.limited.load(Ordering::Relaxed),
            mb(rss_kb(pid, "VmRSS:")),
            mb(rss_kb(pid, "VmHWM:"))
        ));
        arr.stop();
        drop(daemon);
    }
}

/// `burst`: many Telegram messages at once into one portal.
struct Burst {
    app: TestApp,
    daemon: Daemon,
    started: Instant,
    arr: Arrivals,
    user: fake_telegram::TgUser,
}

impl Burst {
    async fn start() -> Burst {
        let app = TestApp::prepare().await;
        write_config(&app, &[(app.room.clone(), app.chat)]);
        let started = Instant::now();
        let (daemon, _, _) = Daemon::start_timed(&app, Duration::from_secs(60)).await;
        let arr = Arrivals::start(&app.ezra).await;
        let user = app.tg.add_user(7001, "Bench", None, None);
        bridged_once(&arr, &app, app.chat, &user, "warm-up".into()).await;
        Burst {
            app,
            daemon,
            started,
            arr,
            user,
        }
    }

    async fn finish(self, r: &mut Report, cpu_rows: &mut CpuRows) {
        let Burst {
            app,
            daemon,
            started,
            arr,
            user,
        } = self;
        until_steady("burst", started).await;
        let burst: usize = env_or("TGMX_BENCH_BURST", 2000);
        let pid = daemon.pid;
        let idle_before = rss_kb(pid, "VmRSS:");
        let hwm_before = rss_kb(pid, "VmHWM:");
        let bodies: Vec<String> = (0..burst).map(|i| format!("burst {i}")).collect();
        let attach = Attach::start("burst", pid).await;
        let rss = RssSampler::start(pid);
        let cpu = Cpu::now(pid);
        let t = Instant::now();
        for b in &bodies {
            app.tg.inject_text(app.chat, &user, b);
        }
        let inject = t.elapsed();
        let (got, dup, last) = arr.wait_all(&bodies, Duration::from_secs(120)).await;
        let drain = last.map(|l| l.duration_since(t)).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = cpu.per_msg(pid, burst);
        let peak = rss.finish().await;
        attach.finish();
        cpu_rows.push((format!("Telegram -> Matrix, 1 portal, burst of {burst}"), c));
        let hwm = rss_kb(pid, "VmHWM:");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_after = rss_kb(pid, "VmRSS:");
        let db_links = db_scalar(&app, "SELECT COUNT(*) FROM messages WHERE direction = 'tg_to_mx'").await;
        let db_inbox = db_scalar(&app, "SELECT COUNT(*) FROM tg_inbox").await;
        let db_mx_inbox = db_scalar(&app, "SELECT COUNT(*) FROM mx_inbox").await;
        let db_failures = db_scalar(&app, "SELECT COUNT(*) FROM failures").await;

        r.line(format!(
            "### Burst: {burst} Telegram messages at once, one portal (from {} s after the start)\n",
            steady_after().as_secs()
        ));
        r.line("| figure | value |");
        r.line("| --- | --- |");
        r.line(format!(
            "| delivered (distinct bodies seen on Matrix) / duplicates | **{got}/{burst}** / {dup} |"
        ));
        r.line(format!(
            "| bridge database after the drain: links Telegram -> Matrix (incl. 1 warm-up), Telegram inbox left, Matrix inbox left, failures | {db_links}, {db_inbox}, {db_mx_inbox}, {db_failures} |"
        ));
        r.line(format!(
            "| time to drain (first injected to last seen on Matrix) | **{:.1} s ({:.1} msg/s)**; injecting took {:.0} ms |",
            drain.as_secs_f64(),
            got as f64 / drain.as_secs_f64(),
            ms(inject)
        ));
        r.line(format!(
            "| RSS idle before / peak during (sampled 50 ms) / VmHWM / idle 5 s after | {:.1} / **{:.1}** / {:.1} / {:.1} MB (VmHWM before: {:.1} MB) |",
            mb(idle_before),
            mb(peak),
            mb(hwm),
            mb(idle_after),
            mb(hwm_before)
        ));
        r.line(format!(
            "| /sync timelines reported `limited` | {} |\n",
            arr.limited.load(Ordering::Relaxed)
        ));
        arr.stop();
        drop(daemon);
    }
}

#[tokio::main]
async fn main() {
    harness::use_binaries(env!("CARGO_BIN_EXE_tgmx"), option_env!("TGMX_CONDUIT_BIN"));
    let only = std::env::var("TGMX_BENCH_ONLY").unwrap_or_else(|_| "base,portals,scale,burst".into());
    let run = |s: &str| only.split(',').any(|x| x.trim() == s);
    let started = Instant::now();
    let load0 = loadavg();
    let mut r = Report(Vec::new());
    let mut cpu_rows = Vec::new();
    r.line("## tgmx bench\n");
    r.line(format!(
        "Settings: TGMX_BENCH_N={}, TGMX_BENCH_BURST={}, TGMX_BENCH_PORTALS={}, TGMX_BENCH_PUPPETS={}, TGMX_BENCH_SCALE={}, TGMX_BENCH_SCALE_N={}, TGMX_BENCH_SETTLE_MS={}, TGMX_BENCH_STEADY_AFTER={}, gateway extra: {:?}, log filter: {:?}.\n",
        env_or("TGMX_BENCH_N", 200),
        env_or("TGMX_BENCH_BURST", 2000),
        env_or("TGMX_BENCH_PORTALS", 50),
        env_or("TGMX_BENCH_PUPPETS", 500),
        std::env::var("TGMX_BENCH_SCALE").unwrap_or_else(|_| "1,10,100".into()),
        env_or("TGMX_BENCH_SCALE_N", 200),
        settle().as_millis(),
        steady_after().as_secs(),
        std::env::var("TGMX_BENCH_GATEWAY").unwrap_or_default(),
        std::env::var("TGMX_BENCH_LOG").unwrap_or_else(|_| "info,tgmx=debug".into()),
    ));
    let mut times = Vec::new();
    // The sections whose series run in steady state start their bridges first; the `portals`
    // section (which measures a start) runs while their start-up windows pass.
    let t = Instant::now();
    let base = if run("base") { Some(Base::start().await) } else { None };
    let scale = if run("scale") { Some(Scale::start().await) } else { None };
    let burst = if run("burst") { Some(Burst::start().await) } else { None };
    times.push(("set-up", t.elapsed()));
    if run("portals") {
        let t = Instant::now();
        section_portals(&mut r).await;
        times.push(("portals", t.elapsed()));
    }
    if let Some(b) = base {
        let t = Instant::now();
        b.finish(&mut r, &mut cpu_rows).await;
        times.push(("base", t.elapsed()));
    }
    if let Some(s) = scale {
        let t = Instant::now();
        s.finish(&mut r, &mut cpu_rows).await;
        times.push(("scale", t.elapsed()));
    }
    if let Some(b) = burst {
        let t = Instant::now();
        b.finish(&mut r, &mut cpu_rows).await;
        times.push(("burst", t.elapsed()));
    }
    if !cpu_rows.is_empty() {
        r.line("### CPU per message (where the time goes)\n");
        r.line("CPU time (user + system, from /proc, 10 ms ticks) used during the series, divided by its messages; wall is the series' elapsed time per message.\n");
        r.line(
            "| series | daemon ms | Synapse ms | bench (fake Bot API, observer) ms | other processes ms | wall ms |",
        );
        r.line("| --- | --- | --- | --- | --- | --- |");
        for (what, c) in &cpu_rows {
            r.line(format!(
                "| {what} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                c[0], c[1], c[2], c[3], c[4]
            ));
        }
        r.line("");
    }
    let t: Vec<String> = times
        .iter()
        .map(|(s, d)| format!("{s} {:.0} s", d.as_secs_f64()))
        .collect();
    r.line(format!(
        "Run time: {:.0} s ({}). Load average (1 min) at the start: {load0}, at the end: {}.",
        started.elapsed().as_secs_f64(),
        t.join(", "),
        loadavg()
    ));
}
