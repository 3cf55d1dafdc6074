//! tgmx: a Telegram <-> Matrix bridge (Matrix appservice) built for moving a team's command
//! channel from Telegram to Matrix without losing a message.
//!
//! # Layout
//!
//! The arrows point one way: `bridge` (the core) uses `telegram`, `matrix` and `storage`; those
//! three import nothing from the core, only convert and transport.
//!
//! - [`telegram`]: everything that talks to Telegram. `sender::TelegramSender` is the only holder
//!   of `teloxide::Bot`: every Bot API request goes through it, paced per chat and per bot, with
//!   typed outcomes (`TgError`). `poller` long-polls into the durable inbox (updates stored as
//!   sent), `update` reads them leniently, `format` / `html` convert markup both ways.
//! - [`matrix`]: everything that talks to the homeserver. `client::MatrixClient` has a typed
//!   method (ruma ids, ruma's path encoder) for every client-server request; `intent` decides
//!   plain or encrypted for each send and upload; `appservice` is the HTTP API the homeserver
//!   pushes to (axum); `crypto` / `device`: one matrix-sdk device per acting user for encrypted
//!   rooms (cargo feature `e2ee`, on by default); `txn`: every transaction id the bridge uses.
//! - [`storage`]: SQLite (the default) or PostgreSQL (sqlx, `migrations/sqlite/` and
//!   `migrations/postgres/`: the same schema in each dialect), one file per table group (portals,
//!   puppets, messages, inboxes, cutover, audit) with typed ids and row structs; each query is
//!   written once and runs on either backend's own driver (`on!`); `Store::write` is the one
//!   write path and watches for storage faults; `copy`: `tgmx migrate-db`.
//! - [`bridge`]: the core that decides, split into parts that own their state (`portals`,
//!   `people`, `cutover`, `catch_up`, `media`, `dedupe`), the two directions (`telegram_in`,
//!   `matrix_in`; Telegram service messages in `service`, room name/topic/avatar and members in
//!   `room_details`, a group that became a supergroup in `upgrade`), and `lanes`: one ordered
//!   worker per portal in each direction, and the supervisor that restarts a crashed task (or
//!   stops the daemon when restarting cannot help). `management`: the operators' `!tgmx`
//!   commands in the management room, which is never bridged. `standby`: what waits while
//!   Telegram is not live, the rollback's backlog (digest), and the fallback window. A portal
//!   is a chat or one forum topic (`telegram::Place`).
//! - [`split`]: cutting a long HTML message into parts that fit a platform's limit.
//! - [`app`]: `App::build(config)` / `port()` / `run_until_stopped(shutdown)`: wires the parts.
//! - [`config`]: the operator's YAML config and the appservice registration, validated on load;
//!   [`config_edit`]: layout-preserving edits of the config file (`tgmx primary`, a chat id
//!   that changed in an upgrade).
//! - [`report`]: what `tgmx status` and `tgmx audit` say; [`check`]: the readiness check
//!   (`tgmx check`); [`ops`]: `bootstrap` and `rollcall`, run as the bridge bot; [`cli`]: the
//!   command line (`main.rs` only parses and dispatches).
//! - [`metrics`]: Prometheus counters served at `/metrics`.
//! - [`failpoint`]: named places tests can make fail (`TGMX_FAILPOINTS`).
//!
//! # Delivery guarantees
//!
//! Inbound work is persisted before it is acknowledged (appservice transactions before the 200,
//! Telegram updates before their offset is confirmed). Matrix sends use transaction ids derived
//! from Telegram ids, so a retry cannot double-post. A Telegram send has no idempotency key: an
//! intent row is written before each post; one found on a retry (a crash mid-send, a lost answer)
//! means the post may have happened, and it is posted again and recorded for `tgmx audit`. A
//! storage fault stops intake until writes work again (`storage::Store::write_fault`).
//! Synapse can skip an appservice transaction after a failed delivery; `bridge::catch_up` finds
//! such events in the timeline and bridges them in their place, once.

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
pub mod split;
pub mod storage;
pub mod telegram;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};
