//! Command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tgmx",
    version,
    about = "Telegram <-> Matrix bridge for moving a command channel from Telegram to Matrix"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge daemon.
    Run {
        /// Config file. Without it the embedded default (config.example.yaml) is used, with paths
        /// relative to the current directory.
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write the appservice registration (fresh as_token and hs_token) for the homeserver.
    GenerateRegistration {
        /// Config file (embedded default if omitted).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
        /// Where to write it; default: `appservice.registration` from the config.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite an existing registration (the homeserver must then be given the new one).
        #[arg(long)]
        force: bool,
    },
    /// Switch the primary surface: rewrites `gateway.primary_platform` (and the fallback) in the
    /// config file, keeping its comments and layout, then signals the running daemon (SIGHUP).
    Primary {
        /// `matrix` (cutover) or `telegram` (parallel run / rollback).
        #[arg(value_parser = ["matrix", "telegram"])]
        platform: String,
        /// With `matrix`: put Telegram in standby (fallback `none`: the bot stops reading it).
        #[arg(long)]
        standby: bool,
        #[arg(short, long, env = "TGMX_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// List every message that was not delivered (with the reason), per-direction counts and
    /// p50/p99 bridge latency; exits non-zero when anything was lost or is stuck.
    Audit {
        /// Window to look at: e.g. `24h`, `90m`, `7d`.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        since: std::time::Duration,
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the configured rooms that are missing (alias, name, topic, encryption, operator as
    /// admin, agents invited) and link them to their chats. Running it twice changes nothing.
    Bootstrap {
        /// Print what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Post "Acknowledge, fleet." and report which agents answered, and how fast.
    Rollcall {
        /// Room (alias or id); default: the first configured room.
        #[arg(long)]
        room: Option<String>,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Readiness check: one line per condition (ok / FAIL with a hint); non-zero exit on a FAIL.
    Check {
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy the database to `path` while the daemon runs (SQLite `VACUUM INTO`).
    Backup {
        path: PathBuf,
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The cutover checklist: mode and switch history, per-room counts (24 h), latency,
    /// undelivered messages, last message per agent, and a "ready for cutover" verdict.
    Status {
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the config file and print the effective settings (no secrets).
    CheckConfig {
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit, like 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// The value at quantile `q` (0..=1) of sorted `v`.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[idx.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_quantiles() {
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5_400);
        assert!(parse_duration("1y").is_err());
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(51));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
