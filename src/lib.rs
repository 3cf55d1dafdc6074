//! tgmx: a Telegram <-> Matrix bridge (Matrix appservice) built for moving a team's command
//! channel from Telegram to Matrix without losing a message.
//!
//! # Layout
//!
//! - [`config`]: the operator's YAML config and the appservice registration, validated on load.
//! - [`config_edit`]: layout-preserving edits of the config file (`tgmx primary`).
//! - [`storage`]: SQLite (sqlx, `migrations/`): portals, puppets, message map, inboxes, offset.
//! - [`matrix`]: the appservice HTTP API (axum), a client-server client, HTML conversion, and
//!   `crypto`: one matrix-sdk device per acting user for encrypted rooms (cargo feature `e2ee`,
//!   on by default; without it a stand-in refuses encrypted rooms).
//! - [`telegram`]: long polling into the durable inbox (updates stored as sent), lenient reading
//!   of stored updates (`telegram::update`), entity conversion, pacing.
//! - [`bridge`]: the core that decides: portals, puppets, echo suppression, id mapping,
//!   `lanes` (one ordered worker per portal in each direction, and the supervisor that restarts
//!   a crashed task), and `catch_up` (events the homeserver skipped).
//! - [`metrics`]: Prometheus counters served at `/metrics`.
//! - [`ops`]: `bootstrap` and `rollcall`, run as the bridge bot.
//! - [`app`]: `App::build(config)` / `port()` / `run_until_stopped(shutdown)`.
//! - [`check`]: the readiness check (`tgmx check`).
//! - [`cli`]: the command line.
//! - [`failpoint`]: named places tests can make fail once (`TGMX_FAILPOINTS`).
//!
//! # Delivery guarantees
//!
//! Inbound work is persisted before it is acknowledged (appservice transactions before the 200,
//! Telegram updates before their offset is confirmed). Matrix sends use transaction ids derived
//! from Telegram ids, so a retry cannot double-post. A Telegram send has no idempotency key: an
//! intent row is written before each post; one found on a retry (a crash mid-send, a lost answer)
//! means the post may have happened, and it is posted again and recorded for `tgmx audit`. A
//! storage fault stops intake until writes work again (`storage::Store::write_fault`). Synapse can skip an appservice transaction after
//! a failed delivery; `bridge::catch_up` finds such events in the timeline and bridges them in
//! their place, once.

// matrix-sdk sync futures are deep; proving them Send needs more than the default 128.
#![recursion_limit = "256"]

pub mod app;
pub mod bridge;
pub mod check;
pub mod cli;
pub mod config;
pub mod config_edit;
pub mod error;
pub mod failpoint;
pub mod matrix;
pub mod metrics;
pub mod ops;
pub mod report;
pub mod storage;
pub mod telegram;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};
