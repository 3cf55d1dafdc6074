use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use tgmx::cli::{Cli, Command};
use tgmx::config::{Config, Registration, EMBEDDED_DEFAULT};

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::parse(EMBEDDED_DEFAULT, Path::new("."))?,
    })
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = load(config.as_ref())?;
            init_tracing(&cfg.logging.level);
            let app = tgmx::App::build(cfg).await.context("cannot start")?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::GenerateRegistration { config, output, force } => {
            let cfg = load(config.as_ref())?;
            let out = output.unwrap_or_else(|| cfg.appservice.registration.clone());
            if out.exists() && !force {
                bail!("{} exists; pass --force to replace it (the homeserver must then load the new one)", out.display());
            }
            let reg = Registration::generate(&cfg);
            write_private(&out, &reg.to_yaml())?;
            println!("wrote {} (appservice id {:?}, url {})", out.display(), reg.id, reg.url.as_deref().unwrap_or("-"));
        }
        Command::CheckConfig { config } => {
            let cfg = load(config.as_ref())?;
            println!("config ok: homeserver {} ({}), {} room(s), {} identity mapping(s), primary {:?}",
                cfg.homeserver.url, cfg.homeserver.server_name, cfg.rooms.len(), cfg.identities.len(), cfg.gateway.primary_platform);
        }
    }
    Ok(())
}

/// Write a file readable only by its owner (it holds tokens).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
