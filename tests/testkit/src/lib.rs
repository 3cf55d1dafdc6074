//! Test kit of tgmx, shared by its integration tests (`tests/it`) and its benchmarks (`bench/`):
//!
//! - [`fake_telegram`]: an in-process fake of the Telegram Bot API.
//! - [`harness`]: real homeservers (Synapse, Conduit) started on first use, and [`harness::TestApp`]:
//!   one bridge under test (a slot, a fake Telegram, a room, a database and the daemon).
//! - [`pair`]: two daemons of one app on one PostgreSQL database (active/standby with a lease),
//!   behind a failover proxy.
//!
//! The caller names the daemon binary once ([`harness::use_binaries`]): only the tgmx package's
//! own tests and benches know where Cargo put it.

pub mod fake_telegram;
pub mod harness;
pub mod pair;
