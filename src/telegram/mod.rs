//! Telegram side: every Bot API request goes through [`sender::TelegramSender`] (the only
//! holder of `teloxide::Bot`; it paces and returns typed outcomes), long polling into the durable
//! inbox (`poller`), lenient reading of stored updates (`update`), Telegram entities -> Matrix
//! HTML (`format`), Matrix HTML -> the Telegram HTML subset (`html`). Imports nothing from the
//! bridge core.
pub mod format;
pub mod html;
pub mod pacer;
pub mod poller;
pub mod sender;
pub mod update;

pub use sender::{TelegramSender, TgError};

/// Where on Telegram a portal is: a chat, or one topic of a forum supergroup.
///
/// `topic` is the topic's `message_thread_id` (the id of the message that created it); `None` is
/// the chat as a whole: a chat without topics, or in a forum its General topic and every topic
/// that has no portal of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    /// The chat id (negative for groups and supergroups).
    pub chat: i64,
    /// The forum topic, if the place is one.
    pub topic: Option<i32>,
}

impl Place {
    /// The chat as a whole.
    pub fn chat(chat: i64) -> Place {
        Place { chat, topic: None }
    }

    /// One topic of a forum (`None`: the chat as a whole).
    pub fn topic(chat: i64, topic: Option<i32>) -> Place {
        Place { chat, topic }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.topic {
            Some(t) => write!(f, "chat {} topic {t}", self.chat),
            None => write!(f, "chat {}", self.chat),
        }
    }
}

/// A Bot API client whose HTTP timeout outlasts a long poll of `poll_timeout` seconds.
///
/// teloxide's default client gives up after 17 s: with a longer `getUpdates` timeout every idle
/// poll failed, the poller backed off (up to 30 s), and the next message in a quiet chat waited
/// for the backoff. The timeout here is the long poll plus 15 s, and at least 60 s (uploads).
fn bot(token: String, api_url: url::Url, poll_timeout: u32) -> teloxide::Bot {
    let timeout = std::time::Duration::from_secs(u64::from(poll_timeout) + 15).max(std::time::Duration::from_secs(60));
    let client = teloxide::net::default_reqwest_settings()
        .timeout(timeout)
        .build()
        .expect("HTTP client for the Bot API");
    teloxide::Bot::with_client(token, client).set_api_url(api_url)
}

/// Why the Bot API could not be reached, in one line naming the host and the cause (DNS, refused,
/// TLS, timeout), for an operator who has to fix it. Never contains the token.
pub fn unreachable_reason(host: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let all = chain.join(": ").to_ascii_lowercase();
    let cause = if all.contains("dns error") || all.contains("failed to lookup") || all.contains("name or service") {
        "the name does not resolve (DNS)"
    } else if all.contains("connection refused") {
        "the connection was refused"
    } else if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        "the TLS handshake failed"
    } else if all.contains("timed out") || all.contains("timeout") {
        "it did not answer in time"
    } else if all.contains("unreachable") {
        "the network is unreachable"
    } else {
        "the connection failed"
    };
    let detail = crate::error::redact_bot_token(chain.last().map(String::as_str).unwrap_or_default());
    format!("cannot reach the Telegram Bot API at {host}: {cause} ({detail})")
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn unreachable_reasons_name_the_host_and_the_cause() {
        let dns = E(
            "error sending request",
            Some(Box::new(E("dns error: failed to lookup address", None))),
        );
        let r = super::unreachable_reason("api.telegram.org", &dns);
        assert!(r.contains("api.telegram.org") && r.contains("(DNS)"), "{r}");
        let refused = E(
            "client error (Connect)",
            Some(Box::new(E("Connection refused (os error 111)", None))),
        );
        assert!(super::unreachable_reason("h", &refused).contains("refused"));
        let tls = E(
            "client error (Connect)",
            Some(Box::new(E("invalid peer certificate: UnknownIssuer", None))),
        );
        assert!(super::unreachable_reason("h", &tls).contains("TLS"));
    }
}
