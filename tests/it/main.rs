//! One integration-test binary: real Synapse + a fake Telegram Bot API + the daemon.

// matrix-sdk sync futures are deep; proving them Send needs more than the default 128.
#![recursion_limit = "256"]
mod appservice_api;
mod catch_up;
mod cutover;
#[cfg(feature = "e2ee")]
mod encryption;
#[cfg(not(feature = "e2ee"))]
mod encryption_off;
mod fake_telegram;
mod fake_telegram_selftest;
mod harness;
mod media;
mod operations;
mod reliability;
mod text_bridge;
