//! Telegram side: long polling into the durable inbox, and entity conversion.
pub mod format;
pub mod pacer;
pub mod poller;
pub mod update;

/// A Bot API client whose HTTP timeout outlasts a long poll of `poll_timeout` seconds.
///
/// teloxide's default client gives up after 17 s: with a longer `getUpdates` timeout every idle
/// poll failed, the poller backed off (up to 30 s), and the next message in a quiet chat waited
/// for the backoff. The timeout here is the long poll plus 15 s, and at least 60 s (uploads).
pub fn bot(token: String, api_url: url::Url, poll_timeout: u32) -> teloxide::Bot {
    let timeout = std::time::Duration::from_secs(u64::from(poll_timeout) + 15).max(std::time::Duration::from_secs(60));
    let client = teloxide::net::default_reqwest_settings()
        .timeout(timeout)
        .build()
        .expect("HTTP client for the Bot API");
    teloxide::Bot::with_client(token, client).set_api_url(api_url)
}
