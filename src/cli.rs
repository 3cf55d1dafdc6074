//! Command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tgmx", version, about = "Telegram <-> Matrix bridge for moving a command channel from Telegram to Matrix")]
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
    /// Show the current mode and the history of switches.
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
