//! The one holder of `teloxide::Bot`: every Bot API request the daemon makes goes through
//! [`TelegramSender`] (the poller uses its client for `getUpdates`).
//!
//! - **Pacing is automatic.** Every request waits for the bot's budget (about 30 requests a
//!   second); posts and edits also wait for their chat's (`gateway.telegram.per_chat_per_minute`,
//!   a group takes about 20 bot messages a minute). A caller cannot post without a [`Turn`],
//!   and a turn is only handed out once pacing allows it.
//! - **Outcomes are typed** ([`TgError`]): not modified, too large, chat gone, retry after N, the
//!   token refused, or failed (transient or not, and whether the request may have taken effect).
//!   Nothing above this module matches Telegram's error strings.
//!
//! Why a post takes its turn first: the bridge records a send intent right before each post of
//! a Matrix event (see `storage`); with the pacing wait inside the turn, a daemon stopped while
//! waiting leaves no record of a post it never attempted.

use std::time::Duration;

use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::{
    ChatId, FileMeta, InputFile, Me, MessageId, ParseMode, PhotoSize, ReactionType, ReplyParameters, ThreadId, UserId,
};
use teloxide::{ApiError, RequestError};

use super::pacer::{Pacer, Slot};

/// What a Bot API request came to when it did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TgError {
    /// An edit that would change nothing (the text is already so).
    #[error("message is not modified")]
    NotModified,
    /// Telegram refused the file or text as too large (413, "file is too big").
    #[error("too large for Telegram")]
    TooLarge,
    /// The bot cannot post in the chat any more: not found, kicked, blocked, deactivated, or
    /// the group became a supergroup (`migrated_to`).
    #[error("chat gone: {reason}")]
    ChatGone {
        reason: String,
        migrated_to: Option<ChatId>,
    },
    /// Flood control: Telegram asks to wait this long.
    #[error("flood control: retry after {} s", .0.as_secs())]
    RetryAfter(Duration),
    /// The bot token was refused (401).
    #[error("the bot token was refused (Unauthorized)")]
    Unauthorized,
    /// Anything else. Never contains the token; an HTML error page is quoted only in part.
    #[error("{message}")]
    Failed {
        message: String,
        /// Worth retrying (network trouble, 5xx, a 429 without `retry_after`).
        transient: bool,
        /// The request certainly did nothing: Telegram answered with an error, or no connection
        /// was made. `false` when a post may have reached Telegram (time-out, connection lost
        /// mid-request, an answer that did not parse).
        no_effect: bool,
    },
}

impl TgError {
    /// Whether retrying the same request later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TgError::RetryAfter(_) => true,
            TgError::Failed { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Whether the request certainly had no effect (see [`TgError::Failed`]).
    pub fn had_no_effect(&self) -> bool {
        match self {
            TgError::Failed { no_effect, .. } => *no_effect,
            _ => true,
        }
    }

    /// The wait Telegram asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TgError::RetryAfter(d) => Some(*d),
            _ => None,
        }
    }

    fn from_request(e: RequestError, host: &str) -> TgError {
        match e {
            RequestError::Api(ApiError::MessageNotModified) => TgError::NotModified,
            RequestError::Api(ApiError::RequestEntityTooLarge) => TgError::TooLarge,
            RequestError::Api(ApiError::Unknown(m)) if m.contains("file is too big") => TgError::TooLarge,
            RequestError::Api(ApiError::InvalidToken) => TgError::Unauthorized,
            RequestError::Api(
                api @ (ApiError::ChatNotFound
                | ApiError::BotBlocked
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::BotKickedFromChannel
                | ApiError::GroupDeactivated
                | ApiError::UserDeactivated
                | ApiError::NotEnoughRightsToPostMessages),
            ) => TgError::ChatGone {
                reason: api.to_string(),
                migrated_to: None,
            },
            RequestError::MigrateToChatId(to) => TgError::ChatGone {
                reason: format!("the group became supergroup {to}"),
                migrated_to: Some(to),
            },
            RequestError::RetryAfter(secs) => TgError::RetryAfter(secs.duration()),
            RequestError::Network(n) => TgError::Failed {
                no_effect: n.is_connect() || n.is_builder(),
                message: super::unreachable_reason(host, n.as_ref()),
                transient: true,
            },
            other => {
                let transient = match &other {
                    RequestError::Io(_) | RequestError::InvalidJson { .. } => true,
                    // Server trouble, and a 429 that came without `retry_after` (backed off).
                    RequestError::Api(ApiError::Unknown(m)) => TRANSIENT_API_ERRORS.iter().any(|t| m.contains(t)),
                    _ => false,
                };
                let no_effect = matches!(other, RequestError::Api(_));
                TgError::Failed {
                    message: crate::error::capped(&crate::error::redact_bot_token(&other.to_string()), 500)
                        .into_owned(),
                    transient,
                    no_effect,
                }
            }
        }
    }
}

/// Bot API error descriptions that a retry can get past.
const TRANSIENT_API_ERRORS: [&str; 5] = [
    "Internal Server Error",
    "Bad Gateway",
    "Service Unavailable",
    "Gateway Timeout",
    "Too Many Requests",
];

/// Permission to post once in a chat, handed out by [`TelegramSender::turn`] when pacing allows.
#[must_use = "a turn is taken to post"]
pub struct Turn {
    chat: ChatId,
    /// The forum topic to post in (`message_thread_id`); `None`: the chat (in a forum, General).
    thread: Option<ThreadId>,
    /// The post's places in the chat's and the bot's windows, held until Telegram answers.
    slots: [Slot; 2],
}

impl Turn {
    /// Settle the turn with the post's outcome: a 429 did not count, so its places are free
    /// again; anything else counts from now (dropping the slots).
    fn settle<T>(self, r: &Result<T, RequestError>) {
        if matches!(r, Err(RequestError::RetryAfter(_))) {
            let [a, b] = self.slots;
            a.refused();
            b.refused();
        }
    }
}

/// How a file is posted (Telegram shows each kind differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Photo,
    /// A voice message; its length in seconds when known.
    Voice {
        duration_secs: Option<u32>,
    },
    Audio,
    Video,
    Document,
}

/// A file to post, with its caption (Telegram HTML, at most 1024 characters).
pub struct OutFile {
    pub kind: FileKind,
    pub bytes: Vec<u8>,
    pub name: String,
    pub caption_html: String,
}

/// Every Bot API request of the daemon (see the module doc).
pub struct TelegramSender {
    /// The only `Bot`: its HTTP client outlasts a long poll (see [`super::bot`]).
    bot: Bot,
    /// Posts and edits per chat in any minute (group limit); changed on reload.
    per_chat: Pacer,
    /// Requests of the bot in any second.
    per_bot: Pacer,
    /// The Bot API host, to name it when it cannot be reached.
    host: String,
}

impl TelegramSender {
    /// A sender for `token` at `api_url`; `poll_timeout` sizes the HTTP time-out; the rates are
    /// `gateway.telegram`'s `per_chat_per_minute` and `per_bot_per_second` (0: unpaced).
    pub fn new(
        token: String,
        api_url: url::Url,
        poll_timeout: u32,
        per_chat_per_minute: u32,
        per_bot_per_second: u32,
    ) -> TelegramSender {
        let host = api_url.host_str().unwrap_or("?").to_owned();
        TelegramSender {
            bot: super::bot(token, api_url, poll_timeout),
            per_chat: Pacer::new(per_chat_per_minute),
            per_bot: Pacer::per_window(per_bot_per_second, Duration::from_secs(1)),
            host,
        }
    }

    /// A sender that is never used to reach Telegram (offline commands that build the core).
    pub fn offline() -> TelegramSender {
        TelegramSender::new(
            String::new(),
            url::Url::parse("http://127.0.0.1:9/").expect("static url"),
            0,
            0,
            0,
        )
    }

    /// The client the poller's `getUpdates` uses (same token, URL and time-out).
    pub(super) fn bot(&self) -> &Bot {
        &self.bot
    }

    /// The Bot API host (for messages naming it).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Change the per-chat rate (config reload).
    pub fn set_per_chat_rate(&self, per_minute: u32) {
        self.per_chat.set_rate(per_minute);
    }

    /// Change the bot's overall rate (config reload; 0: unpaced).
    pub fn set_per_bot_rate(&self, per_second: u32) {
        self.per_bot.set_rate(per_second);
    }

    /// A post's outcome: the turn settled with it, the message id or the typed error.
    fn answered(&self, turn: Turn, r: Result<teloxide::types::Message, RequestError>) -> Result<MessageId, TgError> {
        turn.settle(&r);
        r.map(|m| m.id).map_err(|e| self.error(e))
    }

    fn error(&self, e: RequestError) -> TgError {
        TgError::from_request(e, &self.host)
    }

    /// A place in the bot's window, held for one request (dropped once it is answered).
    async fn wait_bot(&self) -> Slot {
        self.per_bot.take(0).await
    }

    /// Wait until `chat` may take another post (and the bot another request).
    pub async fn turn(&self, chat: ChatId) -> Turn {
        self.turn_at(super::Place::chat(chat.0)).await
    }

    /// Wait until `place`'s chat may take another post, to post in `place` (its topic, if any:
    /// a forum's topics share the chat's rate).
    pub async fn turn_at(&self, place: super::Place) -> Turn {
        let chat = self.per_chat.take(place.chat).await;
        let bot = self.wait_bot().await;
        Turn {
            chat: ChatId(place.chat),
            thread: place.topic.map(|t| ThreadId(MessageId(t))),
            slots: [chat, bot],
        }
    }

    /// Post Telegram HTML, as a reply when `reply_to` is set (sent even if that message is gone).
    pub async fn send_html(&self, turn: Turn, html: String, reply_to: Option<MessageId>) -> Result<MessageId, TgError> {
        let mut req = self.bot.send_message(turn.chat, html).parse_mode(ParseMode::Html);
        if let Some(r) = reply(reply_to) {
            req = req.reply_parameters(r);
        }
        if let Some(t) = turn.thread {
            req = req.message_thread_id(t);
        }
        self.answered(turn, req.await)
    }

    /// Post plain text (no markup is interpreted).
    pub async fn send_plain(&self, turn: Turn, text: String) -> Result<MessageId, TgError> {
        let mut req = self.bot.send_message(turn.chat, text);
        if let Some(t) = turn.thread {
            req = req.message_thread_id(t);
        }
        self.answered(turn, req.await)
    }

    /// Take a turn and post Telegram HTML (notices).
    pub async fn post_html(&self, chat: ChatId, html: String) -> Result<MessageId, TgError> {
        let turn = self.turn(chat).await;
        self.send_html(turn, html, None).await
    }

    /// Post a file with its caption.
    pub async fn send_file(
        &self,
        turn: Turn,
        file: OutFile,
        reply_to: Option<MessageId>,
    ) -> Result<MessageId, TgError> {
        let (chat, thread) = (turn.chat, turn.thread);
        let input = InputFile::memory(file.bytes).file_name(file.name);
        let caption = file.caption_html;
        let reply = reply(reply_to);
        macro_rules! send {
            ($req:expr) => {{
                let mut req = $req.caption(caption).parse_mode(ParseMode::Html);
                if let Some(r) = reply {
                    req = req.reply_parameters(r);
                }
                if let Some(t) = thread {
                    req = req.message_thread_id(t);
                }
                req.await
            }};
        }
        let sent = match file.kind {
            FileKind::Photo => send!(self.bot.send_photo(chat, input)),
            FileKind::Voice { duration_secs } => {
                let mut req = self.bot.send_voice(chat, input);
                if let Some(s) = duration_secs {
                    req = req.duration(s);
                }
                send!(req)
            }
            FileKind::Audio => send!(self.bot.send_audio(chat, input)),
            FileKind::Video => send!(self.bot.send_video(chat, input)),
            FileKind::Document => send!(self.bot.send_document(chat, input)),
        };
        self.answered(turn, sent)
    }

    /// Post a place: `title` and `address` are plain text shown with the map.
    pub async fn send_venue(
        &self,
        turn: Turn,
        (latitude, longitude): (f64, f64),
        title: String,
        address: String,
        reply_to: Option<MessageId>,
    ) -> Result<MessageId, TgError> {
        let mut req = self.bot.send_venue(turn.chat, latitude, longitude, title, address);
        if let Some(r) = reply(reply_to) {
            req = req.reply_parameters(r);
        }
        if let Some(t) = turn.thread {
            req = req.message_thread_id(t);
        }
        self.answered(turn, req.await)
    }

    /// Post a native poll (`question` 1-300 characters, 2-10 `options` of 1-100 characters;
    /// see [`poll_fits`]). Not anonymous, so people see who voted.
    pub async fn send_poll(
        &self,
        turn: Turn,
        question: String,
        options: Vec<String>,
        multiple: bool,
        reply_to: Option<MessageId>,
    ) -> Result<MessageId, TgError> {
        let options = options
            .into_iter()
            .map(|text| teloxide::types::InputPollOption { text, formatting: None });
        let mut req = self
            .bot
            .send_poll(turn.chat, question, options)
            .is_anonymous(false)
            .allows_multiple_answers(multiple);
        if let Some(r) = reply(reply_to) {
            req = req.reply_parameters(r);
        }
        if let Some(t) = turn.thread {
            req = req.message_thread_id(t);
        }
        self.answered(turn, req.await)
    }

    /// Replace a posted message's text (Telegram HTML). [`TgError::NotModified`] when it is
    /// already so.
    pub async fn edit_html(&self, chat: ChatId, msg: MessageId, html: String) -> Result<(), TgError> {
        let turn = self.turn(chat).await;
        let r = self
            .bot
            .edit_message_text(chat, msg, html)
            .parse_mode(ParseMode::Html)
            .await;
        turn.settle(&r);
        r.map(drop).map_err(|e| self.error(e))
    }

    /// Delete a message (a Telegram user's only when the bot is an admin).
    pub async fn delete(&self, chat: ChatId, msg: MessageId) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .delete_message(chat, msg)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Pin a message (needs admin rights).
    pub async fn pin(&self, chat: ChatId, msg: MessageId) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .pin_chat_message(chat, msg)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Unpin one message.
    pub async fn unpin(&self, chat: ChatId, msg: MessageId) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .unpin_chat_message(chat)
            .message_id(msg)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Set the bot's reaction on a message (`None`: remove it). Telegram allows a fixed set of
    /// emoji.
    pub async fn set_reaction(&self, chat: ChatId, msg: MessageId, emoji: Option<String>) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        let reaction: Vec<ReactionType> = emoji.into_iter().map(|emoji| ReactionType::Emoji { emoji }).collect();
        self.bot
            .set_message_reaction(chat, msg)
            .reaction(reaction)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Download a file (`getFile`, then the file itself). [`TgError::TooLarge`] for a file over
    /// the Bot API's download limit.
    pub async fn download(&self, file: &FileMeta) -> Result<Vec<u8>, TgError> {
        let _slot = self.wait_bot().await;
        let found = self.bot.get_file(file.id.clone()).await.map_err(|e| self.error(e))?;
        // `size` is `u32::MAX` when unknown (chat photos): reserve little, grow as needed.
        let mut bytes = Vec::with_capacity(file.size.min(8 << 20) as usize);
        self.bot
            .download_file(&found.path, &mut bytes)
            .await
            .map_err(|e| TgError::Failed {
                message: crate::error::redact_bot_token(&e.to_string()),
                transient: true,
                no_effect: true,
            })?;
        Ok(bytes)
    }

    /// The largest size of a user's current profile photo, if any.
    pub async fn profile_photo(&self, user: UserId) -> Result<Option<PhotoSize>, TgError> {
        let _slot = self.wait_bot().await;
        let photos = self
            .bot
            .get_user_profile_photos(user)
            .limit(1)
            .await
            .map_err(|e| self.error(e))?;
        Ok(photos
            .photos
            .into_iter()
            .next()
            .and_then(|sizes| sizes.into_iter().max_by_key(|p| p.width * p.height)))
    }

    /// Who the bot is (`getMe`): checks the token.
    pub async fn get_me(&self) -> Result<Me, TgError> {
        let _slot = self.wait_bot().await;
        self.bot.get_me().await.map_err(|e| self.error(e))
    }

    /// Whether the bot can see `chat` (`getChat`).
    pub async fn chat_reachable(&self, chat: ChatId) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot.get_chat(chat).await.map(drop).map_err(|e| self.error(e))
    }

    /// Whether `user` is an admin or the owner of `chat`.
    pub async fn is_privileged(&self, chat: ChatId, user: UserId) -> Result<bool, TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .get_chat_member(chat, user)
            .await
            .map(|m| m.is_privileged())
            .map_err(|e| self.error(e))
    }

    /// Whether `user` may pin messages in `chat` (`getChatMember`): the group's creator, or an
    /// administrator with the pin right.
    pub async fn can_pin(&self, chat: ChatId, user: UserId) -> Result<bool, TgError> {
        use teloxide::types::ChatMemberKind;
        let _slot = self.wait_bot().await;
        self.bot
            .get_chat_member(chat, user)
            .await
            .map(|m| match m.kind {
                ChatMemberKind::Owner(_) => true,
                ChatMemberKind::Administrator(a) => a.can_pin_messages,
                _ => false,
            })
            .map_err(|e| self.error(e))
    }

    /// Whether another client is polling with this token (409 Conflict). Asks `getUpdates`
    /// without an offset, so it confirms nothing and loses nothing.
    pub async fn other_poller(&self) -> bool {
        let _slot = self.wait_bot().await;
        match self.bot.get_updates().limit(1).timeout(0).await {
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => true,
            // A 409 worded differently from the documented text.
            Err(RequestError::Api(ApiError::Unknown(m))) => m.starts_with("Conflict"),
            _ => false,
        }
    }

    /// Remove a webhook: a webhook and `getUpdates` exclude each other.
    pub async fn delete_webhook(&self) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot.delete_webhook().await.map(drop).map_err(|e| self.error(e))
    }
}

/// What `getChat` says about a group: its title, description and photo (the big size; its
/// size is unknown until downloaded).
#[derive(Debug, Clone, Default)]
pub struct ChatDetails {
    pub title: Option<String>,
    pub description: Option<String>,
    pub photo: Option<FileMeta>,
}

/// Room details and members: `getChat`, `setChatTitle` / `setChatDescription` / `setChatPhoto` /
/// `deleteChatPhoto` (the bot needs the admin right to change chat info), the administrators and
/// the member count (the Bot API cannot list a group's other members).
impl TelegramSender {
    /// A group's title, description and photo (`getChat`).
    pub async fn chat_details(&self, chat: ChatId) -> Result<ChatDetails, TgError> {
        let _slot = self.wait_bot().await;
        let info = self.bot.get_chat(chat).await.map_err(|e| self.error(e))?;
        Ok(ChatDetails {
            title: info.title().map(str::to_owned),
            description: info.description().map(str::to_owned),
            photo: info.photo.map(|p| FileMeta {
                id: p.big_file_id,
                unique_id: p.big_file_unique_id,
                size: u32::MAX,
            }),
        })
    }

    /// Set a group's title (1-128 characters).
    pub async fn set_title(&self, chat: ChatId, title: String) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .set_chat_title(chat, title)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Set a group's description (0-255 characters; empty clears it).
    pub async fn set_description(&self, chat: ChatId, description: String) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .set_chat_description(chat)
            .description(description)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Set a group's photo from image bytes.
    pub async fn set_photo(&self, chat: ChatId, bytes: Vec<u8>) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        let input = InputFile::memory(bytes).file_name("photo.jpg");
        self.bot
            .set_chat_photo(chat, input)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Remove a group's photo.
    pub async fn delete_photo(&self, chat: ChatId) -> Result<(), TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .delete_chat_photo(chat)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// A group's administrators (bots included).
    pub async fn administrators(&self, chat: ChatId) -> Result<Vec<teloxide::types::User>, TgError> {
        let _slot = self.wait_bot().await;
        self.bot
            .get_chat_administrators(chat)
            .await
            .map(|admins| admins.into_iter().map(|m| m.user).collect())
            .map_err(|e| self.error(e))
    }

    /// How many members a group has.
    pub async fn member_count(&self, chat: ChatId) -> Result<u32, TgError> {
        let _slot = self.wait_bot().await;
        self.bot.get_chat_member_count(chat).await.map_err(|e| self.error(e))
    }
}

/// Whether a poll fits Telegram's limits (question 1-300 characters, 2-10 options of 1-100).
pub fn poll_fits(question: &str, options: &[String]) -> bool {
    let len = |s: &str| s.encode_utf16().count();
    (1..=300).contains(&len(question))
        && (2..=10).contains(&options.len())
        && options.iter().all(|o| (1..=100).contains(&len(o)))
}

fn reply(to: Option<MessageId>) -> Option<ReplyParameters> {
    to.map(|id| ReplyParameters::new(id).allow_sending_without_reply())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_errors_become_typed_outcomes() {
        let e = |r| TgError::from_request(r, "api.example");
        assert!(matches!(
            e(RequestError::Api(ApiError::MessageNotModified)),
            TgError::NotModified
        ));
        assert!(matches!(
            e(RequestError::Api(ApiError::RequestEntityTooLarge)),
            TgError::TooLarge
        ));
        assert!(matches!(
            e(RequestError::Api(ApiError::Unknown(
                "Bad Request: file is too big".into()
            ))),
            TgError::TooLarge
        ));
        assert!(matches!(
            e(RequestError::Api(ApiError::ChatNotFound)),
            TgError::ChatGone { .. }
        ));
        assert!(matches!(
            e(RequestError::MigrateToChatId(ChatId(-100))),
            TgError::ChatGone {
                migrated_to: Some(ChatId(-100)),
                ..
            }
        ));
        let wait = e(RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(7)));
        assert_eq!(wait.retry_after(), Some(Duration::from_secs(7)));
        assert!(wait.is_transient() && wait.had_no_effect());
        let no_wait_given = e(RequestError::Api(ApiError::Unknown(
            "Too Many Requests: retry later".into(),
        )));
        assert!(no_wait_given.is_transient() && no_wait_given.retry_after().is_none());
        let server = e(RequestError::Api(ApiError::Unknown("Bad Gateway".into())));
        assert!(server.is_transient() && server.had_no_effect());
        let refused = e(RequestError::Api(ApiError::Unknown("Bad Request: can't parse".into())));
        assert!(!refused.is_transient());
        assert!(matches!(
            e(RequestError::Api(ApiError::InvalidToken)),
            TgError::Unauthorized
        ));
    }
}
