//! One integration-test binary: real Synapse + a fake Telegram Bot API + the daemon.
mod fake_telegram;
mod fake_telegram_selftest;
