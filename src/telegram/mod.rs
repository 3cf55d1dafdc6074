//! Telegram side: long polling into the durable inbox, and entity conversion.
pub mod format;
pub mod pacer;
pub mod poller;
