//! Two daemons of one [`TestApp`] on one PostgreSQL database: an active/standby pair with a
//! lease (README "PostgreSQL"). Each instance is a `tgmx run` child process with a config of its
//! own (another `appservice.listen` port, `instance:`, its own `encryption.store_dir`) and a log
//! of its own; the homeserver's registration for the slot points at `app.port`, where a
//! [`FailoverProxy`] forwards each new connection to the first instance that accepts it (so after
//! the first one is killed everything goes to the second: both are legal targets, the inbox is
//! shared).
//!
//! ```ignore
//! let mut app = TestApp::prepare().await;
//! app.use_postgres();
//! let mut pair = Pair::new(&mut app, "A", "B").await;
//! pair.a.launch();
//! pair.a.wait_log("lease taken").await;
//! pair.b.launch();
//! pair.b.wait_log("standby: waiting for the lease").await;
//! ```
//!
//! The app's own single-instance API is unchanged; its daemon is not used here (instance A's log
//! is the app's `daemon.log`, so `app.log()` and `app.wait_log` read A's).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TG_TOKEN, TestApp, eventually, free_port, http, tgmx_bin};

/// One `tgmx run` process of a pair.
pub struct Instance {
    /// The `instance:` of its config.
    pub name: String,
    /// Its `appservice.listen` port (127.0.0.1).
    pub port: u16,
    pub config: PathBuf,
    pub log_path: PathBuf,
    /// More environment for the process (e.g. `TGMX_FAILPOINTS`), as `TestApp::env`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Instance {
    /// Start `tgmx run` without waiting for anything (output appended to its log).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "instance {} already runs", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(tgmx_bin())
            .args(["run", "-c"])
            .arg(&self.config)
            .env("TGMX_TELEGRAM_TOKEN", TG_TOKEN)
            .env("TGMX_PICKLE_KEY", "test-pickle-key")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (a crash: nothing flushed, its connections cut) and reap it. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for it to exit (SIGKILL after 15 s); its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let start = Instant::now();
        while c.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.wait().ok()
    }

    /// Its exit status if it ended by itself (then it is no longer tracked), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Whether its process runs (started and not ended).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Wait until the process ends by itself; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        let Some(c) = self.child.as_mut() else {
            panic!("instance {name} does not run");
        };
        let status = eventually(&format!("instance {name} to exit"), timeout, async || {
            c.try_wait().unwrap()
        })
        .await;
        self.child = None;
        status
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait (30 s) until its log contains `needle`; panics early, with the log, if the process
    /// ended first.
    pub async fn wait_log(&mut self, needle: &str) {
        self.wait_log_for(needle, Duration::from_secs(30)).await
    }

    /// [`Instance::wait_log`] with a timeout of the caller's.
    pub async fn wait_log_for(&mut self, needle: &str, timeout: Duration) {
        let what = format!("instance {}'s log to say {needle:?}", self.name);
        eventually(&what, timeout, async || {
            let log = self.log();
            if log.contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                panic!("instance {} {status} before its log said {needle:?}:\n{log}", self.name);
            }
            Err(format!("the log:\n{log}"))
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /health`: the HTTP status (0 while nothing listens).
    pub async fn health(&self) -> u16 {
        match http().get(format!("{}/health", self.url())).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// `GET /ready`: (HTTP status, body); status 0 while nothing listens.
    pub async fn ready(&self) -> (u16, Value) {
        match http().get(format!("{}/ready", self.url())).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(_) => (0, Value::Null),
        }
    }

    /// Wait until `/ready` answers `status` (e.g. 503 for a standby, 200 once active).
    pub async fn wait_ready_status(&mut self, status: u16, timeout: Duration) -> Value {
        let what = format!("instance {}'s /ready to answer {status}", self.name);
        eventually(&what, timeout, async || {
            if let Some(s) = self.exited() {
                panic!("instance {} {s}:\n{}", self.name, self.log());
            }
            match self.ready().await {
                (s, body) if s == status => Ok(body),
                (s, body) => Err(format!("/ready {s} {body}")),
            }
        })
        .await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy on a fixed port that forwards each new connection to the first of its targets
/// that accepts it, in order (a connection refused by every target is retried for 10 s before it
/// is dropped, so a homeserver's push is not refused while an instance is starting). Open
/// connections are not moved: they end with the target that served them.
pub struct FailoverProxy {
    pub port: u16,
    /// How many connections each target got, in the order of the targets.
    served: Arc<Vec<AtomicUsize>>,
    task: tokio::task::JoinHandle<()>,
}

impl FailoverProxy {
    /// Listen on 127.0.0.1:`port` (free: bound for up to 10 s while it is not yet).
    pub async fn start(port: u16, targets: Vec<u16>) -> FailoverProxy {
        let listener = eventually(
            &format!("port {port} to be free for the failover proxy"),
            Duration::from_secs(10),
            async || {
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        let served: Arc<Vec<AtomicUsize>> = Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (targets, counts) = (targets.clone(), counts.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    loop {
                        for (i, target) in targets.iter().enumerate() {
                            if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", *target)).await {
                                counts[i].fetch_add(1, Ordering::SeqCst);
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                                return;
                            }
                        }
                        if start.elapsed() > Duration::from_secs(10) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            }
        });
        FailoverProxy { port, served, task }
    }

    /// How many connections target `i` (in the order given to [`FailoverProxy::start`]) got.
    pub fn served(&self, i: usize) -> usize {
        self.served[i].load(Ordering::SeqCst)
    }
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Two instances of one app on its PostgreSQL database, behind a [`FailoverProxy`] on the app's
/// registered port (A first, then B). Nothing runs until the test launches an instance.
pub struct Pair {
    pub a: Instance,
    pub b: Instance,
    pub proxy: FailoverProxy,
    /// The app's PostgreSQL database (for [`Pair::lease_holder`]).
    database: String,
}

impl Pair {
    /// Make the pair for `app` (on PostgreSQL already: `app.use_postgres()`; its config as the
    /// test wants it, since both configs are made from it now). Instance `a` uses the app's
    /// config file (rewritten: its own listen port, `instance: a`, `encryption.store_dir:
    /// tgmx-crypto-a`) and the app's `daemon.log`; `b` a copy of it, `config-b.yaml`, with its own
    /// port, name and store, logging to `daemon-b.log`. The Conduit stand-in is released and the
    /// proxy takes the app's port. The app's `env` is given to both.
    pub async fn new(app: &mut TestApp, a: &str, b: &str) -> Pair {
        assert!(
            app.database.starts_with("postgres"),
            "an active/standby pair needs PostgreSQL: call app.use_postgres() first"
        );
        assert!(app.pid().is_none(), "the app's own daemon runs: a pair replaces it");
        app.release_stand_in().await;
        let registered = app.port;
        let base = std::fs::read_to_string(app.config_path()).unwrap();
        let listen = format!("listen: \"127.0.0.1:{registered}\"");
        assert!(base.contains(&listen), "no `{listen}` in the app's config:\n{base}");
        let make = |name: &str, config: PathBuf, log_path: PathBuf| {
            let port = free_port();
            let text = instance_config(&base, &listen, name, port);
            std::fs::write(&config, text).unwrap();
            Instance {
                name: name.to_owned(),
                port,
                config,
                log_path,
                env: app.env.clone(),
                child: None,
            }
        };
        let a = make(a, app.config_path(), app.log_path());
        let b = make(
            b,
            app.dir.join(format!("config-{b}.yaml")),
            app.dir.join(format!("daemon-{b}.log")),
        );
        let proxy = FailoverProxy::start(registered, vec![a.port, b.port]).await;
        Pair {
            a,
            b,
            proxy,
            database: app.database.clone(),
        }
    }

    /// The `application_name` of the connection that holds an advisory lock in the app's
    /// database (the lease), if one does.
    pub fn lease_holder(&self) -> Option<String> {
        let out = Command::new("psql")
            .arg(&self.database)
            .args(["-tA", "-c"])
            .arg(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// Terminate the backends of this app's database whose `application_name` starts with
    /// `tgmx <name> lease` (that instance's lease connection); how many were terminated. Only this
    /// database's: other tests' pairs on the same cluster use the same instance names.
    pub fn terminate_lease_connection(&self, name: &str) -> usize {
        let out = Command::new("psql")
            .arg(&self.database)
            .args(["-tA", "-c"])
            .arg(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name LIKE 'tgmx {name} lease%'"
            ))
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim() == "t")
            .count()
    }
}

/// An instance's config: the app's, listening on `port`, named `name`, with its own crypto
/// store directory (relative to the config file, so beside the app's).
fn instance_config(base: &str, listen: &str, name: &str, port: u16) -> String {
    let mut text = base.replacen(listen, &format!("listen: \"127.0.0.1:{port}\""), 1);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("instance:") || l.starts_with("encryption:")),
        "the app's config already has `instance:` or `encryption:`; Pair writes them:\n{text}"
    );
    text.push_str(&format!(
        "instance: \"{name}\"\nencryption: {{store_dir: \"tgmx-crypto-{name}\"}}\n"
    ));
    text
}
