use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use tgmx::cli::{Cli, Command};
use tgmx::config::{Config, EMBEDDED_DEFAULT, Registration};

/// The config file every command uses: `-c` (or `TGMX_CONFIG`), else `./config.yaml` when there
/// is one, else none (the built-in default, config.example.yaml, with paths relative to the
/// current directory).
fn config_path(arg: Option<&PathBuf>) -> Option<PathBuf> {
    arg.cloned()
        .or_else(|| Path::new("config.yaml").is_file().then(|| PathBuf::from("config.yaml")))
}

fn load(arg: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match config_path(arg) {
        Some(p) => Config::load(&p)?,
        None => Config::parse(EMBEDDED_DEFAULT, Path::new("."))?,
    })
}

/// Which config a command used, for its first line.
fn config_name(arg: Option<&PathBuf>) -> String {
    match config_path(arg) {
        Some(p) => p.display().to_string(),
        None => "the built-in default (no -c, no ./config.yaml)".to_owned(),
    }
}

/// The database of a command that reads the bridge's state, which it never creates: an empty
/// database made on the spot would report "nothing lost" about a bridge it never saw.
async fn open_state(cfg: &Config, arg: Option<&PathBuf>) -> anyhow::Result<tgmx::storage::Store> {
    let shown = database_name(&cfg.database)?;
    println!("config: {}; database: {shown}", config_name(arg));
    match tgmx::storage::Store::open_existing(&cfg.database).await? {
        Some(store) => Ok(store),
        None => bail!(
            "no database at {shown} (config: {}): this command reads the bridge's state and does \
             not create it; pass the daemon's config with -c",
            config_name(arg)
        ),
    }
}

/// How a database is named to the operator: an SQLite file's path, a PostgreSQL URL without
/// its password.
fn database_name(url: &str) -> anyhow::Result<String> {
    Ok(match tgmx::storage::Backend::of(url) {
        Some(tgmx::storage::Backend::Postgres) => tgmx::storage::redacted(url),
        _ => tgmx::storage::database_file(url)?.display().to_string(),
    })
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // No colour codes in a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A failure is reported as one message, `error: ...`, and a non-zero exit status. Errors are
/// the user's to fix (a config key, a missing file), not panics: no backtrace, whatever
/// `RUST_BACKTRACE` says (anyhow's `{:?}` would print the one it captured).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match dispatch().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = load(config.as_ref())?;
            init_tracing(&cfg.logging.level);
            tracing::info!(config = %config_name(config.as_ref()), "starting");
            let mut app = tgmx::App::build(cfg).await.context("cannot start")?;
            if let Some(path) = config_path(config.as_ref()) {
                app = app.with_config_path(path);
            }
            match app.run_until_stopped(shutdown_signal()).await {
                // Another instance may be bridging already: exit now, leaving nothing running
                // (a task still sending would be a second sender).
                Err(e @ tgmx::error::Error::LeaseLost(_)) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
                r => r?,
            }
        }
        Command::GenerateRegistration { config, output, force } => {
            let cfg = load(config.as_ref())?;
            let out = output.unwrap_or_else(|| cfg.appservice.registration.clone());
            if out.exists() && !force {
                bail!(
                    "{} exists; pass --force to replace it (the homeserver must then load the new one)",
                    out.display()
                );
            }
            let reg = Registration::generate(&cfg);
            write_private(&out, &reg.to_yaml())?;
            println!(
                "wrote {} (appservice id {:?}, url {})",
                out.display(),
                reg.id,
                reg.url.as_deref().unwrap_or("-")
            );
        }
        Command::Primary {
            platform,
            standby,
            config,
        } => {
            let Some(config) = config_path(config.as_ref()) else {
                bail!("`primary` edits the config file, and there is no ./config.yaml here: pass -c FILE");
            };
            primary(&platform, standby, &config).await?
        }
        Command::Audit { since, config } => {
            let cfg = load(config.as_ref())?;
            let store = open_state(&cfg, config.as_ref()).await?;
            let since_ms = tgmx::storage::now_ms() - since.as_millis() as i64;
            let report = tgmx::report::audit(&cfg, &store, since_ms, daemon_running(&store).await?).await?;
            println!("{}", report.text(tgmx::report::Verdict::NothingLost));
            if !report.ok() {
                std::process::exit(1);
            }
        }
        Command::Bootstrap { dry_run, config } => {
            let cfg = load(config.as_ref())?;
            let reg = Registration::load(&cfg.appservice.registration)?;
            let mx = tgmx::matrix::client::MatrixClient::new(&cfg.homeserver.url, &reg.as_token)
                .acting_as(cfg.bot_user_id());
            let store = tgmx::storage::Store::open(&cfg.database).await?;
            let plan = tgmx::ops::bootstrap(&cfg, &mx, &store, dry_run).await?;
            for step in &plan {
                println!("{step}");
            }
            if plan.is_empty() {
                println!("nothing to do: every room exists, is linked and has its people");
            }
        }
        Command::Rollcall { room, timeout, config } => {
            let cfg = load(config.as_ref())?;
            let reg = Registration::load(&cfg.appservice.registration)?;
            let mx = tgmx::matrix::client::MatrixClient::new(&cfg.homeserver.url, &reg.as_token)
                .acting_as(cfg.bot_user_id());
            let Some(room) = room.or_else(|| cfg.rooms.first().map(|r| r.matrix.to_string())) else {
                bail!("no room configured; pass --room");
            };
            let store = tgmx::storage::Store::open(&cfg.database).await?;
            let reader = tgmx::matrix::device::TimelineReader::new(mx.clone(), store, cfg.bot_user_id());
            let answers = tgmx::ops::rollcall(&cfg, &mx, &reader, &room, timeout).await?;
            let missing = answers.iter().filter(|(_, t)| t.is_none()).count();
            for (agent, t) in &answers {
                match t {
                    Some(s) => println!("ok   {agent} answered in {s:.1} s"),
                    None => println!("FAIL {agent} did not answer within {} s", timeout.as_secs()),
                }
            }
            println!("{} of {} agents answered", answers.len() - missing, answers.len());
            if missing > 0 {
                std::process::exit(1);
            }
        }
        Command::Check { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL config valid — {e}");
                    std::process::exit(1);
                }
            };
            // Never creates the database: before the first start there is none.
            let (store, db_line) = match tgmx::storage::Store::open_existing(&cfg.database).await {
                Ok(store) => {
                    let what = match &store {
                        Some(s) => s.version().await.map_err(anyhow::Error::from),
                        None => Ok("no tables yet: created on the first start".to_owned()),
                    };
                    (store, what)
                }
                Err(e) => (None, Err(e.into())),
            };
            let running = match &store {
                Some(s) => daemon_running(s).await?,
                None => false,
            };
            let backend = tgmx::storage::Backend::of(&cfg.database).map_or("?", tgmx::storage::Backend::name);
            let shown = database_name(&cfg.database)?;
            let db_ok = db_line.is_ok();
            match db_line {
                Ok(version) => println!("ok   database: {backend} at {shown} ({version})"),
                Err(e) => println!("FAIL database: {backend} at {shown} — cannot open it: {e:#}"),
            }
            let lines = tgmx::check::run(&cfg, running).await;
            for l in &lines {
                if l.ok {
                    println!("ok   {}", l.what);
                } else {
                    println!("FAIL {} — {}", l.what, l.hint);
                }
            }
            if !db_ok || lines.iter().any(|l| !l.ok) {
                std::process::exit(1);
            }
        }
        Command::Backup { path, config } => {
            let cfg = load(config.as_ref())?;
            // Not `exists()`: that follows a dangling symlink and says no.
            if path.symlink_metadata().is_ok() {
                bail!("{} exists; choose a new file", path.display());
            }
            let store = open_state(&cfg, config.as_ref()).await?;
            if store.backend() == tgmx::storage::Backend::Postgres {
                println!(
                    "the database is PostgreSQL: back it up with pg_dump (not run here), as the database's \
                     owner, with the password in PGPASSWORD or ~/.pgpass:\n  {}\nrestore with pg_restore \
                     --dbname=<an empty database> {}",
                    tgmx::storage::pg_dump_command(&cfg.database, &path),
                    path.display()
                );
            } else {
                store.backup(&path).await?;
                println!("database copied to {}", path.display());
            }
            // The devices' crypto stores (keys of encrypted rooms) go beside it.
            let crypto = cfg.crypto_dir();
            let target = path.with_extension("crypto");
            let n = tgmx::matrix::crypto::backup_dir(&crypto, &target).await?;
            if n > 0 {
                println!("{n} crypto store(s) copied to {}", target.display());
            }
        }
        Command::Status { config } => {
            let cfg = load(config.as_ref())?;
            let store = open_state(&cfg, config.as_ref()).await?;
            let report = tgmx::report::status(&cfg, &store, daemon_running(&store).await?).await?;
            println!("{}", report.text(tgmx::report::Verdict::Ready));
        }
        Command::MigrateDb { from, to } => {
            let counts = tgmx::storage::copy::migrate(&from, &to).await?;
            for (table, n) in &counts {
                println!("{table:<18} {n:>8} rows");
            }
            println!(
                "copied {} rows in {} tables from {} to {}",
                counts.iter().map(|(_, n)| n).sum::<u64>(),
                counts.len(),
                database_name(&from)?,
                tgmx::storage::redacted(&to)
            );
            let crypto = tgmx::matrix::crypto::dir_for(&from);
            if crypto.is_dir() {
                println!(
                    "the crypto stores (encrypted rooms) stay in {}: set `encryption.store_dir: {}` in the \
                     config (or move the directory to tgmx-crypto/ beside the config file)",
                    crypto.display(),
                    crypto.display()
                );
            }
            println!("now set `database:` (or TGMX_DATABASE_URL) to the new database and start the daemon");
        }
        Command::CheckConfig { config } => {
            // Also what `run` needs before it starts: the bot token, the registration.
            let (cfg, registration) = Config::check_for_run(config.as_deref())?;
            for line in cfg.effective_settings() {
                println!("{line}");
            }
            println!("{}", registration.summary());
            println!("config ok");
        }
    }
    Ok(())
}

/// Whether the daemon that uses this database is running: on PostgreSQL, an active instance
/// said it was alive lately (it may run on another host); on SQLite, its recorded pid is a tgmx
/// process.
async fn daemon_running(store: &tgmx::storage::Store) -> anyhow::Result<bool> {
    use tgmx::storage::{Backend, Store};
    if store.backend() == Backend::Postgres {
        let now = tgmx::storage::now_ms();
        return Ok(store
            .instances()
            .await?
            .iter()
            .any(|i| i.role == "active" && now - i.seen_at <= 3 * Store::HEARTBEAT_MS));
    }
    Ok(store
        .get_kv("daemon_pid")
        .await?
        .and_then(|p| p.parse().ok())
        .is_some_and(is_tgmx_process))
}

/// `tgmx primary`: edit the config file in place (validated first; the same edit as the
/// management room's `!tgmx primary`), then SIGHUP the daemon.
async fn primary(platform: &str, standby: bool, path: &Path) -> anyhow::Result<()> {
    let switch = tgmx::config_edit::set_primary(path, platform, standby)?;
    let cfg = switch.config;
    let mode = tgmx::bridge::cutover::Mode::of(&cfg);
    println!(
        "{}: primary_platform {}, fallback_platform {} (mode {})",
        path.display(),
        switch.primary,
        switch.fallback,
        mode.as_str()
    );
    let store = tgmx::storage::Store::open(&cfg.database).await?;
    match store.get_kv("daemon_pid").await?.and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) if pid > 0 && is_tgmx_process(pid) => {
            // SAFETY: plain kill(2) on a pid; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            println!("signalled the running daemon (pid {pid}) to reload");
        }
        _ if daemon_running(&store).await? => {
            // PostgreSQL: the active instance of a pair runs on another host, with its own file.
            let active = store.instances().await?.into_iter().find(|i| i.role == "active");
            println!(
                "the active instance ({}) runs on another host and reads its own config file: make the same \
                 change there (keep the instances' files alike; this host's daemon, if any, reads this file)",
                active.map_or_else(|| "?".to_owned(), |i| i.name)
            );
        }
        _ => println!("no running daemon found; the change applies when it starts (it also watches the file)"),
    }
    Ok(())
}

/// Whether `pid` is a live tgmx process (a stale pid may belong to something else by now).
fn is_tgmx_process(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|argv0| String::from_utf8_lossy(argv0).contains("tgmx")),
        // With procfs the process is gone; without it, fall back to "the pid exists".
        Err(_) if std::path::Path::new("/proc/self").exists() => false,
        // SAFETY: kill(2) with signal 0 only checks for existence.
        Err(_) => (unsafe { libc::kill(pid, 0) }) == 0,
    }
}

/// Write a file readable only by its owner (it holds tokens).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only to a new file: an existing one (`--force`) is made private too.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
