//! Library error type. The binary wraps it in `anyhow` at the top.

use thiserror::Error;

/// Everything that can go wrong inside the bridge.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration file is missing, unreadable or invalid; the message names the key.
    #[error("config: {0}")]
    Config(String),
    /// A SQLite error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The homeserver answered with a Matrix error.
    #[error("matrix: {status} {errcode}: {message}")]
    Matrix {
        status: u16,
        errcode: String,
        message: String,
    },
    /// The homeserver could not be reached (network, timeout, 5xx).
    #[error("matrix transport: {0}")]
    MatrixTransport(String),
    /// The Telegram Bot API answered with an error, or could not be reached.
    #[error("telegram: {message}")]
    Telegram {
        message: String,
        /// Worth retrying (network trouble, 5xx, 429).
        transient: bool,
        /// The server asked us to wait this long (`parameters.retry_after`).
        retry_after: Option<std::time::Duration>,
        /// The request certainly did nothing: Telegram answered with an error, or the connection
        /// was never made. `false` when a send may have reached Telegram (a timeout, a connection
        /// lost mid-request, an answer that did not parse).
        no_effect: bool,
    },
    /// A file exceeds a limit on the way (bytes).
    #[error("file too large to bridge: {} > {}", human_size(*size), human_size(*limit))]
    TooLarge { size: u64, limit: u64 },
    /// A bug caught at run time (e.g. a panic while bridging one item).
    #[error("internal: {0}")]
    Internal(String),
    /// Work that cannot be done yet (e.g. a room not resolved); retried later.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The item's lane is held (standby): the worker puts its batch back, untouched, and waits
    /// (the inbox keeps it; what happens to it next is decided when the hold ends).
    #[error("held: {0}")]
    Held(String),
    /// This instance no longer holds the lease of an active/standby pair (another took it, or it
    /// could not be confirmed while a standby waits): it must stop bridging at once, without the
    /// usual wind-down (the binary exits right away).
    #[error("lost the lease of the database: {0}")]
    LeaseLost(String),
    /// End-to-end encryption (a device, a crypto store, encrypting or decrypting).
    #[error("encryption: {message}")]
    Crypto { message: String, transient: bool },
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// JSON (de)serialisation of stored or received data.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Whether retrying the same operation later can succeed (network trouble, 5xx, rate limits).
    /// Whether a failed Telegram send may still have posted the message (see `no_effect`).
    /// Failures before any request to Telegram (reading the Matrix event, downloading media)
    /// posted nothing.
    pub fn may_have_reached_telegram(&self) -> bool {
        match self {
            Error::Telegram { no_effect, .. } => !no_effect,
            Error::Io(_) => true,
            _ => false,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Error::MatrixTransport(_) => true,
            Error::Crypto { transient, .. } => *transient,
            Error::Matrix { status, errcode, .. } => *status >= 500 || *status == 429 || errcode == "M_LIMIT_EXCEEDED",
            Error::Db(_) => true,
            Error::Telegram { transient, .. } => *transient,
            Error::NotReady(_) | Error::Held(_) => true,
            _ => false,
        }
    }
}

impl From<crate::telegram::TgError> for Error {
    fn from(e: crate::telegram::TgError) -> Self {
        Error::Telegram {
            message: e.to_string(),
            transient: e.is_transient(),
            retry_after: e.retry_after(),
            no_effect: e.had_no_effect(),
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how much was left out: for
/// bodies quoted in logs and errors.
pub fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end).into()
}

/// "23 MB", "512 KB", "12 B" (decimal-ish, as Telegram states its limits).
pub fn human_size(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        let tenths = (bytes * 10 + MB / 2) / MB;
        if tenths.is_multiple_of(10) {
            format!("{} MB", tenths / 10)
        } else {
            format!("{}.{} MB", tenths / 10, tenths % 10)
        }
    } else if bytes >= 1024 {
        format!("{} KB", bytes.div_ceil(1024))
    } else {
        format!("{bytes} B")
    }
}

/// Replace the token in any `/bot<token>/` URL path inside `s` (reqwest errors quote the URL).
pub fn redact_bot_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/bot") {
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        let end = rest.find(['/', ' ', ')', '"']).unwrap_or(rest.len());
        if rest[..end].contains(':') {
            out.push_str("<redacted>");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_telegram_limits() {
        assert_eq!(super::human_size(20 * 1024 * 1024), "20 MB");
        assert_eq!(super::human_size(23 * 1024 * 1024 + 300_000), "23.3 MB");
        assert_eq!(super::human_size(1500), "2 KB");
        assert_eq!(super::human_size(12), "12 B");
    }

    #[test]
    fn bot_tokens_are_redacted() {
        let s = "error sending request for url (https://api.telegram.org/bot123:AAxx-yy/getUpdates)";
        assert_eq!(
            super::redact_bot_token(s),
            "error sending request for url (https://api.telegram.org/bot<redacted>/getUpdates)"
        );
        assert_eq!(super::redact_bot_token("robots/bother"), "robots/bother");
    }
}
