//! One integration-test binary: real Synapse + a fake Telegram Bot API + the daemon.
mod appservice_api;
mod catch_up;
mod cutover;
mod fake_telegram;
mod fake_telegram_selftest;
mod harness;
mod media;
mod operations;
mod reliability;
mod text_bridge;
