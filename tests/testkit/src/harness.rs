//! Test harness: one real homeserver of each kind (Synapse, Conduit) per test process, started
//! on first use and stopped when the process exits, with a pool of appservice slots; each test
//! takes a fresh slot, its own fake Telegram Bot API, its own rooms and its own database, and runs
//! the real `tgmx` binary as a child process ([`TestApp::start`]) or the bridge inside the test
//! process ([`TestApp::start_in_process`]). Which homeserver a test runs on is set per test
//! thread by the `both!` macro (tests/it/main.rs); see `hs_kind`.
//!
//! Waiting: [`eventually`] polls a condition until it holds and fails with the last observation.

use std::cell::Cell;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_telegram::{FakeTelegram, SentMessage, TgUser};

/// What [`eventually`] polls: `Some(value)`, `Ok(value)` or `true` when the condition holds, else
/// `None`, `false` or `Err(what was seen instead)` (formatted only if it is the last one).
pub trait Observation {
    type Value;
    type Seen: std::fmt::Display;
    fn into_result(self) -> Result<Self::Value, Self::Seen>;
}

impl<T> Observation for Option<T> {
    type Value = T;
    type Seen = &'static str;
    fn into_result(self) -> Result<T, &'static str> {
        self.ok_or("nothing yet")
    }
}

impl<T, E: std::fmt::Display> Observation for Result<T, E> {
    type Value = T;
    type Seen = E;
    fn into_result(self) -> Result<T, E> {
        self
    }
}

impl Observation for bool {
    type Value = ();
    type Seen = &'static str;
    fn into_result(self) -> Result<(), &'static str> {
        if self { Ok(()) } else { Err("not yet") }
    }
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Poll `check` until it holds and return its value; at `timeout`, panic naming `what` with the
/// last observation. `check` runs at least once, and once more at the deadline.
pub async fn eventually<O: Observation>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> O) -> O::Value {
    let start = Instant::now();
    loop {
        let last = match check().await.into_result() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

/// Events shown as pretty JSON, for an [`eventually`] that waits for them.
pub struct Events(pub Vec<Value>);

impl std::fmt::Display for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} event(s): {:#?}", self.0.len(), self.0)
    }
}

/// The in-process bridge's entry point (see [`TestApp::start_in_process`]): given the config file
/// and a future that resolves when the bridge must stop, build the bridge and run it until then.
pub type RunBridge = Box<dyn FnOnce(PathBuf, StopSignal) -> BridgeRun>;
/// Resolves when an in-process bridge must stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;
/// An in-process bridge's run: `Err` with the reason when it fails to start or stops on an error.
pub type BridgeRun = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Appservice slots per homeserver, one per `TestApp`. Synapse's are registered before it starts;
/// Conduit's when a test takes one.
const SLOTS: usize = 128;
pub const TG_TOKEN: &str = "123456:TEST-token-ABCdef_0123456789";
/// Conduit's registration token (tests/rig/conduit.sh), asked through user-interactive auth.
const CONDUIT_REG_TOKEN: &str = "rig-registration-token";

/// A homeserver implementation the integration tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsKind {
    Synapse,
    Conduit,
}

impl HsKind {
    pub fn name(self) -> &'static str {
        match self {
            HsKind::Synapse => "synapse",
            HsKind::Conduit => "conduit",
        }
    }

    /// Make this the homeserver of the test running on this thread (a `#[tokio::test]` runs all
    /// its tasks on its own thread).
    pub fn set_current(self) {
        CURRENT_HS.with(|c| c.set(Some(self)));
    }
}

thread_local! {
    static CURRENT_HS: Cell<Option<HsKind>> = const { Cell::new(None) };
}

/// The homeserver kind of the current test; outside a test (the benchmarks) Synapse, or Conduit
/// with `TGMX_TEST_HS=conduit`.
pub fn hs_kind() -> HsKind {
    CURRENT_HS
        .with(Cell::get)
        .unwrap_or_else(|| match std::env::var("TGMX_TEST_HS").as_deref() {
            Ok("conduit") => HsKind::Conduit,
            _ => HsKind::Synapse,
        })
}

/// One running homeserver with its appservice slots.
pub struct Homeserver {
    pub kind: HsKind,
    pub url: String,
    /// Synapse: every slot, registered at start. Conduit: slots are made when taken.
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    rig: PathBuf,
}

#[derive(Clone)]
struct Slot {
    dir: PathBuf,
    port: u16,
}

static SYNAPSE: OnceLock<Homeserver> = OnceLock::new();
static CONDUIT: OnceLock<Homeserver> = OnceLock::new();
/// Conduit registers one appservice at a time (its answer in the admin room is matched by order).
static CONDUIT_REGISTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free TCP port of 127.0.0.1 (free when asked) for a server the tests stop and start again
/// on the same port (the daemon's appservice endpoint, a homeserver). It lies below the kernel's
/// range for outgoing connections' source ports: a port from that range, left free while its
/// server is down, was taken as the source port of some connection, and the restarted daemon
/// could not bind it ("Address already in use"; seen once in CI, in a SIGKILL test).
pub(crate) fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, span) = (
        ephemeral_low.saturating_sub(12_000).max(1024),
        12_000.min(ephemeral_low.saturating_sub(1024)),
    );
    if span > 0 {
        // Processes (the tests, a bench) start at different places of the span.
        let start = std::process::id().wrapping_mul(7919);
        for _ in 0..span {
            let port = low + start.wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tgmx repository (this crate is its `tests/testkit`).
fn repo() -> PathBuf {
    static REPO: OnceLock<PathBuf> = OnceLock::new();
    REPO.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        p.canonicalize().unwrap_or(p)
    })
    .clone()
}

/// The binaries the caller named (see [`use_binaries`]).
struct Binaries {
    tgmx: &'static str,
    conduit: Option<&'static str>,
}

static BINARIES: OnceLock<Binaries> = OnceLock::new();

/// Name the daemon binary this build made and the Conduit binary build.rs found, if any. Only the
/// tgmx package's own tests and benches know them:
/// `use_binaries(env!("CARGO_BIN_EXE_tgmx"), option_env!("TGMX_CONDUIT_BIN"))`. Call it before
/// the first homeserver or daemon starts; later calls are ignored.
pub fn use_binaries(tgmx: &'static str, conduit: Option<&'static str>) {
    let _ = BINARIES.set(Binaries { tgmx, conduit });
}

fn binaries() -> &'static Binaries {
    BINARIES
        .get()
        .expect("call tgmx_testkit::harness::use_binaries(env!(\"CARGO_BIN_EXE_tgmx\"), ..) first")
}

/// Test runs whose directories under `target/it/` are kept (logs to read after a failure); older
/// ones are removed when a new run starts (each holds two homeservers' data, tens of MB).
const KEEP_RUNS: usize = 3;

/// This process's directory under `target/it/` (emptied once, on first use).
/// The `database:` of a slot's config: SQLite, in the slot's directory.
const SQLITE_DATABASE: &str = "sqlite://tgmx.db";

/// A PostgreSQL server for the apps that use one (see [`TestApp::use_postgres`]).
fn postgres_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TGMX_TEST_POSTGRES_URL")
            && !url.is_empty()
        {
            return url;
        }
        let out = Command::new("bash")
            .arg(repo().join("tests/rig/postgres.sh"))
            .arg("start")
            .env("RIG_DIR", run_dir().join("postgres"))
            .env("WATCH_PID", std::process::id().to_string())
            .output()
            .expect("run tests/rig/postgres.sh");
        assert!(
            out.status.success(),
            "tests/rig/postgres.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    })
}

fn run_dir() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let it = repo().join("target").join("it");
        remove_old_runs(&it);
        let root = it.join(format!("run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    })
}

/// Remove all but the newest `KEEP_RUNS - 1` run directories (this run makes the last one).
/// The directory of a test process still running (tests run side by side) is never removed.
fn remove_old_runs(it: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(it) else {
        return;
    };
    let running = |name: &str| {
        name.strip_prefix("run-")
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .filter(|e| !running(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    runs.sort();
    let old = runs.len().saturating_sub(KEEP_RUNS - 1);
    for (_, dir) in runs.into_iter().take(old) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The Conduit binary: `CONDUIT_BIN`, else the one build.rs found, else the default place.
fn conduit_bin() -> PathBuf {
    std::env::var_os("CONDUIT_BIN")
        .map(PathBuf::from)
        .or_else(|| BINARIES.get().and_then(|b| b.conduit).map(PathBuf::from))
        .unwrap_or_else(|| repo().join("../shared/conduit/conduit"))
}

/// The daemon under test: this build's, or `TGMX_BIN` (the bench compares builds with it).
pub fn tgmx_bin() -> String {
    std::env::var("TGMX_BIN").unwrap_or_else(|_| binaries().tgmx.to_owned())
}

/// Config for slot `i` (written again per test with the real Telegram URL and room).
/// `gateway_extra` holds more lines for the `gateway:` block, indented by two spaces.
pub fn slot_config(
    i: usize,
    port: u16,
    hs_url: &str,
    api_url: &str,
    rooms: &[(String, i64)],
    gateway_extra: &str,
) -> String {
    let rooms_yaml: String = rooms
        .iter()
        .map(|(r, c)| format!("  - {{matrix: \"{r}\", telegram: {c}}}\n"))
        .collect();
    format!(
        r#"# tgmx test config, slot {i}
homeserver: {{url: "{hs_url}", server_name: localhost}}
appservice:
  listen: "127.0.0.1:{port}"
  registration: registration.yaml
  id: tgmx{i}
  bot_localpart: tg{i}bot
  bot_displayname: "Telegram bridge {i}"
  puppet_prefix: tg{i}_
database: "sqlite://tgmx.db"
gateway:
  # the mode under test
  primary_platform: telegram
  fallback_platform: matrix
  telegram:
    enabled: true
    api_url: "{api_url}"
    poll_timeout: 2
    per_chat_per_minute: 0
{gateway_extra}
rooms:
{rooms_yaml}identities:
  - {{matrix: "@op{i}_alex:localhost", telegram: 4242}}
logging: {{level: "info,tgmx=debug"}}
"#
    )
}

/// Write slot `i`'s directory, config and registration (made by the daemon's own generator).
fn make_slot(kind: HsKind, i: usize, hs_url: &str) -> Slot {
    let dir = run_dir().join(format!("{}-slot{i}", kind.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("config.yaml"),
        slot_config(i, port, hs_url, "http://127.0.0.1:1", &[], ""),
    )
    .unwrap();
    let out = Command::new(tgmx_bin())
        .args(["generate-registration", "-c"])
        .arg(dir.join("config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate-registration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Slot { dir, port }
}

/// Run a rig script (`tests/rig/<kind>.sh start`) for a homeserver on `port` in `rig`.
fn run_rig(kind: HsKind, rig: &PathBuf, port: u16) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join(format!("tests/rig/{}.sh", kind.name())))
        .arg("start")
        .env("RIG_DIR", rig)
        .env("HS_PORT", port.to_string())
        .env("WATCH_PID", std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if kind == HsKind::Conduit {
        cmd.env("CONDUIT_BIN", conduit_bin());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} did not start:\n{}\n{}",
        kind.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Homeserver {
    /// The current test's homeserver (see `hs_kind`), started on first use.
    pub fn get() -> &'static Homeserver {
        Homeserver::of(hs_kind())
    }

    pub fn of(kind: HsKind) -> &'static Homeserver {
        match kind {
            HsKind::Synapse => SYNAPSE.get_or_init(Homeserver::start_synapse),
            HsKind::Conduit => CONDUIT.get_or_init(Homeserver::start_conduit),
        }
    }

    fn start_synapse() -> Homeserver {
        let rig = run_dir().join("synapse");
        std::fs::create_dir_all(rig.join("appservices")).unwrap();
        let hs_port = free_port();
        let url = format!("http://127.0.0.1:{hs_port}");
        let slots: Vec<Slot> = (0..SLOTS)
            .map(|i| {
                let slot = make_slot(HsKind::Synapse, i, &url);
                std::fs::copy(
                    slot.dir.join("registration.yaml"),
                    rig.join("appservices").join(format!("slot{i}.yaml")),
                )
                .unwrap();
                slot
            })
            .collect();
        run_rig(HsKind::Synapse, &rig, hs_port);
        Homeserver {
            kind: HsKind::Synapse,
            url,
            slots,
            next_slot: AtomicUsize::new(0),
            rig,
        }
    }

    fn start_conduit() -> Homeserver {
        let rig = run_dir().join("conduit");
        std::fs::create_dir_all(&rig).unwrap();
        let hs_port = free_port();
        run_rig(HsKind::Conduit, &rig, hs_port);
        Homeserver {
            kind: HsKind::Conduit,
            url: format!("http://127.0.0.1:{hs_port}"),
            slots: Vec::new(),
            next_slot: AtomicUsize::new(0),
            rig,
        }
    }

    async fn take_slot(&self) -> (usize, Slot) {
        let i = self.next_slot.fetch_add(1, Ordering::SeqCst);
        assert!(
            i < SLOTS,
            "more TestApps than SLOTS ({SLOTS}) on {}; raise SLOTS in tests/testkit/src/harness.rs",
            self.kind.name()
        );
        match self.kind {
            HsKind::Synapse => (i, self.slots[i].clone()),
            HsKind::Conduit => {
                let slot = make_slot(self.kind, i, &self.url);
                let reg = std::fs::read_to_string(slot.dir.join("registration.yaml")).unwrap();
                self.register_appservice(&reg, &format!("tgmx{i}")).await;
                (i, slot)
            }
        }
    }

    /// Conduit: register an appservice the only way it offers, by a command to its server bot in
    /// the admin room, sent as the admin (tests/rig/conduit.sh wrote the admin's token).
    async fn register_appservice(&self, registration: &str, id: &str) {
        let env = std::fs::read_to_string(self.rig.join("env.sh")).unwrap();
        let token = env
            .lines()
            .find_map(|l| l.strip_prefix("ADMIN_TOKEN="))
            .expect("ADMIN_TOKEN in the conduit rig's env.sh")
            .to_owned();
        let admin = MxUser {
            user_id: "@admin:localhost".into(),
            token,
            hs: self.url.clone(),
        };
        let room = admin
            .call("GET", "/_matrix/client/v3/directory/room/%23admins:localhost", None)
            .await
            .unwrap()["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let _one_at_a_time = CONDUIT_REGISTER.lock().await;
        let command = admin
            .send_text(
                &room,
                &format!(
                    "@conduit:localhost: register-appservice\n```\n{}\n```",
                    registration.trim_end()
                ),
            )
            .await;
        // The server bot answers with an m.text after the command (its notices about new users
        // are m.notice).
        let reply = eventually(
            &format!("@conduit:localhost to answer register-appservice {id}"),
            Duration::from_secs(30),
            async || {
                let v = admin
                    .call(
                        "GET",
                        &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)),
                        None,
                    )
                    .await
                    .unwrap();
                let newer = v["chunk"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .take_while(|e| e["event_id"] != command.as_str());
                newer
                    .filter(|e| e["sender"] == "@conduit:localhost" && e["content"]["msgtype"] == "m.text")
                    .last()
                    .map(|e| body(e).to_owned())
            },
        )
        .await;
        assert!(
            reply.contains(&format!("Appservice registered with ID: {id}")),
            "conduit refused appservice {id}: {reply}"
        );
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A real Matrix user (registered through the client API).
#[derive(Clone)]
pub struct MxUser {
    pub user_id: String,
    pub token: String,
    hs: String,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl MxUser {
    /// Register through the client API on the current test's homeserver, answering its
    /// user-interactive auth: `m.login.dummy` (Synapse) or the registration token (Conduit).
    pub async fn register(localpart: &str, displayname: &str) -> MxUser {
        let hs = Homeserver::get().url.clone();
        let c = http();
        let mut body = json!({"username": localpart, "password": "testpass-123", "inhibit_login": false});
        let mut v = Value::Null;
        for _ in 0..2 {
            let r = c
                .post(format!("{hs}/_matrix/client/v3/register"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            v = r.json().await.unwrap();
            if status.is_success() {
                break;
            }
            // 401 with the flows and a session: the one stage every flow here has.
            assert!(status == 401 && body.get("auth").is_none(), "register {localpart}: {v}");
            let stages = v["flows"].to_string();
            let session = v["session"].clone();
            body["auth"] = if stages.contains("m.login.registration_token") {
                json!({"type": "m.login.registration_token", "token": CONDUIT_REG_TOKEN, "session": session})
            } else {
                json!({"type": "m.login.dummy", "session": session})
            };
        }
        assert!(v["access_token"].is_string(), "register {localpart}: {v}");
        let u = MxUser {
            user_id: v["user_id"].as_str().unwrap().into(),
            token: v["access_token"].as_str().unwrap().into(),
            hs,
        };
        u.call(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&u.user_id)),
            Some(json!({"displayname": displayname})),
        )
        .await
        .unwrap();
        u
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, (u16, Value)> {
        let c = http();
        let url = format!("{}{}", self.hs, path);
        let mut req = c.request(method.parse().unwrap(), url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err((status, v))
        }
    }

    /// Set a room state event (empty state key).
    pub async fn set_state(&self, room: &str, event_type: &str, content: Value) {
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/{event_type}/"),
            Some(content),
        )
        .await
        .unwrap();
    }

    pub async fn create_room(&self, invite: &[&str]) -> String {
        // Room v12 ids are the create event's hash: two identical creates by one user in the
        // same millisecond (rooms created concurrently) get the same room from Conduit.
        static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let v = self
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(json!({
                    "preset": "private_chat",
                    "invite": invite,
                    "name": "test room",
                    "creation_content": {"org.tgmx.test.nonce": format!("{}-{nonce}", std::process::id())},
                })),
            )
            .await
            .unwrap();
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// Upload to the media repository; returns the mxc URI.
    pub async fn upload(&self, bytes: Vec<u8>, mime: &str, name: &str) -> String {
        let r = http()
            .post(format!("{}/_matrix/media/v3/upload?filename={}", self.hs, enc(name)))
            .bearer_auth(&self.token)
            .header("content-type", mime)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload failed: {}", r.status());
        r.json::<Value>().await.unwrap()["content_uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Download through the authenticated media API.
    pub async fn download(&self, mxc: &str) -> Vec<u8> {
        let rest = mxc.strip_prefix("mxc://").expect("mxc uri");
        let r = http()
            .get(format!("{}/_matrix/client/v1/media/download/{rest}", self.hs))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "download of {mxc} failed: {}", r.status());
        r.bytes().await.unwrap().to_vec()
    }

    pub async fn invite(&self, room: &str, user: &str) {
        self.call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
            Some(json!({"user_id": user})),
        )
        .await
        .unwrap_or_else(|e| panic!("invite {user} to {room}: {e:?}"));
    }

    pub async fn join(&self, room: &str) {
        self.call(
            "POST",
            &format!("/_matrix/client/v3/join/{}", enc(room)),
            Some(json!({})),
        )
        .await
        .unwrap();
    }

    pub async fn send(&self, room: &str, content: Value) -> String {
        let txn = format!("t{}", NEXT_TXN.fetch_add(1, Ordering::SeqCst));
        let v = self
            .call(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room)),
                Some(content),
            )
            .await
            .unwrap();
        v["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send(room, json!({"msgtype": "m.text", "body": body})).await
    }

    pub async fn redact(&self, room: &str, event: &str) {
        let txn = format!("r{}", NEXT_TXN.fetch_add(1, Ordering::SeqCst));
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(room), enc(event)),
            Some(json!({})),
        )
        .await
        .unwrap();
    }

    /// All timeline events of the room, oldest first.
    pub async fn events(&self, room: &str) -> Vec<Value> {
        // Page back to the room's start: Conduit answers at most 100 events a page.
        let mut evs: Vec<Value> = Vec::new();
        let mut from = String::new();
        loop {
            let v = self
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000{from}", enc(room)),
                    None,
                )
                .await
                .unwrap();
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            let end = v["end"].as_str().map(enc);
            if chunk.is_empty() {
                break;
            }
            evs.extend(chunk);
            match end {
                Some(end) => from = format!("&from={end}"),
                None => break,
            }
        }
        evs.reverse();
        evs
    }

    /// All `m.room.message` events of the room, oldest first.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        self.events(room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .collect()
    }

    /// `m.reaction` keys on `event`, with their senders.
    pub async fn reactions(&self, room: &str, event: &str) -> Vec<(String, String)> {
        self.events(room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.reaction" && e["content"]["m.relates_to"]["event_id"] == event)
            .map(|e| {
                (
                    e["sender"].as_str().unwrap_or_default().to_owned(),
                    e["content"]["m.relates_to"]["key"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Wait until at least `n` messages match `pred`; returns the matching ones.
    pub async fn wait_messages(
        &self,
        room: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        eventually(&format!("{n} matching messages in {room}"), timeout, async || {
            let found: Vec<Value> = self.messages(room).await.into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                Ok(found)
            } else {
                Err(Events(found))
            }
        })
        .await
    }

    /// `user`'s `m.room.member` state content in `room`, as this user sees it.
    async fn member_content(&self, room: &str, user: &str) -> Option<Value> {
        self.call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(user)
            ),
            None,
        )
        .await
        .ok()
    }

    pub async fn member_name(&self, room: &str, user: &str) -> Option<String> {
        let content = self.member_content(room, user).await?;
        content["displayname"].as_str().map(str::to_owned)
    }

    /// `user`'s membership in `room` ("invite", "join", "leave", ...), as this user sees it.
    pub async fn member_state(&self, room: &str, user: &str) -> Option<String> {
        let content = self.member_content(room, user).await?;
        content["membership"].as_str().map(str::to_owned)
    }

    pub async fn joined_members(&self, room: &str) -> Vec<String> {
        let v = self
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)),
                None,
            )
            .await
            .unwrap();
        v["joined"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }
}

static NEXT_TXN: AtomicUsize = AtomicUsize::new(0);

/// One bridge under test: its slot, its fake Telegram, one bridged room, and the daemon process.
pub struct TestApp {
    pub slot: usize,
    pub dir: PathBuf,
    pub port: u16,
    pub tg: FakeTelegram,
    /// Creator of the bridged room, a plain Matrix user ("Ezra").
    pub ezra: MxUser,
    /// The operator's own Matrix account, mapped to Telegram user 4242 (double puppet).
    pub alex: MxUser,
    pub room: String,
    pub chat: i64,
    pub bot: String,
    pub hs_token: String,
    /// Homeserver URL the daemon is configured with (the homeserver, or a `Proxy` in front of it).
    pub hs_url: String,
    /// The daemon, while it runs: a child process or a task of the test's runtime.
    daemon: Option<Daemon>,
    /// More environment for the daemon (e.g. `TGMX_FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// The app's `database:` (SQLite in its directory unless [`TestApp::use_postgres`]).
    pub database: String,
    /// Answers the homeserver's pushes until the daemon first starts (Conduit only).
    stand_in: Option<StandIn>,
}

/// A running bridge.
enum Daemon {
    /// The `tgmx` binary ([`TestApp::launch`]).
    Child(Child),
    /// The bridge in the test process ([`TestApp::start_in_process`]).
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), String>>,
    },
}

/// Acknowledges every appservice transaction at a port (`{}`, `Connection: close`; queries: 404),
/// one connection at a time, so that nothing it accepted outlives [`StandIn::stop`]. Counts the requests whose body
/// names `needle`.
struct StandIn {
    task: tokio::task::JoinHandle<()>,
    seen: std::sync::Arc<AtomicUsize>,
}

impl StandIn {
    async fn start(port: u16, needle: String) -> StandIn {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                // Read the head and the body it announces, then answer and close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let done = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        break false;
                    };
                    if n == 0 {
                        break false;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + length {
                        break true;
                    }
                };
                if done {
                    if String::from_utf8_lossy(&buf).contains(&needle) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    // Transactions are acknowledged; user and alias queries find nothing (an
                    // answer of 200 would tell the homeserver the bridge made that room).
                    let answer: &[u8] = if buf.starts_with(b"PUT ") {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                    } else {
                        b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 25\r\nconnection: close\r\n\r\n{\"errcode\":\"M_NOT_FOUND\"}"
                    };
                    let _ = sock.write_all(answer).await;
                }
            }
        });
        StandIn { task, seen }
    }

    /// Wait until a request naming the needle was answered.
    async fn wait_seen(&self) {
        eventually(
            "the homeserver to push the room's events to the stand-in",
            Duration::from_secs(20),
            async || self.seen.load(Ordering::SeqCst) > 0,
        )
        .await
    }

    /// Stop answering, and wait until the port is free.
    async fn stop(self, port: u16) {
        self.task.abort();
        let _ = self.task.await;
        eventually(
            &format!("port {port} to be free"),
            Duration::from_secs(10),
            async || {
                std::net::TcpListener::bind(("127.0.0.1", port))
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .await
    }
}

impl TestApp {
    /// A bridge with one room <-> one chat, started and ready.
    pub async fn spawn() -> TestApp {
        let mut app = TestApp::prepare().await;
        app.start().await;
        app
    }

    /// Everything but the daemon.
    pub async fn prepare() -> TestApp {
        let hs = Homeserver::get();
        let (slot, s) = hs.take_slot().await;
        let tg = FakeTelegram::start(TG_TOKEN).await;
        let chat = -1_000_000_000_000 - slot as i64;
        tg.add_chat(chat, "fleet-ops");
        let bot = format!("@tg{slot}bot:localhost");
        // Conduit never retries a failed push by itself and backs off 30 s × tries² (only a new
        // event triggers the retry): a push refused before the daemon starts would leave every
        // Conduit test on the bridge's fallback paths (/sync, the sweep) instead of the push
        // path. A stand-in answers at the appservice port until the daemon starts. The backoff
        // itself is exercised where a test stops the daemon (delivery.rs, restarts).
        let stand_in = match hs.kind {
            HsKind::Conduit => Some(StandIn::start(s.port, "\"membership\":\"join\"".to_owned()).await),
            HsKind::Synapse => None,
        };
        let ezra = MxUser::register(&format!("ezra{slot}"), "Ezra").await;
        let alex = MxUser::register(&format!("op{slot}_alex"), "Alexander").await;
        let room = ezra.create_room(&[&bot, &alex.user_id]).await;
        alex.join(&room).await;
        if let Some(stand_in) = &stand_in {
            // Every push of prepare's events (the invites, Alexander's join: the last) is answered
            // before the port is handed on.
            stand_in.wait_seen().await;
        }
        let reg = std::fs::read_to_string(s.dir.join("registration.yaml")).unwrap();
        let hs_token = reg
            .lines()
            .find_map(|l| l.strip_prefix("hs_token: "))
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned();
        let hs_url = hs.url.clone();
        let mut app = TestApp {
            slot,
            dir: s.dir,
            port: s.port,
            tg,
            ezra,
            alex,
            room,
            chat,
            bot,
            hs_token,
            hs_url,
            daemon: None,
            env: Vec::new(),
            stand_in,
            database: SQLITE_DATABASE.to_owned(),
        };
        app.write_config("");
        // `TGMX_TEST_DB=postgres`: every app of the run keeps its state in PostgreSQL.
        if std::env::var("TGMX_TEST_DB").as_deref() == Ok("postgres") {
            app.use_postgres();
        }
        app
    }

    /// Keep this app's state in a fresh PostgreSQL database instead of SQLite (before the bridge
    /// starts): `TGMX_TEST_POSTGRES_URL`'s server, or the throwaway cluster of
    /// `tests/rig/postgres.sh` (started once per test process, under the run directory, stopped
    /// when the process ends). The database is named after the homeserver and the slot.
    pub fn use_postgres(&mut self) {
        let admin = postgres_url();
        let name = format!("tgmx_it_{}_{}_{}", std::process::id(), hs_kind().name(), self.slot);
        let out = Command::new("psql")
            .arg(admin)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name}"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql (PostgreSQL's client)");
        assert!(
            out.status.success(),
            "cannot create the test database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut url = url::Url::parse(admin).expect("a URL");
        url.set_path(&name);
        self.database = url.to_string();
        let database = self.database.clone();
        self.edit_config(|c| {
            c.replacen(
                &format!("database: \"{SQLITE_DATABASE}\""),
                &format!("database: \"{database}\""),
                1,
            )
        });
    }

    /// A query's result on this app's PostgreSQL database (`psql -tA`: one line per row).
    pub fn psql(&self, sql: &str) -> String {
        assert!(self.database.starts_with("postgres"), "this app is on SQLite");
        let out = Command::new("psql")
            .arg(&self.database)
            .args(["-tA", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stop the stand-in that answers at the appservice port before the first start (Conduit),
    /// so that something else can listen there.
    pub async fn release_stand_in(&mut self) {
        if let Some(stand_in) = self.stand_in.take() {
            stand_in.stop(self.port).await;
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn write_config(&self, gateway_extra: &str) {
        let mut cfg = slot_config(
            self.slot,
            self.port,
            &self.hs_url,
            &self.tg.api_url(),
            &[(self.room.clone(), self.chat)],
            gateway_extra,
        );
        if self.database != SQLITE_DATABASE {
            cfg = cfg.replacen(
                &format!("database: \"{SQLITE_DATABASE}\""),
                &format!("database: \"{}\"", self.database),
                1,
            );
        }
        std::fs::write(self.config_path(), cfg).unwrap();
    }

    /// Rewrite the config file through `f`.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), f(text)).unwrap();
    }

    /// Send SIGHUP to the daemon.
    pub fn hup(&self) {
        let Some(Daemon::Child(child)) = &self.daemon else {
            panic!("hup: no daemon process runs (not started, or started in process)")
        };
        let pid = child.id();
        assert!(
            Command::new("kill")
                .arg("-HUP")
                .arg(pid.to_string())
                .status()
                .unwrap()
                .success()
        );
    }

    /// Run a `tgmx` subcommand against this app's config; returns (success, stdout + stderr).
    /// Runs off the test's runtime, which also serves the fake Bot API the command may call.
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        self.cli_env(args, TG_TOKEN).await
    }

    /// `cli` with another Telegram token in the environment.
    pub async fn cli_env(&self, args: &[&str], token: &str) -> (bool, String) {
        let mut cmd = Command::new(tgmx_bin());
        cmd.args(args)
            .arg("-c")
            .arg(self.config_path())
            .env("TGMX_TELEGRAM_TOKEN", token)
            .env("TGMX_PICKLE_KEY", "test-pickle-key");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Wait until the daemon log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        eventually(
            &format!("the log to say {needle:?}"),
            Duration::from_secs(30),
            async || {
                let log = self.log();
                if log.contains(needle) {
                    Ok(())
                } else {
                    Err(format!("the log:\n{log}"))
                }
            },
        )
        .await
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Turn encryption on in the test room (Ezra sends the `m.room.encryption` state).
    pub async fn encrypt_room(&self) {
        self.ezra
            .set_state(
                &self.room,
                "m.room.encryption",
                json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            )
            .await;
    }

    pub fn puppet(&self, tg_user: i64) -> String {
        format!("@tg{}_{tg_user}:localhost", self.slot)
    }

    /// Start the daemon and wait until the bot is in the room and Telegram is being polled.
    pub async fn start(&mut self) {
        let polls = self.tg.calls("getUpdates");
        self.launch().await;
        self.wait_started(polls).await;
    }

    /// A bridge with one room <-> one chat, run inside the test process by `run` (the caller
    /// builds it: only the tgmx package's tests link the bridge), started and ready. For tests
    /// that neither kill nor restart the daemon, nor give it environment (`env`).
    pub async fn spawn_in_process(run: RunBridge) -> TestApp {
        let mut app = TestApp::prepare().await;
        app.start_in_process(run).await;
        app
    }

    /// Start the bridge in the test process (a task of the test's runtime, stopped when this
    /// `TestApp` drops or by [`TestApp::stop_in_process`]) and wait as [`TestApp::start`] does.
    pub async fn start_in_process(&mut self, run: RunBridge) {
        assert!(self.daemon.is_none(), "already running");
        assert!(self.env.is_empty(), "`env` is for the daemon process: {:?}", self.env);
        self.release_stand_in().await;
        let polls = self.tg.calls("getUpdates");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let bridge = run(
            self.config_path(),
            Box::pin(async move {
                let _ = stopped.await;
            }),
        );
        self.daemon = Some(Daemon::InProcess {
            stop: Some(stop),
            task: tokio::spawn(bridge),
        });
        self.wait_started(polls).await;
    }

    /// Stop the in-process bridge and wait until it returned; panics if it failed.
    pub async fn stop_in_process(&mut self) {
        match self.daemon.take() {
            Some(Daemon::InProcess { mut stop, task }) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let result = tokio::time::timeout(Duration::from_secs(15), task)
                    .await
                    .expect("the in-process bridge did not stop in 15 s");
                if let Err(e) = result.expect("the in-process bridge panicked") {
                    panic!("the in-process bridge failed: {e}\n{}", self.log());
                }
            }
            other => {
                self.daemon = other;
                panic!("stop_in_process: no bridge runs in process");
            }
        }
    }

    /// Why the daemon is no longer running, if it is not.
    fn exited(&mut self) -> Option<String> {
        match self.daemon.as_mut()? {
            Daemon::Child(c) => c.try_wait().unwrap().map(|status| format!("exited with {status}")),
            Daemon::InProcess { task, .. } => task.is_finished().then(|| "returned".to_owned()),
        }
    }

    /// Wait until the bot is in the room and Telegram was polled after `polls` calls.
    async fn wait_started(&mut self, polls: usize) {
        let (room, bot) = (self.room.clone(), self.bot.clone());
        eventually("the daemon to start", Duration::from_secs(30), async || {
            if let Some(why) = self.exited() {
                panic!("daemon {why}:\n{}", self.log());
            }
            let joined = self.ezra.joined_members(&room).await.contains(&bot);
            let polled = self.tg.calls("getUpdates") > polls;
            if joined && polled {
                Ok(())
            } else {
                Err(format!(
                    "bot joined: {joined}, Telegram polled: {polled}\n{}",
                    self.log()
                ))
            }
        })
        .await
    }

    /// Start the daemon without waiting for anything.
    pub async fn launch(&mut self) {
        assert!(self.daemon.is_none(), "already running");
        self.release_stand_in().await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(tgmx_bin())
            .args(["run", "-c"])
            .arg(self.config_path())
            .env("TGMX_TELEGRAM_TOKEN", TG_TOKEN)
            .env("TGMX_PICKLE_KEY", "test-pickle-key")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon::Child(child));
    }

    /// The daemon's process id, while it runs as a process.
    pub fn pid(&self) -> Option<u32> {
        match &self.daemon {
            Some(Daemon::Child(c)) => Some(c.id()),
            _ => None,
        }
    }

    /// SIGKILL: a crash, nothing flushed. In process: the bridge is told to stop, not awaited.
    pub fn kill(&mut self) {
        match self.daemon.take() {
            Some(Daemon::Child(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Some(Daemon::InProcess { mut stop, .. }) => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            None => {}
        }
    }

    /// Wait until the daemon process ends by itself; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let Some(Daemon::Child(c)) = self.daemon.as_mut() else {
            panic!("the daemon does not run as a process");
        };
        let status = eventually("the daemon to exit", timeout, async || c.try_wait().unwrap()).await;
        self.daemon = None;
        status
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(Daemon::Child(mut c)) = self.daemon.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(15) {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The daemon's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Messages in the room sent by `sender`, oldest first, waiting for at least `n`.
    pub async fn wait_from(&self, sender: &str, n: usize) -> Vec<Value> {
        let sender = sender.to_owned();
        self.ezra
            .wait_messages(&self.room, n, Duration::from_secs(30), move |e| {
                e["sender"] == sender.as_str()
            })
            .await
    }

    /// For a check that something did NOT happen on the Telegram -> Matrix path: `from` posts a
    /// sentinel text in the chat, and this waits until it is in the room (returns its event).
    /// The bridge handles a chat's updates in order, so once the sentinel crossed, everything
    /// Telegram had before it was handled: what has not shown up by then will not.
    pub async fn sentinel_from_telegram(&self, from: &TgUser) -> Value {
        let text = format!("sentinel {}", NEXT_TXN.fetch_add(1, Ordering::SeqCst));
        self.tg.inject_text(self.chat, from, &text);
        let found = self
            .ezra
            .wait_messages(&self.room, 1, Duration::from_secs(60), |e| body(e) == text)
            .await;
        found[0].clone()
    }

    /// The same for the Matrix -> Telegram path: Ezra posts a sentinel text in the room, and this
    /// waits until Telegram got it (returns that message). The bridge handles a room's events in
    /// order, so everything the room had before it was handled.
    /// What the bot sent to the test's chat whose text contains `needle`, in order.
    pub fn sent_containing(&self, needle: &str) -> Vec<SentMessage> {
        self.tg
            .sent(self.chat)
            .into_iter()
            .filter(|s| s.text.contains(needle))
            .collect()
    }

    /// Wait until the bot sent a text containing `needle` to the test's chat; the newest one.
    pub async fn wait_sent_containing(&self, needle: &str) -> SentMessage {
        eventually(
            &format!("Telegram to get {needle:?}"),
            Duration::from_secs(60),
            async || {
                self.sent_containing(needle)
                    .pop()
                    .ok_or_else(|| format!("{:#?}", self.tg.sent(self.chat)))
            },
        )
        .await
    }

    /// The bridge bot's notices in the test room that contain `needle` (waited for: at least
    /// `n`).
    pub async fn bot_notices(&self, needle: &str, n: usize) -> Vec<Value> {
        let (bot, needle) = (self.bot.clone(), needle.to_owned());
        self.ezra
            .wait_messages(&self.room, n, Duration::from_secs(60), move |e| {
                e["sender"] == bot.as_str() && e["content"]["msgtype"] == "m.notice" && body(e).contains(&needle)
            })
            .await
    }

    pub async fn sentinel_from_matrix(&self) -> SentMessage {
        let text = format!("sentinel {}", NEXT_TXN.fetch_add(1, Ordering::SeqCst));
        self.ezra.send_text(&self.room, &text).await;
        let sent_text = format!("<b>Ezra</b>: {text}");
        let chat = self.chat;
        self.tg
            .wait_until("the sentinel to reach Telegram", Duration::from_secs(60), |tg| {
                tg.sent(chat).iter().any(|s| s.text == sent_text)
            })
            .await;
        self.tg
            .sent(chat)
            .into_iter()
            .find(|s| s.text == sent_text)
            .expect("just seen")
    }

    /// The ids of what the bot sent to the test's chat between two Matrix sentinels that
    /// crossed (so everything sent between them was handled), in order.
    pub fn sent_between(&self, after: &SentMessage, before: &SentMessage) -> Vec<i32> {
        self.tg
            .sent(self.chat)
            .iter()
            .map(|s| s.message_id)
            .filter(|m| *m > after.message_id && *m < before.message_id)
            .collect()
    }

    /// Everything the bot sent to the test's chat before `sentinel` (a Matrix sentinel that
    /// crossed: all sent before it was handled), in order.
    pub fn sent_before(&self, sentinel: &SentMessage) -> Vec<SentMessage> {
        self.tg
            .sent(self.chat)
            .into_iter()
            .take_while(|s| s.message_id != sentinel.message_id)
            .collect()
    }

    /// The daemon's `/ready` answer: (HTTP status, body).
    pub async fn ready(&self) -> (u16, Value) {
        // Status 0 while nothing listens yet.
        match http().get(format!("{}/ready", self.url())).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(_) => (0, Value::Null),
        }
    }

    /// Wait until `/ready` answers 200: the bot exists, every configured room is set up, and
    /// the database takes writes.
    pub async fn wait_ready(&self) {
        eventually("/ready to answer 200", Duration::from_secs(90), async || {
            match self.ready().await {
                (200, _) => Ok(()),
                (status, body) => Err(format!("/ready {status} {body}\n{}", self.log())),
            }
        })
        .await
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("tgmx.db")
    }
}

/// A small filesystem (a tmpfs mounted for one test; needs root) that the test fills and frees:
/// a disk that runs full under the daemon.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: PathBuf, size_mb: u32) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0700"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path }
    }

    /// Take every free byte.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join("filler"))
            .unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
    }

    /// Give the space back.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl Drop for TestApp {
    /// The daemon process is killed; an in-process bridge is told to stop (the test's runtime
    /// drops what is left of it).
    fn drop(&mut self) {
        self.kill();
    }
}

/// What Telegram got, with the repeats a SIGKILL may cause taken out: a Telegram send has no
/// idempotency key, so a message whose `sendMessage` returned just before a SIGKILL, before its
/// link was written, is sent again after the restart (the documented crash window, README "How it
/// works"). Each of `kills` may leave one message twice in a row; more repeats fail the test.
pub fn without_crash_repeats<'a>(sent: &[&'a str], kills: usize) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::with_capacity(sent.len());
    let mut repeats = 0;
    for text in sent {
        if out.last() == Some(text) {
            repeats += 1;
        } else {
            out.push(text);
        }
    }
    assert!(
        repeats <= kills,
        "{repeats} messages sent twice in a row, more than one per SIGKILL ({kills})"
    );
    out
}

pub fn body(ev: &Value) -> &str {
    ev["content"]["body"].as_str().unwrap_or_default()
}

/// A TCP proxy in front of the homeserver that a test can take down and bring back, to play
/// "homeserver unreachable" without stopping the shared homeserver.
pub struct Proxy {
    pub url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections refused while down.
    refused: std::sync::Arc<AtomicUsize>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let (d, c, r) = (down.clone(), conns.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy {
            url,
            down,
            refused,
            conns,
        }
    }

    /// How many connections were refused while down.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Refuse (close) every connection, and cut the open ones.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}
