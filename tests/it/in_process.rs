//! The bridge inside the test process (`tgmx::App`), for tests that neither kill nor restart the
//! daemon: what `tgmx run` does, minus the process. The harness runs it as a task of the test's
//! runtime and stops it when the `TestApp` drops (`TestApp::start_in_process`).
//!
//! What `tgmx run` does before `App::build` (src/main.rs), and how it is done here:
//! - the config file: loaded the same way (`Config::load`), and watched (`with_config_path`);
//! - the bot token, which the harness gives the process in `TGMX_TELEGRAM_TOKEN`: written into
//!   the config file instead (the environment is the whole test process's); `TestApp::write_config`
//!   drops it again, so an in-process test does not rewrite its config that way;
//! - logging: the daemon's filter (`logging.level`) and format, into the same `daemon.log`, for
//!   this test's thread only (a `#[tokio::test]` runs all its tasks on its own thread);
//! - the lock on `<database>.lock`: taken by `App::build` itself.

use std::cell::RefCell;
use std::path::PathBuf;

use crate::harness::{RunBridge, TG_TOKEN, TestApp};

thread_local! {
    /// This test thread's log subscriber, kept until the thread ends.
    static LOG: RefCell<Option<tracing::subscriber::DefaultGuard>> = const { RefCell::new(None) };
}

/// A bridge with one room <-> one chat, running in the test process, started and ready.
pub async fn spawn() -> TestApp {
    let mut app = TestApp::prepare().await;
    start(&mut app).await;
    app
}

/// Start `app`'s bridge in the test process and wait until it is up.
pub async fn start(app: &mut TestApp) {
    app.edit_config(|c| {
        c.replacen(
            "    enabled: true\n",
            &format!("    enabled: true\n    bot_token: \"{TG_TOKEN}\"\n"),
            1,
        )
    });
    log_to(app.log_path(), &app.config_path());
    app.start_in_process(run()).await;
}

fn run() -> RunBridge {
    Box::new(|config: PathBuf, stop| {
        Box::pin(async move {
            let cfg = tgmx::Config::load(&config).map_err(|e| e.to_string())?;
            tracing::info!(config = %config.display(), "starting (in process)");
            let app = tgmx::App::build(cfg)
                .await
                .map_err(|e| format!("cannot start: {e}"))?
                .with_config_path(config);
            app.run_until_stopped(stop).await.map_err(|e| e.to_string())
        })
    })
}

/// Log what this thread's tasks do as the daemon would, into `file`.
fn log_to(file: PathBuf, config: &std::path::Path) {
    let level = tgmx::Config::load(config)
        .map(|c| c.logging.level)
        .unwrap_or_else(|e| panic!("config of the in-process bridge: {e}"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(out))
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    LOG.with(|l| *l.borrow_mut() = Some(guard));
}
