//! Test harness: one real Synapse per test process (started on first use, stopped when the
//! process exits), with a pool of appservice slots registered up front; each test takes a fresh
//! slot, its own fake Telegram Bot API, its own rooms and its own database, and runs the real
//! `tgmx` binary as a child process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_telegram::FakeTelegram;

/// Appservice registrations made before Synapse starts; one per `TestApp`.
const SLOTS: usize = 40;
pub const TG_TOKEN: &str = "123456:TEST-token-ABCdef_0123456789";

pub struct Synapse {
    pub url: String,
    slots: Vec<Slot>,
}

#[derive(Clone)]
struct Slot {
    dir: PathBuf,
    port: u16,
}

static SYNAPSE: OnceLock<Synapse> = OnceLock::new();
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The daemon under test: this build's, or `TGMX_BIN` (the bench compares builds with it).
pub fn tgmx_bin() -> String {
    std::env::var("TGMX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tgmx").to_owned())
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

impl Synapse {
    pub fn get() -> &'static Synapse {
        SYNAPSE.get_or_init(Synapse::start)
    }

    fn start() -> Synapse {
        let root = repo()
            .join("target")
            .join("it")
            .join(format!("run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let rig = root.join("synapse");
        std::fs::create_dir_all(rig.join("appservices")).unwrap();
        let hs_port = free_port();
        let url = format!("http://127.0.0.1:{hs_port}");
        let mut slots = Vec::new();
        for i in 0..SLOTS {
            let dir = root.join(format!("slot{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            std::fs::write(
                dir.join("config.yaml"),
                slot_config(i, port, &url, "http://127.0.0.1:1", &[], ""),
            )
            .unwrap();
            // The daemon's own generator writes the registration the homeserver loads.
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
            std::fs::copy(
                dir.join("registration.yaml"),
                rig.join("appservices").join(format!("slot{i}.yaml")),
            )
            .unwrap();
            slots.push(Slot { dir, port });
        }
        let out = Command::new("bash")
            .arg(repo().join("tests/rig/synapse.sh"))
            .arg("start")
            .env("RIG_DIR", &rig)
            .env("HS_PORT", hs_port.to_string())
            .env("WATCH_PID", std::process::id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synapse did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Synapse { url, slots }
    }

    fn take_slot(&self) -> (usize, Slot) {
        let i = NEXT_SLOT.fetch_add(1, Ordering::SeqCst);
        assert!(
            i < SLOTS,
            "more TestApps than SLOTS ({SLOTS}); raise SLOTS in harness.rs"
        );
        (i, self.slots[i].clone())
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
    pub async fn register(localpart: &str, displayname: &str) -> MxUser {
        let hs = Synapse::get().url.clone();
        let c = http();
        let body = json!({"username": localpart, "password": "testpass-123", "auth": {"type": "m.login.dummy"}, "inhibit_login": false});
        let r = c
            .post(format!("{hs}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "register {localpart}: {v}");
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
        let v = self
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(json!({"preset": "private_chat", "invite": invite, "name": "test room"})),
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
        let v = self
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room)),
                None,
            )
            .await
            .unwrap();
        let mut evs: Vec<Value> = v["chunk"].as_array().unwrap().clone();
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
        let start = Instant::now();
        loop {
            let found: Vec<Value> = self.messages(room).await.into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                return found;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {n} matching messages in {room}; have {}: {found:#?}",
                    found.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn member_name(&self, room: &str, user: &str) -> Option<String> {
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
        .and_then(|v| v["displayname"].as_str().map(str::to_owned))
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
    /// Homeserver URL the daemon is configured with (Synapse, or a `Proxy` in front of it).
    pub hs_url: String,
    child: Option<Child>,
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
        let hs = Synapse::get();
        let (slot, s) = hs.take_slot();
        let tg = FakeTelegram::start(TG_TOKEN).await;
        let chat = -1_000_000_000_000 - slot as i64;
        tg.add_chat(chat, "fleet-ops");
        let bot = format!("@tg{slot}bot:localhost");
        let ezra = MxUser::register(&format!("ezra{slot}"), "Ezra").await;
        let alex = MxUser::register(&format!("op{slot}_alex"), "Alexander").await;
        let room = ezra.create_room(&[&bot, &alex.user_id]).await;
        alex.join(&room).await;
        let reg = std::fs::read_to_string(s.dir.join("registration.yaml")).unwrap();
        let hs_token = reg
            .lines()
            .find_map(|l| l.strip_prefix("hs_token: "))
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned();
        let hs_url = hs.url.clone();
        let app = TestApp {
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
            child: None,
        };
        app.write_config("");
        app
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn write_config(&self, gateway_extra: &str) {
        let cfg = slot_config(
            self.slot,
            self.port,
            &self.hs_url,
            &self.tg.api_url(),
            &[(self.room.clone(), self.chat)],
            gateway_extra,
        );
        std::fs::write(self.config_path(), cfg).unwrap();
    }

    /// Rewrite the config file through `f`.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), f(text)).unwrap();
    }

    /// Send SIGHUP to the daemon.
    pub fn hup(&self) {
        let pid = self.child.as_ref().expect("running").id();
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
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "log never said {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        assert!(self.child.is_none(), "already running");
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
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let polls = self.tg.calls("getUpdates");
        let start = Instant::now();
        loop {
            let joined = self.ezra.joined_members(&self.room).await.contains(&self.bot);
            if joined && self.tg.calls("getUpdates") > polls {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon not ready in 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's process id, while it runs.
    #[allow(dead_code)] // used by the benchmark
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
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

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("tgmx.db")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn body(ev: &Value) -> &str {
    ev["content"]["body"].as_str().unwrap_or_default()
}

/// A TCP proxy in front of the homeserver that a test can take down and bring back, to play
/// "homeserver unreachable" without stopping the shared Synapse.
pub struct Proxy {
    pub url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
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
        Proxy { url, down, conns }
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
