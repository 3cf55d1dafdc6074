//! One integration-test binary: real homeservers (Synapse, and Conduit when build.rs found it) +
//! a fake Telegram Bot API + the daemon. The fake and the harness are the `tgmx-testkit` crate
//! (tests/testkit), shared with the benchmarks.

// matrix-sdk sync futures are deep; proving them Send needs more than the default 128.
#![recursion_limit = "256"]

/// Run each of the named `async fn` tests of the calling module once per homeserver: `both!(a, b)`
/// makes `a::synapse`, `a::conduit`, `b::synapse`, `b::conduit` (`cargo test a::conduit`). The
/// Conduit variants exist only when build.rs found Conduit (`cfg(tgmx_conduit)`).
macro_rules! both {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn synapse() {
                crate::init();
                crate::harness::HsKind::Synapse.set_current();
                super::$name().await
            }

            #[cfg(tgmx_conduit)]
            #[tokio::test]
            async fn conduit() {
                crate::init();
                crate::harness::HsKind::Conduit.set_current();
                super::$name().await
            }
        }
    )+};
}

use tgmx_testkit::{fake_telegram, harness};

/// Name this build's daemon binary, and the Conduit binary build.rs found, to the harness.
fn init() {
    harness::use_binaries(env!("CARGO_BIN_EXE_tgmx"), option_env!("TGMX_CONDUIT_BIN"));
}

mod appservice_api;
mod bots;
mod catch_up;
mod config_aliases;
mod cutover;
mod delivery;
#[cfg(feature = "e2ee")]
mod encryption;
#[cfg(not(feature = "e2ee"))]
mod encryption_off;
mod fake_telegram_selftest;
mod faults;
mod in_process;
mod kinds;
mod lanes;
mod long;
mod management;
mod media;
mod operations;
/// Needs PostgreSQL, as `postgres`.
#[cfg(tgmx_postgres)]
mod pair;
/// Needs PostgreSQL and encryption.
#[cfg(all(tgmx_postgres, feature = "e2ee"))]
mod pair_e2ee;
#[cfg(tgmx_postgres)]
mod postgres;
mod properties;
mod readiness;
mod reliability;
mod service;
mod standby;
mod text_bridge;
mod topics;
mod upgrade;
