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
        /// Config file (default: ./config.yaml if there is one, else the embedded default,
        /// config.example.yaml, with paths relative to the current directory).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write the appservice registration (fresh as_token and hs_token) for the homeserver.
    GenerateRegistration {
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
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
        /// Config file to edit (default: ./config.yaml).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List every message that was not delivered (with the reason), per-direction counts and
    /// p50/p99 bridge latency; exits non-zero when anything was lost or is stuck.
    Audit {
        /// Window to look at, with its unit (s, m, h or d): e.g. `24h`, `90m`, `7d`.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        since: std::time::Duration,
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the configured rooms that are missing (alias, name, topic, encryption, operator as
    /// admin, agents invited) and link them to their chats. Running it twice changes nothing.
    Bootstrap {
        /// Print what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Post "Acknowledge, fleet." and report which agents answered, and how fast.
    Rollcall {
        /// Room (alias or id); default: the first configured room.
        #[arg(long)]
        room: Option<String>,
        /// How long to wait for answers, with its unit (e.g. `60s`, `5m`).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Readiness check: one line per condition (ok / FAIL with a hint); non-zero exit on a FAIL.
    Check {
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy the database to `path` while the daemon runs (SQLite `VACUUM INTO`; for PostgreSQL it
    /// prints the `pg_dump` command to run instead).
    Backup {
        /// The new file to write (must not exist); crypto stores go beside it as `<path>.crypto`.
        path: PathBuf,
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The cutover checklist: mode and switch history, per-room counts (24 h), latency,
    /// undelivered messages, last message per agent, and a "ready for cutover" verdict.
    Status {
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy a bridge's whole state (portals, puppets, message map, inboxes, offsets, mode history,
    /// audit rows, rollcalls...) from an SQLite database into a new, empty PostgreSQL database,
    /// with the daemon stopped. Prints the rows copied per table.
    MigrateDb {
        /// The database to copy: `sqlite://path/to/tgmx.db`.
        #[arg(long)]
        from: String,
        /// The database to fill: `postgres://user:password@host/dbname` (it must exist and hold
        /// no tgmx data; its tables are created).
        #[arg(long)]
        to: String,
    },
    /// Validate the config file, check what `run` needs before it starts (the bot token while
    /// Telegram is enabled, the registration file, the database's directory), and print the
    /// effective settings, one line per group (no secrets). Errors name the key and its line.
    CheckConfig {
        /// Config file (default: ./config.yaml if there is one, else the embedded default).
        #[arg(short, long, env = "TGMX_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `90s`, `15m`, `24h`, `7d`: a whole number and its unit, which is required (a bare `24` was
/// once taken as hours, silently). clap puts the option's name before the message.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let like = || format!("{s:?}: expected a whole number and a unit (s, m, h or d), like 24h");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| like())?;
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("{s:?} has no unit: write {n}s, {n}m, {n}h or {n}d")),
        _ => return Err(like()),
    };
    n.checked_mul(seconds_per_unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
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
        assert!(parse_duration("-1h").is_err());
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(51));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
    }

    /// `--since 24` was taken as 24 hours without a word; a unit is now required, and the error
    /// names `--since`.
    #[test]
    fn since_needs_a_unit() {
        use clap::Parser;
        let since = |arg: &str| match Cli::try_parse_from(["tgmx", "audit", "--since", arg]) {
            Ok(Cli {
                command: Command::Audit { since, .. },
            }) => Ok(since.as_secs()),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(since("24h"), Ok(86_400));
        assert_eq!(since("90m"), Ok(5_400));
        assert_eq!(since("30s"), Ok(30));
        assert_eq!(since("2d"), Ok(172_800));
        let e = since("24").unwrap_err();
        assert!(e.contains("--since"), "{e}");
        assert!(e.contains("has no unit: write 24s, 24m, 24h or 24d"), "{e}");
        let too_long = ["99999999999999999999d", "999999999999999999d"];
        for bad in ["", "h", "24 h", "1.5h", "24y", too_long[0], too_long[1]] {
            let e = since(bad).unwrap_err();
            assert!(e.contains("--since"), "{bad:?}: {e}");
        }
        // The default needs no argument, and it is a day.
        match Cli::try_parse_from(["tgmx", "audit"]).unwrap().command {
            Command::Audit { since, .. } => assert_eq!(since.as_secs(), 86_400),
            other => panic!("parsed as {other:?}"),
        }
        // `rollcall --timeout` reads durations the same way.
        let e = Cli::try_parse_from(["tgmx", "rollcall", "--timeout", "60"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--timeout") && e.contains("has no unit"), "{e}");
    }
}
