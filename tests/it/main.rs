//! One integration-test binary: real homeservers (Synapse, and Conduit when build.rs found it) +
//! a fake Telegram Bot API + the daemon.

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
                crate::harness::HsKind::Synapse.set_current();
                super::$name().await
            }

            #[cfg(tgmx_conduit)]
            #[tokio::test]
            async fn conduit() {
                crate::harness::HsKind::Conduit.set_current();
                super::$name().await
            }
        }
    )+};
}

mod appservice_api;
mod catch_up;
mod cutover;
mod delivery;
#[cfg(feature = "e2ee")]
mod encryption;
#[cfg(not(feature = "e2ee"))]
mod encryption_off;
mod fake_telegram;
mod fake_telegram_selftest;
mod faults;
mod harness;
mod lanes;
mod media;
mod operations;
mod reliability;
mod text_bridge;
