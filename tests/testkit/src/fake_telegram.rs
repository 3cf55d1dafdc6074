//! An in-process fake of the Telegram Bot API for integration tests.
//!
//! [`FakeTelegram::start`] binds an HTTP server on `127.0.0.1:0` that answers
//! `GET`/`POST {api_url}/bot{token}/{method}` the way `api.telegram.org` does
//! (<https://core.telegram.org/bots/api>), so the daemon can be pointed at it
//! with teloxide's `Bot::set_api_url`. Tests drive the "human" side through
//! plain Rust methods on the cloneable [`FakeTelegram`] handle (register chats
//! and users, inject messages and edits) and inspect what the bot did (sent,
//! edited, deleted messages, per-method call counts, raw request parameters).
//!
//! # Bot API behaviours reproduced
//!
//! * **Transport.** Parameters are read from the query string and from an
//!   `application/json`, `application/x-www-form-urlencoded` or
//!   `multipart/form-data` body (body wins). In form/query/multipart encoding,
//!   structured parameters (`entities`, `reply_parameters`,
//!   `allowed_updates`, ...) are JSON strings, as in the real API; multipart
//!   text fields with a known structured name are parsed as JSON when they
//!   are valid JSON. Multipart parts with a `filename` are uploaded files.
//!   A request body over 50 MiB (or an uploaded file over 50 MiB) answers 413
//!   `Request Entity Too Large`.
//! * **Envelope.** Every answer is `{"ok":true,"result":...}` or
//!   `{"ok":false,"error_code":N,"description":"...","parameters":{...}?}`
//!   with HTTP status `N`. Descriptions are the real server's strings, so
//!   teloxide maps them to the right `ApiError` variants.
//! * **Authentication / routing.** A wrong token answers 401 `Unauthorized`;
//!   an unknown method (or a path not of the form `/bot{token}/{method}`)
//!   answers 404 `Not Found`. Method names are case-insensitive.
//! * **Updates.** Update ids increase globally; message ids increase per chat
//!   and are shared between injected user messages and bot messages.
//!   `getUpdates` honours `offset` (calling with `offset = N` confirms and
//!   forgets every update with `update_id < N`; a negative offset keeps only
//!   the last `-offset` updates), `limit` (1..=100, default 100), `timeout`
//!   (long polling: waits until an update is available or the timeout elapses,
//!   waking as soon as one is injected) and `allowed_updates` (persisted
//!   between calls; like the real server it applies to updates created
//!   *after* the call, an empty list meaning "all except `chat_member`,
//!   `message_reaction` and `message_reaction_count`").
//! * **Retention and clock.** The fake's clock is real time plus an offset that
//!   [`FakeTelegram::advance_clock`] moves ahead (for a long standby in seconds); `date`s and
//!   `edit_date`s follow it. As the Bot API server does (Client.cpp: every update is queued with
//!   a timeout, `date + 86400 - now` for messages), an update not confirmed through `offset`
//!   within its lifetime is dropped, read or not: 24 hours for messages, edits and everything
//!   else, 150 s for `callback_query` (and shipping/pre-checkout queries), 30 s for
//!   `inline_query`, 600 s for `chosen_inline_result`, counted from when the fake queued it (for
//!   [`FakeTelegram::inject_update`] too, whatever `date` its payload has).
//!   [`FakeTelegram::expired_updates`] counts the drops. The rule is applied whenever updates are
//!   read or counted and when the clock moves; real time never runs long enough to matter.
//! * **Concurrent polling.** While a `getUpdates` call is in flight, another
//!   one answers 409 `Conflict: terminated by other getUpdates request; make
//!   sure that only one bot instance is running`. (The real server instead
//!   terminates the *earlier* request with that error; for tests the
//!   difference only matters in who sees the error.)
//! * **Messages.** `sendMessage` validates the chat, renders `parse_mode=HTML`
//!   (Telegram's tag subset: unsupported or unbalanced tags are rejected with
//!   `Bad Request: can't parse entities: ...`, entity offsets are in UTF-16
//!   code units), or takes explicit `entities` (which win over `parse_mode`),
//!   trims surrounding whitespace, rejects empty and over-long (4096) texts,
//!   resolves `reply_parameters` / legacy `reply_to_message_id` (with
//!   `allow_sending_without_reply`) and returns a full `Message` including
//!   `reply_to_message` (which, as in the real API, never nests further).
//!   `Markdown`/`MarkdownV2` are accepted but not rendered: the text is kept
//!   verbatim without entities.
//!   Every send method here (`sendMessage`, the media methods, `sendVenue`, `sendPoll`) takes
//!   `message_thread_id`; see forum topics below.
//!   `editMessageText` only edits the bot's own messages, rejects unchanged
//!   content with `message is not modified`, and sets `edit_date`.
//!   `deleteMessage` / `deleteMessages` forget messages; deleting an unknown
//!   or already deleted message is `message to delete not found`.
//! * **Places and polls.** `sendVenue` (coordinates in range, title and address
//!   required) and `sendPoll` (question 1-300 characters, 2-10 options of
//!   1-100) as documented; both answer a `Message` carrying `venue` / `poll`.
//! * **Media.** `sendPhoto`, `sendDocument`, `sendVoice`, `sendAudio`,
//!   `sendVideo`, `sendAnimation`, `sendSticker` and `sendVideoNote` take the
//!   file as an uploaded part (directly under the field name, or referenced as
//!   `attach://<part>` as teloxide does), a known `file_id` (re-sent, keeping
//!   its ids) or an `http(s)://` URL (recorded, never fetched: such files have
//!   no bytes and no `file_size`). Anything else is `wrong file
//!   identifier/HTTP URL specified`. Captions follow the text rules
//!   (`parse_mode`, `caption_entities`, at most 1024 characters). Uploaded
//!   photos must be at most 10 MiB (`PHOTO_SAVE_FILE_INVALID`) and, when
//!   their PNG/JPEG/GIF/WebP header reveals their size, at most 10000 pixels
//!   in width + height with a ratio of at most 20 (`PHOTO_INVALID_DIMENSIONS`);
//!   bytes that are not a recognizable image are accepted as an 800x600
//!   photo (the real server would answer `IMAGE_PROCESS_FAILED`). Returned
//!   photos have two sizes, a thumbnail (at most 90 px) and the full size
//!   last; animations also carry `document`, as in the real API. Media
//!   messages carry `caption`/`caption_entities` instead of `text`;
//!   `editMessageText` refuses them and `editMessageCaption` edits them.
//! * **Files.** Every file (uploaded by the bot, injected, added with
//!   [`FakeTelegram::add_file`], profile photos) has a `file_id`, a
//!   `file_unique_id` and a `file_path`. `getFile` answers a `File` unless the
//!   file is larger than the download limit (20 MiB by default,
//!   [`FakeTelegram::set_download_limit`]): `Bad Request: file is too big`.
//!   `GET {api_url}/file/bot{token}/{file_path}` downloads the bytes (401 for
//!   a wrong token, 404 for an unknown path or a URL-only file).
//! * **Reactions.** [`FakeTelegram::inject_reaction`] creates
//!   `message_reaction` updates, which (as on Telegram) are only produced when
//!   `allowed_updates` asks for them explicitly.
//! * **Chats and members.** `getChat` returns a `ChatFullInfo` for registered
//!   chats (`chat not found` otherwise). `getChatMember` reports the bot as an
//!   administrator and known users as members; `getChatAdministrators`,
//!   `getChatMemberCount` give plausible answers; `getUserProfilePhotos`
//!   returns the photo set with [`FakeTelegram::set_profile_photo`], if any.
//!   `getChat` includes the description and photo set with
//!   [`FakeTelegram::set_chat_details`]; `setChatTitle`, `setChatDescription`,
//!   `setChatPhoto` and `deleteChatPhoto` change them (the bot is always
//!   allowed to; unlike Telegram, no service message is queued). A bot in privacy mode still gets
//!   service messages ([`FakeTelegram::inject_service`]), as the privacy mode docs say.
//! * **Forum topics.** [`FakeTelegram::add_forum`] registers a supergroup with topics
//!   (`is_forum: true` in every `chat` object and in `getChat`). A topic's id
//!   (`message_thread_id`) is the `message_id` of its `forum_topic_created` service message
//!   ([`FakeTelegram::create_topic`], `createForumTopic`), which carries that
//!   `message_thread_id` and `is_topic_message` itself; message id 1 stays the General topic's,
//!   so a forum's messages start at 2. Every message in a topic carries `message_thread_id` and
//!   `is_topic_message: true`, and, when it replies to nothing else in the topic, the topic's
//!   creation message as `reply_to_message` (the Bot API server adds it:
//!   `get_same_chat_reply_to_message_id`), service messages (`forum_topic_edited`) included.
//!   Messages in the General topic carry none of these, but, as in every supergroup, a reply
//!   outside topics carries the root of its reply chain as `message_thread_id` (TDLib's
//!   `top_thread_message_id`) without `is_topic_message`; basic groups and private chats have no
//!   threads. A send with `message_thread_id` (0 or less meaning none, as in the Bot API server)
//!   must name a topic of the chat, else `Bad Request: message thread not found` (also in a chat
//!   that is no forum, and for 1, the General topic); if it names the root of a reply thread of
//!   a supergroup, `Bad Request: message thread is not a forum topic thread` (Client.cpp
//!   `TdOnCheckMessageThreadCallback`; that TDLib gives such a root its own id as thread is
//!   inferred). Without it a message goes to the General topic, unless it replies to a message in
//!   a topic: then it goes there (as with the real server, where a reply never needs
//!   `message_thread_id`). A reply with a `message_thread_id` naming another topic than its
//!   target's goes to the named topic and shows the target as `external_reply` (origin, chat,
//!   message id, media fields; a text target has no content field there, as in the real API,
//!   and teloxide 0.17 then parses the whole message as `MessageKind::Empty`), with the topic's
//!   creation message as `reply_to_message` (Client.cpp `check_reply_parameters` keeps such a
//!   reply "in another topic").
//!   `createForumTopic` needs a forum (`the chat is not a forum`) and `can_manage_topics`
//!   (`not enough rights to create a topic`; the bot has it wherever it is an admin unless
//!   [`FakeTelegram::set_topic_rights`] takes it away, and `getChatMember` reports it); the name
//!   is trimmed and cut to 128 characters (`title must be non-empty`, TDLib's `clean_name`); the
//!   icon color defaults to 7322096 (a guess: the real server picks one) and must be an RGB value
//!   (`invalid icon color specified`; the six documented colors are not enforced). It answers a
//!   `ForumTopic`, and the bot gets the `forum_topic_created` message as an update, as it gets its
//!   own `forum_topic_edited` (Client.cpp `need_skip_update_message` delivers a bot's own topic,
//!   title, photo and pin service messages). `editForumTopic`: `invalid forum topic identifier
//!   specified` for an id of 0 or less, `TOPIC_ID_INVALID` for an unknown topic,
//!   `not enough rights to edit the topic` without `can_manage_topics` unless the bot created the
//!   topic, `TOPIC_NOT_MODIFIED` for the same name and icon; an empty name keeps the old one
//!   (the rights and name texts are TDLib's `ForumTopicManager`; the other three are Telegram's
//!   server answers as others report them, unverified here). The creation message keeps the
//!   first name. Not modeled: closing, reopening, deleting
//!   topics, the General topic's methods, topics in private chats.
//! * **Supergroup upgrades.** [`FakeTelegram::upgrade_group`] turns a basic group into a
//!   supergroup with a new id: every later request naming the old id answers 400 `Bad Request:
//!   group chat was upgraded to a supergroup chat` with `parameters.migrate_to_chat_id`, and the
//!   service messages (`migrate_from_chat_id` in the supergroup, then `migrate_to_chat_id` in the
//!   group) are queued ([`FakeTelegram::upgrade_group_quietly`] holds them back,
//!   [`FakeTelegram::announce_upgrade`] queues them later). [`FakeTelegram::chats_addressed`]
//!   lists the chat of every request, to check what went to the old id.
//! * **Bookkeeping no-ops.** `setMyCommands`/`getMyCommands`/
//!   `deleteMyCommands` (scope ignored), `deleteWebhook`, `getWebhookInfo`,
//!   `pinChatMessage`, `unpinChatMessage`, `unpinAllChatMessages`,
//!   `setMessageReaction`, `sendChatAction`.
//! * **Other bots.** [`FakeTelegram::add_bot`] adds a bot with a token of its own (its own
//!   `getUpdates` queue, `allowed_updates` and long poll; it acts in the same chats), and
//!   [`FakeTelegram::add_agent_bot`] a bot that posts but does not poll here. Group messages
//!   reach a bot as <https://core.telegram.org/api/bots/bot-to-bot> says: a human's when the
//!   bot's privacy mode is off or it is an admin (else only when addressed to it: `/cmd@bot`,
//!   `@bot`, a reply to its message); another bot's when the receiving bot has Bot-to-Bot
//!   Communication Mode on, is an admin and has privacy mode off, or when the message is
//!   addressed to it (`/cmd@bot`, a reply to its message) and either bot has the mode on; never
//!   its own. Knobs per bot: [`FakeTelegram::set_privacy`] (`getMe`'s
//!   `can_read_all_group_messages`), [`FakeTelegram::set_admin`] (`getChatMember`),
//!   [`FakeTelegram::set_bot_to_bot`] (the mode, which the Bot API does not report). Defaults:
//!   privacy off, admin everywhere, the mode off.
//! * **Fault injection.** [`FakeTelegram::fail_next`] makes the next calls of
//!   a method fail with a given status (429 carries `parameters.retry_after`,
//!   which teloxide turns into `RequestError::RetryAfter`). A failed call has
//!   no side effect but is counted by [`FakeTelegram::calls`].
//! * **Rate limits (off by default).** [`FakeTelegram::set_rate_limits`] makes the fake refuse,
//!   with `429 Too Many Requests: retry after N`, a post (a `send*` method other than
//!   `sendChatAction`) beyond `per_chat` posts in any `chat_window` into one chat, or beyond
//!   `per_bot` posts in any `bot_window` in all (Telegram: about 20 a minute in a group, 30 a
//!   second per bot). Windows slide over the arrival times of the accepted posts; refused posts
//!   do not count. [`FakeTelegram::rate_limited`] counts the 429s, [`FakeTelegram::post_log`]
//!   lists every post checked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// Maximum length of a message text, in UTF-16 code units, after entity parsing.
const MAX_TEXT_LEN: usize = 4096;
/// Maximum length of a media caption, in UTF-16 code units, after entity parsing.
const MAX_CAPTION_LEN: usize = 1024;
const MIB: u64 = 1024 * 1024;
/// Largest file (and, give or take the other fields, request) a bot may upload.
const UPLOAD_LIMIT: u64 = 50 * MIB;
/// Largest photo a bot may upload.
const PHOTO_UPLOAD_LIMIT: u64 = 10 * MIB;
/// Default largest file `getFile` lets a bot download.
const DEFAULT_DOWNLOAD_LIMIT: u64 = 20 * MIB;
/// Request bodies axum reads before the fake's own checks (which answer in Bot API form).
const MAX_REQUEST_BODY: usize = 256 * 1024 * 1024;
/// Longest side of the thumbnail size of a photo.
const THUMB_SIDE: u32 = 90;
/// Size assumed for a photo whose bytes are not a recognizable image.
const DEFAULT_PHOTO_SIZE: (u32, u32) = (800, 600);
/// Multipart text fields parsed as JSON (when they are valid JSON).
const STRUCTURED_PARAMS: &[&str] = &[
    "allowed_updates",
    "caption_entities",
    "commands",
    "entities",
    "link_preview_options",
    "media",
    "message_ids",
    "reaction",
    "reply_markup",
    "reply_parameters",
    "scope",
];
/// First update id handed out; real servers never start at 0 or 1.
const FIRST_UPDATE_ID: i64 = 100_000_001;
/// Description the real server uses when two `getUpdates` calls overlap.
const CONFLICT: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
/// Description the real server uses for an edit that changes nothing.
const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

/// A Telegram user, as registered with [`FakeTelegram::add_user`] (or the bot itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TgUser {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub is_bot: bool,
}

impl TgUser {
    /// The Bot API `User` object (for service messages a test builds: `new_chat_members`, ...).
    pub fn to_json(&self) -> Value {
        let mut user = json!({ "id": self.id, "is_bot": self.is_bot, "first_name": self.first_name });
        if let Some(last_name) = &self.last_name {
            user["last_name"] = json!(last_name);
        }
        if let Some(username) = &self.username {
            user["username"] = json!(username);
        }
        user
    }
}

/// One message the bot sent, as recorded by the fake.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    pub message_id: i32,
    pub chat_id: i64,
    /// The `text` parameter exactly as sent (HTML markup kept); for media
    /// messages the raw caption (empty without one).
    pub text: String,
    pub parse_mode: Option<String>,
    /// The message this one replies to, if the reply target was found.
    pub reply_to: Option<i32>,
    /// Whether the bot deleted this message afterwards.
    pub deleted: bool,
    /// The Bot API method that produced it (`"sendMessage"`, `"sendPhoto"`, ...).
    pub method: String,
    /// The text (or caption) as Telegram shows it (HTML tags stripped, entities decoded, trimmed).
    pub rendered_text: String,
    /// The entities (or caption entities) Telegram attached (parsed from HTML or passed explicitly).
    pub entities: Vec<Value>,
    pub disable_notification: bool,
    pub link_preview_options: Option<Value>,
    /// The `caption` parameter exactly as sent (media methods only).
    pub caption: Option<String>,
    /// The media file sent (media methods only).
    pub file: Option<SentFile>,
    /// The forum topic (`message_thread_id`) the message went to; `None` for the General topic
    /// and for chats that are no forum (even when Telegram gives a reply a reply-thread
    /// `message_thread_id` there).
    pub thread: Option<i32>,
    /// When the fake took it.
    pub at: std::time::Instant,
}

/// The file of a media message the bot sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SentFile {
    /// The Bot API field: `"photo"`, `"document"`, `"voice"`, `"audio"`,
    /// `"video"`, `"animation"`, `"sticker"` or `"video_note"`.
    pub field: String,
    /// The uploaded part's file name (or the stored one of a re-sent file).
    pub file_name: Option<String>,
    /// The MIME type Telegram attached (guessed from the file name, else the part's type).
    pub mime_type: Option<String>,
    /// The file's bytes (empty for a file sent by URL).
    pub bytes: Vec<u8>,
    /// The `duration` parameter (voice, audio, video, animation, video note).
    pub duration: Option<u32>,
    /// The file id Telegram gave the file (or the re-sent one).
    pub file_id: String,
    /// The URL, for a file sent as an `http(s)://` URL.
    pub url: Option<String>,
}

/// Handle on a running fake Bot API server. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct FakeTelegram {
    shared: Arc<Shared>,
}

struct Shared {
    token: String,
    addr: SocketAddr,
    state: Mutex<FakeState>,
    /// Woken whenever an update is queued (wakes long polls).
    updates_changed: Notify,
    /// Woken on every request handled and every test-side mutation (wakes `wait_*`).
    activity: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test must not turn every later request into a poison error.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChatType {
    Private,
    Group,
    Supergroup,
}

impl ChatType {
    fn as_str(self) -> &'static str {
        match self {
            ChatType::Private => "private",
            ChatType::Group => "group",
            ChatType::Supergroup => "supergroup",
        }
    }
}

struct StoredMessage {
    from: TgUser,
    date: i64,
    /// The text, or the caption of a media message.
    text: String,
    entities: Vec<Value>,
    /// Media fields merged into the `Message` object (`photo`, `document`, ...);
    /// `None` for a text message.
    media: Option<Map<String, Value>>,
    reply_to: Option<i32>,
    edit_date: Option<i64>,
    link_preview_options: Option<Value>,
    deleted: bool,
    /// Where it is: `message_thread_id` and `is_topic_message` (see [`Placement`]).
    place: Placement,
    /// A service message (`inject_service`, topic creation and edits): no text, seen by bots in
    /// privacy mode, and, for the kinds in `OWN_SERVICE`, by the bot that caused it.
    service: bool,
}

impl StoredMessage {
    /// A service message from `from`: no text, its one field `kind` (`forum_topic_created`, ...).
    fn service(from: &TgUser, date: i64, kind: &str, value: Value, place: Placement) -> StoredMessage {
        StoredMessage {
            from: from.clone(),
            date,
            text: String::new(),
            entities: Vec::new(),
            media: Some(Map::from_iter([(kind.to_owned(), value)])),
            reply_to: None,
            edit_date: None,
            link_preview_options: None,
            deleted: false,
            place,
            service: true,
        }
    }
}

/// Where a message is in its chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Placement {
    /// `message_thread_id`: the forum topic, or in a supergroup the root of the reply chain.
    thread: Option<i32>,
    /// Whether `thread` is a forum topic (`is_topic_message`).
    in_topic: bool,
    /// Whether the reply target is in another topic (shown as `external_reply`).
    external_reply: bool,
}

impl Placement {
    /// The forum topic, if the message is in one.
    fn topic(self) -> Option<i32> {
        self.thread.filter(|_| self.in_topic)
    }
}

/// A forum topic ([`FakeTelegram::create_topic`], `createForumTopic`); its id is the
/// `message_id` of its `forum_topic_created` service message.
struct Topic {
    name: String,
    icon_custom_emoji_id: Option<String>,
    /// Who created it: a bot may rename its own topics without `can_manage_topics`.
    creator: i64,
}

struct Chat {
    id: i64,
    kind: ChatType,
    title: Option<String>,
    /// The other party of a private chat.
    peer: Option<TgUser>,
    next_message_id: i32,
    messages: BTreeMap<i32, StoredMessage>,
    pinned: Vec<i32>,
    /// The description (`getChat`; `setChatDescription`).
    description: Option<String>,
    /// File id of the chat photo (`getChat`; `setChatPhoto`, `deleteChatPhoto`).
    photo: Option<String>,
    /// A supergroup with topics enabled ([`FakeTelegram::add_forum`]).
    is_forum: bool,
    /// The forum's topics by `message_thread_id` (the General topic is not listed).
    topics: BTreeMap<i32, Topic>,
}

impl Chat {
    fn new(id: i64, kind: ChatType, title: Option<String>, peer: Option<TgUser>) -> Chat {
        Chat {
            id,
            kind,
            title,
            peer,
            next_message_id: 1,
            messages: BTreeMap::new(),
            pinned: Vec::new(),
            description: None,
            photo: None,
            is_forum: false,
            topics: BTreeMap::new(),
        }
    }

    /// The Bot API `Chat` object embedded in messages.
    fn to_json(&self) -> Value {
        let mut chat = json!({ "id": self.id, "type": self.kind.as_str() });
        if let Some(title) = &self.title {
            chat["title"] = json!(title);
        }
        if self.is_forum {
            chat["is_forum"] = json!(true);
        }
        if let Some(peer) = &self.peer {
            chat["first_name"] = json!(peer.first_name);
            if let Some(last_name) = &peer.last_name {
                chat["last_name"] = json!(last_name);
            }
            if let Some(username) = &peer.username {
                chat["username"] = json!(username);
            }
        }
        chat
    }

    /// The Bot API `ChatFullInfo` object returned by `getChat`.
    fn full_info_json(&self, files: &HashMap<String, StoredFile>) -> Value {
        let mut chat = self.to_json();
        if let Some(description) = &self.description {
            chat["description"] = json!(description);
        }
        if let Some(file) = self.photo.as_ref().and_then(|id| files.get(id)) {
            chat["photo"] = json!({
                "small_file_id": file.file_id, "small_file_unique_id": file.file_unique_id,
                "big_file_id": file.file_id, "big_file_unique_id": file.file_unique_id,
            });
        }
        chat["accent_color_id"] = json!(0);
        chat["max_reaction_count"] = json!(11);
        chat["accepted_gift_types"] = json!({
            "unlimited_gifts": false,
            "limited_gifts": false,
            "unique_gifts": false,
            "premium_subscription": false,
        });
        if let Some(&pinned) = self.pinned.last()
            && let Some(message) = self.message_json(pinned, false)
        {
            chat["pinned_message"] = message;
        }
        chat
    }

    fn alloc_message_id(&mut self) -> i32 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    fn live(&self, message_id: i32) -> Option<&StoredMessage> {
        self.messages.get(&message_id).filter(|m| !m.deleted)
    }

    /// The forum topic a live message is in (`None` for the General topic and outside forums).
    fn topic_of(&self, message_id: i32) -> Option<i32> {
        self.live(message_id)
            .filter(|m| m.place.in_topic)
            .and_then(|m| m.place.thread)
    }

    /// Checks a `message_thread_id` parameter as the Bot API server does (`getMessage` on it,
    /// then its own `message_thread_id` must be itself and a forum topic).
    fn check_thread(&self, thread: i64) -> Result<i32, ApiError> {
        let not_found = || ApiError::bad_request("message thread not found");
        let id = i32::try_from(thread).map_err(|_| not_found())?;
        if self.topic_of(id) == Some(id) {
            return Ok(id);
        }
        let roots_reply_thread = self.kind == ChatType::Supergroup
            && self.live(id).is_some()
            && self
                .messages
                .values()
                .any(|m| !m.deleted && !m.place.in_topic && m.place.thread == Some(id));
        if roots_reply_thread {
            Err(ApiError::bad_request("message thread is not a forum topic thread"))
        } else {
            Err(not_found())
        }
    }

    /// Where a new message goes: into topic `thread` (already checked) if given, else where its
    /// reply target is (a topic, or in a supergroup the target's reply chain), else nowhere in
    /// particular (the General topic).
    fn place(&self, thread: Option<i32>, reply_to: Option<i32>) -> Placement {
        match (thread, reply_to) {
            (Some(topic), reply_to) => Placement {
                thread: Some(topic),
                in_topic: true,
                external_reply: reply_to.is_some_and(|r| self.topic_of(r) != Some(topic)),
            },
            (None, Some(r)) => match self.topic_of(r) {
                Some(topic) => Placement {
                    thread: Some(topic),
                    in_topic: true,
                    external_reply: false,
                },
                None if self.kind == ChatType::Supergroup => Placement {
                    thread: Some(self.live(r).and_then(|m| m.place.thread).unwrap_or(r)),
                    in_topic: false,
                    external_reply: false,
                },
                None => Placement::default(),
            },
            (None, None) => Placement::default(),
        }
    }

    /// The `ExternalReplyInfo` of a reply to `message_id` from another topic: origin, chat and
    /// message id, plus the target's media fields (a text has none, as in the real API).
    fn external_reply_json(&self, message_id: i32) -> Option<Value> {
        let target = self.live(message_id)?;
        let mut info = json!({
            "origin": { "type": "user", "date": target.date, "sender_user": target.from.to_json() },
            "chat": self.to_json(),
            "message_id": message_id,
        });
        if let Some(media) = target.media.as_ref().filter(|_| !target.service) {
            for (key, value) in media {
                info[key] = value.clone();
            }
        }
        if let Some(options) = &target.link_preview_options {
            info["link_preview_options"] = options.clone();
        }
        Some(info)
    }

    /// The Bot API `Message` object; `reply_to_message` is included (one level
    /// deep, as Telegram does) when `with_reply` is set and the target still exists.
    /// A message in a topic that replies to nothing in it shows the topic's creation message
    /// there, as the Bot API server adds it (`get_same_chat_reply_to_message_id`).
    fn message_json(&self, message_id: i32, with_reply: bool) -> Option<Value> {
        let message = self.live(message_id)?;
        let mut json = json!({
            "message_id": message_id,
            "from": message.from.to_json(),
            "chat": self.to_json(),
            "date": message.date,
        });
        if let Some(thread) = message.place.thread {
            json["message_thread_id"] = json!(thread);
        }
        if message.place.in_topic {
            json["is_topic_message"] = json!(true);
        }
        let (text_key, entities_key) = match &message.media {
            None => ("text", "entities"),
            Some(media) => {
                for (key, value) in media {
                    json[key] = value.clone();
                }
                ("caption", "caption_entities")
            }
        };
        if message.media.is_none() || !message.text.is_empty() {
            json[text_key] = json!(message.text);
        }
        if !message.entities.is_empty() {
            json[entities_key] = Value::Array(message.entities.clone());
        }
        if let Some(edit_date) = message.edit_date {
            json["edit_date"] = json!(edit_date);
        }
        if let Some(options) = &message.link_preview_options {
            json["link_preview_options"] = options.clone();
        }
        if with_reply {
            let implicit = message.place.thread.filter(|&thread| thread < message_id);
            let same_chat_reply = match message.reply_to {
                Some(target) if !message.place.external_reply => Some(target),
                _ => implicit,
            };
            if let Some(reply) = same_chat_reply.and_then(|id| self.message_json(id, false)) {
                json["reply_to_message"] = reply;
            }
            if message.place.external_reply
                && let Some(info) = message.reply_to.and_then(|id| self.external_reply_json(id))
            {
                json["external_reply"] = info;
            }
        }
        Some(json)
    }
}

/// An error answer, with the real server's status code and description.
#[derive(Clone, Debug)]
struct ApiError {
    code: u16,
    description: String,
    retry_after: Option<u32>,
    /// `parameters.migrate_to_chat_id`: the group became this supergroup.
    migrate_to_chat_id: Option<i64>,
}

impl ApiError {
    fn new(code: u16, description: impl Into<String>) -> ApiError {
        ApiError {
            code,
            description: description.into(),
            retry_after: None,
            migrate_to_chat_id: None,
        }
    }

    /// What any request naming a group that became a supergroup gets (see
    /// [`FakeTelegram::upgrade_group`]).
    fn upgraded(to: i64) -> ApiError {
        ApiError {
            migrate_to_chat_id: Some(to),
            ..ApiError::bad_request("group chat was upgraded to a supergroup chat")
        }
    }

    fn bad_request(what: impl AsRef<str>) -> ApiError {
        ApiError::new(400, format!("Bad Request: {}", what.as_ref()))
    }

    fn not_found() -> ApiError {
        ApiError::new(404, "Not Found")
    }

    fn too_large() -> ApiError {
        ApiError::new(413, "Request Entity Too Large")
    }

    fn chat_not_found() -> ApiError {
        ApiError::bad_request("chat not found")
    }

    /// The error an injected fault produces (see [`FakeTelegram::fail_next`]).
    fn injected(code: u16, retry_after: Option<u32>) -> ApiError {
        let description = match (code, retry_after) {
            (429, Some(secs)) => format!("Too Many Requests: retry after {secs}"),
            (429, None) => "Too Many Requests".to_owned(),
            (400, _) => "Bad Request: injected failure".to_owned(),
            (401, _) => "Unauthorized".to_owned(),
            (403, _) => "Forbidden: bot was kicked from the supergroup chat".to_owned(),
            (404, _) => "Not Found".to_owned(),
            (409, _) => CONFLICT.to_owned(),
            (500, _) => "Internal Server Error".to_owned(),
            (502, _) => "Bad Gateway".to_owned(),
            (code, _) => format!("Injected error {code}"),
        };
        ApiError {
            code,
            description,
            retry_after,
            migrate_to_chat_id: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "ok": false, "error_code": self.code, "description": self.description });
        if let Some(secs) = self.retry_after {
            body["parameters"] = json!({ "retry_after": secs });
        }
        if let Some(to) = self.migrate_to_chat_id {
            body["parameters"] = json!({ "migrate_to_chat_id": to });
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(body)).into_response()
    }
}

type ApiResult = Result<Value, ApiError>;

/// A file part of a `multipart/form-data` request.
#[derive(Clone, Debug)]
struct Upload {
    /// The part's `filename` (`None` if empty).
    file_name: Option<String>,
    /// The part's `Content-Type`, if any.
    content_type: Option<String>,
    bytes: Bytes,
}

/// Request parameters merged from the query string and the body. Values from
/// query strings and form bodies are strings; JSON bodies keep their types.
struct Params {
    fields: Map<String, Value>,
    /// File parts of a multipart body, by part name.
    files: HashMap<String, Upload>,
}

impl Params {
    fn parse(headers: &HeaderMap, query: Option<&str>, body: &Bytes) -> Result<Params, ApiError> {
        let mut params = Params {
            fields: Map::new(),
            files: HashMap::new(),
        };
        if let Some(query) = query {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                params
                    .fields
                    .insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
        if body.len() as u64 > UPLOAD_LIMIT + 64 * 1024 {
            return Err(ApiError::too_large());
        }
        let raw_content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let content_type = raw_content_type.to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            params.parse_multipart(raw_content_type, body)?;
        } else if content_type.starts_with("application/json") {
            if !body.is_empty() {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(fields)) => params.fields.extend(fields),
                    _ => return Err(ApiError::bad_request("can't parse JSON object")),
                }
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            for (key, value) in url::form_urlencoded::parse(body) {
                params
                    .fields
                    .insert(key.into_owned(), Value::String(value.into_owned()));
            }
        } else if !body.is_empty() {
            return Err(ApiError::bad_request(format!(
                "unsupported Content-Type \"{content_type}\""
            )));
        }
        Ok(params)
    }

    /// Parses a `multipart/form-data` body (RFC 7578): parts with a `filename`
    /// become [`Upload`]s, the others text parameters.
    fn parse_multipart(&mut self, content_type: &str, body: &Bytes) -> Result<(), ApiError> {
        let malformed = || ApiError::bad_request("can't parse multipart/form-data request");
        let boundary = header_params(content_type)
            .into_iter()
            .find(|(key, _)| key == "boundary")
            .map(|(_, value)| value)
            .filter(|b| !b.is_empty())
            .ok_or_else(malformed)?;
        let delimiter = format!("--{boundary}").into_bytes();
        let next_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
        let mut pos = find(body, &delimiter, 0).ok_or_else(malformed)? + delimiter.len();
        loop {
            if body[pos..].starts_with(b"--") {
                return Ok(());
            }
            // Transport padding, then the CRLF ending the delimiter line.
            while matches!(body.get(pos), Some(b' ' | b'\t')) {
                pos += 1;
            }
            if !body[pos..].starts_with(b"\r\n") {
                return Err(malformed());
            }
            pos += 2;
            let headers_end = find(body, b"\r\n\r\n", pos).ok_or_else(malformed)?;
            let head = String::from_utf8_lossy(&body[pos..headers_end]).into_owned();
            let content_start = headers_end + 4;
            let content_end = find(body, &next_delimiter, content_start).ok_or_else(malformed)?;
            pos = content_end + next_delimiter.len();

            let mut disposition = None;
            let mut part_type = None;
            for line in head.split("\r\n") {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-disposition" => disposition = Some(header_params(value)),
                    "content-type" => part_type = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
            let disposition = disposition.ok_or_else(malformed)?;
            let param = |key: &str| disposition.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let name = param("name").ok_or_else(malformed)?;
            let content = body.slice(content_start..content_end);
            if let Some(file_name) = param("filename") {
                if content.len() as u64 > UPLOAD_LIMIT {
                    return Err(ApiError::too_large());
                }
                let upload = Upload {
                    file_name: Some(file_name).filter(|n| !n.is_empty()),
                    content_type: part_type,
                    bytes: content,
                };
                self.files.insert(name, upload);
            } else {
                let text = String::from_utf8(content.to_vec())
                    .map_err(|_| ApiError::bad_request("strings must be encoded in UTF-8"))?;
                let value = STRUCTURED_PARAMS
                    .contains(&name.as_str())
                    .then(|| serde_json::from_str(&text).ok())
                    .flatten()
                    .unwrap_or(Value::String(text));
                self.fields.insert(name, value);
            }
        }
    }

    /// The parameters as recorded for [`FakeTelegram::requests`]: file parts
    /// appear as `{"file_name": .., "mime_type": .., "size": N}`.
    fn recorded(&self) -> Value {
        let mut fields = self.fields.clone();
        for (name, upload) in &self.files {
            fields.insert(
                name.clone(),
                json!({
                    "file_name": upload.file_name,
                    "mime_type": upload.content_type,
                    "size": upload.bytes.len(),
                }),
            );
        }
        Value::Object(fields)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let invalid = || ApiError::bad_request(format!("invalid {key} specified"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1"),
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            _ => false,
        }
    }

    /// A JSON-serialized parameter: a JSON string in form encoding, a value in JSON bodies.
    fn structured(&self, key: &str) -> Result<Option<Value>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("can't parse {key} JSON object"))),
            Some(other) => Ok(Some(other.clone())),
        }
    }

    fn chat_id(&self) -> Result<i64, ApiError> {
        match self.get("chat_id") {
            None => Err(ApiError::bad_request("chat_id is empty")),
            // `@username` targets: no registered chat has a public username.
            Some(Value::String(s)) if s.starts_with('@') => Err(ApiError::chat_not_found()),
            Some(_) => self
                .int("chat_id")?
                .ok_or_else(|| ApiError::bad_request("chat_id is empty")),
        }
    }

    fn message_id(&self) -> Result<i32, ApiError> {
        let id = self
            .int("message_id")?
            .ok_or_else(|| ApiError::bad_request("message identifier is not specified"))?;
        i32::try_from(id).map_err(|_| ApiError::bad_request("MESSAGE_ID_INVALID"))
    }

    fn user_id(&self) -> Result<i64, ApiError> {
        self.int("user_id")?
            .ok_or_else(|| ApiError::bad_request("user_id is empty"))
    }
}

struct FakeState {
    bot: TgUser,
    chats: BTreeMap<i64, Chat>,
    /// Groups that became supergroups: old chat id -> new ([`FakeTelegram::upgrade_group`]).
    upgraded: HashMap<i64, i64>,
    users: HashMap<i64, TgUser>,
    next_update_id: i64,
    /// Unconfirmed updates, oldest first.
    updates: VecDeque<Value>,
    /// The persisted `allowed_updates` setting; `None` or empty means the default set.
    allowed_updates: Option<Vec<String>>,
    poll_in_flight: bool,
    /// Calls per lower-cased method name, including failed ones.
    calls: HashMap<String, usize>,
    /// (lower-cased method, parameters) of every call, in order.
    requests: Vec<(String, Value)>,
    /// Pending injected faults per lower-cased method name.
    faults: HashMap<String, VecDeque<ApiError>>,
    /// Per lower-cased method: the next call is carried out, then its answer waits for the
    /// semaphore (see `FakeTelegram::hold_next_answer`).
    holds: HashMap<String, Arc<tokio::sync::Semaphore>>,
    /// Per lower-cased method: how many of the next calls are carried out and then answered
    /// with a connection cut mid-body (see `FakeTelegram::lose_next_answers`).
    lost_answers: HashMap<String, usize>,
    sent: Vec<SentMessage>,
    /// (chat_id, message_id, raw new text) of every successful `editMessageText`.
    edits: Vec<(i64, i32, String)>,
    /// (chat_id, message_id) of every message the bot deleted.
    deletions: Vec<(i64, i32)>,
    /// (chat_id, message_id, reaction list) of every `setMessageReaction`.
    reactions: Vec<(i64, i32, Value)>,
    commands: Value,
    /// Every known file, by file id.
    files: HashMap<String, StoredFile>,
    next_file: u64,
    /// Largest file `getFile` accepts, in bytes.
    download_limit: u64,
    /// File ids of the sizes (smallest first) of each user's profile photo.
    profile_photos: HashMap<i64, Vec<String>>,
    /// Bots with their own token ([`FakeTelegram::add_bot`]); while one of them is served, its
    /// user, queue and `allowed_updates` are swapped into `bot`, `updates`, `allowed_updates`.
    accounts: Vec<BotAccount>,
    /// Per bot id: privacy mode, Bot-to-Bot Communication Mode, admin rights.
    bot_settings: HashMap<i64, BotSettings>,
    /// How far the fake's clock is ahead of the real one ([`FakeTelegram::advance_clock`]).
    clock_offset: Duration,
    /// When each queued update expires (fake unix time), by update id.
    update_expiry: HashMap<i64, i64>,
    /// Updates dropped unconfirmed after their lifetime ([`FakeTelegram::expired_updates`]).
    expired: usize,
    /// Messages a request posted besides its sends (topic service messages), to show the other
    /// bots once the request is served.
    posted: Vec<(i64, i32)>,
    /// Telegram's rate limits, when switched on ([`FakeTelegram::set_rate_limits`]).
    rate_limits: Option<RateLimits>,
    /// Every post checked against `rate_limits`: (chat, arrival, accepted).
    post_log: Vec<(i64, std::time::Instant, bool)>,
    /// Posts refused with 429 by `rate_limits`.
    rate_limited: usize,
}

/// Telegram's flood limits as the fake enforces them (see [`FakeTelegram::set_rate_limits`]).
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Posts into one chat in any `chat_window` (Telegram: about 20 a minute in a group).
    pub per_chat: usize,
    pub chat_window: Duration,
    /// Posts of the bot in any `bot_window` (Telegram: about 30 a second).
    pub per_bot: usize,
    pub bot_window: Duration,
}

impl RateLimits {
    /// Telegram's documented limits: 20 posts a minute per group, 30 a second per bot.
    pub fn telegram() -> RateLimits {
        RateLimits {
            per_chat: 20,
            chat_window: Duration::from_secs(60),
            per_bot: 30,
            bot_window: Duration::from_secs(1),
        }
    }
}

/// Another polling bot in the same fake Telegram (see [`FakeTelegram::add_bot`]).
struct BotAccount {
    token: String,
    user: TgUser,
    updates: VecDeque<Value>,
    allowed_updates: Option<Vec<String>>,
    poll_in_flight: bool,
}

/// What @BotFather and the group's admins set for a bot (default: privacy mode off, the
/// Bot-to-Bot Communication Mode off, admin of every group).
#[derive(Clone, Default)]
struct BotSettings {
    privacy: bool,
    bot_to_bot: bool,
    not_admin_in: HashSet<i64>,
    /// Chats where the bot, though an admin, lacks `can_manage_topics` (default: it has it in
    /// forums).
    no_topic_rights_in: HashSet<i64>,
}

/// A file known to the fake: uploaded or sent by URL by the bot, injected,
/// added with [`FakeTelegram::add_file`], or a profile photo.
struct StoredFile {
    file_id: String,
    file_unique_id: String,
    file_path: String,
    /// The content (empty for a URL-only file).
    bytes: Bytes,
    /// The URL of a file the bot sent by URL (never fetched).
    url: Option<String>,
    file_name: Option<String>,
    mime_type: Option<String>,
    /// Width and height of an image (photos, stickers), when known.
    dims: Option<(u32, u32)>,
    /// File id of the thumbnail size of a photo, once created.
    thumb: Option<String>,
}

impl StoredFile {
    /// `file_id`, `file_unique_id` and (unless only a URL is known) `file_size`.
    fn meta_json(&self) -> Value {
        let mut meta = json!({ "file_id": self.file_id, "file_unique_id": self.file_unique_id });
        if self.url.is_none() {
            meta["file_size"] = json!(self.bytes.len());
        }
        meta
    }

    /// A `PhotoSize` object for this file at `width`x`height`.
    fn photo_size_json(&self, (width, height): (u32, u32)) -> Value {
        let mut size = self.meta_json();
        size["width"] = json!(width);
        size["height"] = json!(height);
        size
    }
}

/// The media kinds the bot can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediaKind {
    Photo,
    Document,
    Voice,
    Audio,
    Video,
    Animation,
    Sticker,
    VideoNote,
}

impl MediaKind {
    const ALL: [MediaKind; 8] = [
        MediaKind::Photo,
        MediaKind::Document,
        MediaKind::Voice,
        MediaKind::Audio,
        MediaKind::Video,
        MediaKind::Animation,
        MediaKind::Sticker,
        MediaKind::VideoNote,
    ];

    /// The kind sent by a (lower-cased) method name.
    fn for_method(method: &str) -> Option<MediaKind> {
        MediaKind::ALL
            .into_iter()
            .find(|kind| kind.method().eq_ignore_ascii_case(method))
    }

    fn method(self) -> &'static str {
        match self {
            MediaKind::Photo => "sendPhoto",
            MediaKind::Document => "sendDocument",
            MediaKind::Voice => "sendVoice",
            MediaKind::Audio => "sendAudio",
            MediaKind::Video => "sendVideo",
            MediaKind::Animation => "sendAnimation",
            MediaKind::Sticker => "sendSticker",
            MediaKind::VideoNote => "sendVideoNote",
        }
    }

    /// The parameter carrying the file, also the `Message` field.
    fn field(self) -> &'static str {
        match self {
            MediaKind::Photo => "photo",
            MediaKind::Document => "document",
            MediaKind::Voice => "voice",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Animation => "animation",
            MediaKind::Sticker => "sticker",
            MediaKind::VideoNote => "video_note",
        }
    }

    /// The start of real file ids of this kind.
    fn id_prefix(self) -> &'static str {
        match self {
            MediaKind::Photo => "AgAC",
            MediaKind::Document => "BQAC",
            MediaKind::Voice => "AwAC",
            MediaKind::Audio => "CQAC",
            MediaKind::Video => "BAAC",
            MediaKind::Animation => "CgAC",
            MediaKind::Sticker => "CAAC",
            MediaKind::VideoNote => "DQAC",
        }
    }

    /// The directory of `file_path`s of this kind, as on Telegram's servers.
    fn dir(self) -> &'static str {
        match self {
            MediaKind::Photo => "photos",
            MediaKind::Document => "documents",
            MediaKind::Voice => "voice",
            MediaKind::Audio => "music",
            MediaKind::Video => "videos",
            MediaKind::Animation => "animations",
            MediaKind::Sticker => "stickers",
            MediaKind::VideoNote => "video_notes",
        }
    }

    /// The extension Telegram gives files of this kind without one.
    fn default_extension(self) -> Option<&'static str> {
        match self {
            MediaKind::Photo => Some("jpg"),
            MediaKind::Document => None,
            MediaKind::Voice => Some("oga"),
            MediaKind::Audio => Some("mp3"),
            MediaKind::Video | MediaKind::Animation | MediaKind::VideoNote => Some("mp4"),
            MediaKind::Sticker => Some("webp"),
        }
    }

    /// The MIME type assumed when neither the file name nor the part tells.
    fn default_mime(self) -> &'static str {
        match self {
            MediaKind::Photo => "image/jpeg",
            MediaKind::Document => "application/octet-stream",
            MediaKind::Voice => "audio/ogg",
            MediaKind::Audio => "audio/mpeg",
            MediaKind::Video | MediaKind::Animation | MediaKind::VideoNote => "video/mp4",
            MediaKind::Sticker => "image/webp",
        }
    }
}

/// Whether an update of `kind` is created under an `allowed_updates` setting.
fn allowed_by(list: &Option<Vec<String>>, kind: &str) -> bool {
    match list {
        Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
        _ => !matches!(kind, "chat_member" | "message_reaction" | "message_reaction_count"),
    }
}

/// Seconds an update waits unconfirmed before the server drops it, by kind: the Bot API server
/// (Client.cpp `add_update` calls) keeps callback and shipping/pre-checkout queries 150 s, inline
/// queries 30 s, chosen inline results 600 s, and everything else (messages from their date,
/// edits from their edit date) 24 hours.
fn update_lifetime(kind: &str) -> i64 {
    match kind {
        "callback_query" | "shipping_query" | "pre_checkout_query" => 150,
        "inline_query" => 30,
        "chosen_inline_result" => 600,
        _ => 86_400,
    }
}

/// Service messages a bot gets although it caused them (Client.cpp `need_skip_update_message`
/// skips every other outgoing message).
const OWN_SERVICE: &[&str] = &[
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "left_chat_member",
    "pinned_message",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "general_forum_topic_hidden",
    "general_forum_topic_unhidden",
];

/// The icon colors Telegram allows for a topic; a topic created without one gets the first
/// (a guess: the real server picks one itself).
const TOPIC_ICON_COLORS: [i64; 6] = [0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F];

/// Longest topic name; longer names are cut (TDLib `clean_name`).
const MAX_TOPIC_NAME: usize = 128;

/// A topic name as TDLib cleans it: trimmed and cut to 128 characters.
fn clean_topic_name(name: &str) -> String {
    name.trim()
        .chars()
        .take(MAX_TOPIC_NAME)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

impl FakeState {
    /// The fake's unix time: the real time plus [`FakeTelegram::advance_clock`]'s offset.
    fn now(&self) -> i64 {
        (SystemTime::now() + self.clock_offset)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// Drops every queued update whose lifetime has passed without `getUpdates` confirming it,
    /// as the real server does ("they will not be kept longer than 24 hours").
    fn expire_updates(&mut self) {
        let now = self.now();
        let expiry = &self.update_expiry;
        let mut dropped = 0;
        let mut keep = |update: &Value| {
            let expires = update["update_id"].as_i64().and_then(|id| expiry.get(&id));
            match expires {
                Some(&at) if at <= now => {
                    dropped += 1;
                    false
                }
                _ => true,
            }
        };
        self.updates.retain(&mut keep);
        for account in &mut self.accounts {
            account.updates.retain(&mut keep);
        }
        self.expired += dropped;
        self.update_expiry.retain(|_, at| *at > now);
    }

    /// A queued update `{"update_id": .., kind: payload}` with a fresh id, its expiry recorded.
    fn new_update(&mut self, kind: &str, payload: Value) -> (i64, Value) {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        let expires = self.now() + update_lifetime(kind);
        self.update_expiry.insert(update_id, expires);
        let mut update = json!({ "update_id": update_id });
        update[kind] = payload;
        (update_id, update)
    }

    /// Whether bot `bot_id` may create and edit any topic of `chat_id` (an admin with
    /// `can_manage_topics`).
    fn can_manage_topics(&self, bot_id: i64, chat_id: i64) -> bool {
        let settings = self.settings(bot_id);
        let forum = self.chats.get(&chat_id).is_some_and(|c| c.is_forum);
        forum && !settings.not_admin_in.contains(&chat_id) && !settings.no_topic_rights_in.contains(&chat_id)
    }

    fn chat(&self, chat_id: i64) -> Result<&Chat, ApiError> {
        self.chats.get(&chat_id).ok_or_else(ApiError::chat_not_found)
    }

    fn chat_mut(&mut self, chat_id: i64) -> Result<&mut Chat, ApiError> {
        self.chats.get_mut(&chat_id).ok_or_else(ApiError::chat_not_found)
    }

    /// Whether an update of `kind` is created under the current `allowed_updates`.
    fn allows(&self, kind: &str) -> bool {
        allowed_by(&self.allowed_updates, kind)
    }

    /// The update queue, `allowed_updates` and poll flag of the primary bot (`None`) or an account.
    fn queue(&mut self, who: Option<usize>) -> (&mut VecDeque<Value>, &mut Option<Vec<String>>, &mut bool) {
        match who {
            None => (&mut self.updates, &mut self.allowed_updates, &mut self.poll_in_flight),
            Some(i) => {
                let a = &mut self.accounts[i];
                (&mut a.updates, &mut a.allowed_updates, &mut a.poll_in_flight)
            }
        }
    }

    /// Queues an update for one bot (see `push_update`).
    fn push_update_for(&mut self, who: Option<usize>, kind: &str, payload: Value) -> Option<i64> {
        let Some(i) = who else {
            return self.push_update(kind, payload);
        };
        if !allowed_by(&self.accounts[i].allowed_updates, kind) {
            return None;
        }
        let (update_id, update) = self.new_update(kind, payload);
        self.accounts[i].updates.push_back(update);
        Some(update_id)
    }

    fn settings(&self, bot_id: i64) -> BotSettings {
        self.bot_settings.get(&bot_id).cloned().unwrap_or_default()
    }

    fn account_user(&self, who: Option<usize>) -> &TgUser {
        who.map_or(&self.bot, |i| &self.accounts[i].user)
    }

    /// Whether Telegram shows message `message_id` of `chat` to bot `who` (see the module doc).
    fn sees(&self, who: Option<usize>, chat: &Chat, message_id: i32) -> bool {
        let me = self.account_user(who);
        let Some(m) = chat.live(message_id) else {
            return false;
        };
        if m.from.id == me.id {
            return m.service
                && m.media
                    .as_ref()
                    .is_some_and(|fields| OWN_SERVICE.iter().any(|key| fields.contains_key(*key)));
        }
        if chat.kind == ChatType::Private {
            return who.is_none();
        }
        let mine = self.settings(me.id);
        let admin = !mine.not_admin_in.contains(&chat.id);
        let username = me.username.clone().unwrap_or_default().to_lowercase();
        let text = m.text.to_lowercase();
        let command_to_me = text
            .split_whitespace()
            .any(|w| w.starts_with('/') && w.ends_with(&format!("@{username}")));
        let reply_to_me = m
            .reply_to
            .and_then(|r| chat.messages.get(&r))
            .is_some_and(|r| r.from.id == me.id);
        if m.from.is_bot {
            let theirs = self.settings(m.from.id);
            (mine.bot_to_bot && admin && !mine.privacy)
                || ((command_to_me || reply_to_me) && (mine.bot_to_bot || theirs.bot_to_bot))
        } else {
            m.service
                || !mine.privacy
                || admin
                || command_to_me
                || reply_to_me
                || text.contains(&format!("@{username}"))
        }
    }

    /// Queues `kind` (`message` or `edited_message`) of a stored message for every bot that
    /// sees it; the primary bot's update id, if it got one.
    fn deliver(&mut self, chat_id: i64, message_id: i32, kind: &str) -> Option<i64> {
        let chat = self.chats.get(&chat_id)?;
        let payload = chat.message_json(message_id, true)?;
        let who: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..self.accounts.len()).map(Some))
            .filter(|&who| self.sees(who, chat, message_id))
            .collect();
        let mut primary = None;
        for w in who {
            let id = self.push_update_for(w, kind, payload.clone());
            if w.is_none() {
                primary = id;
            }
        }
        primary
    }

    /// Serves a request as the primary bot (`None`) or an account, and shows what it posted to
    /// the other bots that see it.
    fn dispatch_as(&mut self, who: Option<usize>, method: &str, p: &Params) -> ApiResult {
        let before = self.sent.len();
        if let Some(i) = who {
            self.swap_account(i);
        }
        let result = self.dispatch(method, p);
        if let Some(i) = who {
            self.swap_account(i);
        }
        let mut posted: Vec<(i64, i32)> = self.sent[before..].iter().map(|s| (s.chat_id, s.message_id)).collect();
        posted.append(&mut self.posted);
        for (chat, id) in posted {
            self.deliver(chat, id, "message");
        }
        result
    }

    fn swap_account(&mut self, i: usize) {
        let a = &mut self.accounts[i];
        std::mem::swap(&mut self.bot, &mut a.user);
        std::mem::swap(&mut self.updates, &mut a.updates);
        std::mem::swap(&mut self.allowed_updates, &mut a.allowed_updates);
    }

    /// Queues an update unless `allowed_updates` filters it out; returns its id.
    fn push_update(&mut self, kind: &str, payload: Value) -> Option<i64> {
        if !self.allows(kind) {
            return None;
        }
        let (update_id, update) = self.new_update(kind, payload);
        self.updates.push_back(update);
        Some(update_id)
    }

    /// Forgets confirmed updates of bot `who`, per `getUpdates`'s `offset` semantics.
    fn confirm(&mut self, who: Option<usize>, offset: i64) {
        let updates = self.queue(who).0;
        if offset > 0 {
            updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while updates.len() > keep {
                updates.pop_front();
            }
        }
    }

    /// A post against [`RateLimits`], if they are on: logged, and refused with 429 when the chat
    /// or the bot has used its window.
    fn check_rate(&mut self, p: &Params) -> Result<(), ApiError> {
        let Some(limits) = self.rate_limits else {
            return Ok(());
        };
        let Ok(chat) = p.chat_id() else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let accepted = self.post_log.iter().rev().filter(|(_, _, ok)| *ok);
        let (mut in_chat, mut in_bot) = (Vec::new(), Vec::new());
        for (c, t, _) in accepted {
            let age = now.duration_since(*t);
            if age >= limits.chat_window.max(limits.bot_window) {
                break;
            }
            if age < limits.bot_window {
                in_bot.push(*t);
            }
            if *c == chat && age < limits.chat_window {
                in_chat.push(*t);
            }
        }
        // When the post that leaves the window first does so (the lists run newest first).
        let wait = if in_chat.len() >= limits.per_chat {
            Some(
                limits
                    .chat_window
                    .saturating_sub(now.duration_since(in_chat[limits.per_chat - 1])),
            )
        } else if in_bot.len() >= limits.per_bot {
            Some(
                limits
                    .bot_window
                    .saturating_sub(now.duration_since(in_bot[limits.per_bot - 1])),
            )
        } else {
            None
        };
        self.post_log.push((chat, now, wait.is_none()));
        match wait {
            None => Ok(()),
            Some(wait) => {
                self.rate_limited += 1;
                let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
                Err(ApiError::injected(429, Some(secs)))
            }
        }
    }

    fn dispatch(&mut self, method: &str, p: &Params) -> ApiResult {
        if let Some(&to) = p.chat_id().ok().and_then(|chat| self.upgraded.get(&chat)) {
            return Err(ApiError::upgraded(to));
        }
        if let Some(kind) = MediaKind::for_method(method) {
            return self.send_media(kind, p);
        }
        match method {
            "getme" => Ok(self.get_me()),
            "sendmessage" => self.send_message(p),
            "sendvenue" => self.send_venue(p),
            "sendpoll" => self.send_poll(p),
            "createforumtopic" => self.create_forum_topic(p),
            "editforumtopic" => self.edit_forum_topic(p),
            "editmessagetext" => self.edit_message_text(p),
            "editmessagecaption" => self.edit_message_caption(p),
            "getfile" => self.get_file(p),
            "deletemessage" => self.delete_message(p),
            "deletemessages" => self.delete_messages(p),
            "getchat" => Ok(self.chat(p.chat_id()?)?.full_info_json(&self.files)),
            "setchattitle" => {
                let title = p.string("title").unwrap_or_default();
                if title.trim().is_empty() {
                    return Err(ApiError::bad_request("chat title is empty"));
                }
                self.chat_mut(p.chat_id()?)?.title = Some(title);
                Ok(json!(true))
            }
            "setchatdescription" => {
                let description = p.string("description").filter(|d| !d.is_empty());
                self.chat_mut(p.chat_id()?)?.description = description;
                Ok(json!(true))
            }
            "setchatphoto" => {
                let chat_id = p.chat_id()?;
                self.chat(chat_id)?;
                // The part itself, or `attach://<part>` as teloxide sends it.
                let part = p
                    .string("photo")
                    .and_then(|v| v.strip_prefix("attach://").map(str::to_owned));
                let upload = p
                    .files
                    .get("photo")
                    .or_else(|| part.and_then(|part| p.files.get(&part)))
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request("there is no photo in the request"))?;
                let mime = Some("image/jpeg".to_owned());
                let file = self.store_file(MediaKind::Photo, "photos", upload.bytes, None, mime);
                let id = file.file_id.clone();
                self.chat_mut(chat_id)?.photo = Some(id);
                Ok(json!(true))
            }
            "deletechatphoto" => {
                self.chat_mut(p.chat_id()?)?.photo = None;
                Ok(json!(true))
            }
            "getchatmember" => self.get_chat_member(p),
            "getchatadministrators" => {
                let chat_id = p.chat_id()?;
                self.chat(chat_id)?;
                Ok(json!([self.member_json(&self.bot.clone(), chat_id)]))
            }
            "getchatmembercount" => {
                let chat = self.chat(p.chat_id()?)?;
                let count = if chat.kind == ChatType::Private {
                    2
                } else {
                    self.users.len() + 1
                };
                Ok(json!(count))
            }
            "getuserprofilephotos" => self.get_user_profile_photos(p),
            "setmycommands" => {
                let commands = p
                    .structured("commands")?
                    .filter(Value::is_array)
                    .ok_or_else(|| ApiError::bad_request("parameter \"commands\" is required"))?;
                self.commands = commands;
                Ok(json!(true))
            }
            "getmycommands" => Ok(self.commands.clone()),
            "deletemycommands" => {
                self.commands = json!([]);
                Ok(json!(true))
            }
            "deletewebhook" => Ok(json!(true)),
            "getwebhookinfo" => {
                self.expire_updates();
                Ok(json!({
                    "url": "",
                    "has_custom_certificate": false,
                    "pending_update_count": self.updates.len(),
                }))
            }
            "pinchatmessage" => {
                let message_id = p.message_id()?;
                let chat = self.chat_mut(p.chat_id()?)?;
                if chat.live(message_id).is_none() {
                    return Err(ApiError::bad_request("message to pin not found"));
                }
                chat.pinned.retain(|&id| id != message_id);
                chat.pinned.push(message_id);
                Ok(json!(true))
            }
            "unpinchatmessage" => {
                let chat = self.chat_mut(p.chat_id()?)?;
                match p.int("message_id")? {
                    Some(id) => chat.pinned.retain(|&pinned| i64::from(pinned) != id),
                    None => {
                        chat.pinned.pop();
                    }
                }
                Ok(json!(true))
            }
            "unpinallchatmessages" => {
                self.chat_mut(p.chat_id()?)?.pinned.clear();
                Ok(json!(true))
            }
            "setmessagereaction" => {
                let chat_id = p.chat_id()?;
                let message_id = p.message_id()?;
                if self.chat(chat_id)?.live(message_id).is_none() {
                    return Err(ApiError::bad_request("MESSAGE_ID_INVALID"));
                }
                let reaction = p.structured("reaction")?.unwrap_or_else(|| json!([]));
                self.reactions.push((chat_id, message_id, reaction));
                Ok(json!(true))
            }
            "sendchataction" => {
                self.chat(p.chat_id()?)?;
                Ok(json!(true))
            }
            _ => Err(ApiError::not_found()),
        }
    }

    fn get_me(&self) -> Value {
        let mut me = self.bot.to_json();
        me["can_join_groups"] = json!(true);
        me["can_read_all_group_messages"] = json!(!self.settings(self.bot.id).privacy);
        me["supports_inline_queries"] = json!(false);
        me["can_connect_to_business"] = json!(false);
        me["has_main_web_app"] = json!(false);
        me
    }

    fn member_json(&self, user: &TgUser, chat_id: i64) -> Value {
        if user.id == self.bot.id {
            json!({
                "user": user.to_json(),
                "status": "administrator",
                "can_be_edited": false,
                "is_anonymous": false,
                "can_manage_chat": true,
                "can_delete_messages": true,
                "can_manage_video_chats": false,
                "can_restrict_members": false,
                "can_promote_members": false,
                "can_change_info": false,
                "can_invite_users": true,
                "can_post_stories": false,
                "can_edit_stories": false,
                "can_delete_stories": false,
                "can_pin_messages": true,
                "can_manage_topics": self.can_manage_topics(user.id, chat_id),
            })
        } else {
            json!({ "user": user.to_json(), "status": "member" })
        }
    }

    fn get_chat_member(&self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        self.chat(chat_id)?;
        let user_id = p.user_id()?;
        if self.settings(user_id).not_admin_in.contains(&chat_id) {
            let user = self.users.get(&user_id).unwrap_or(&self.bot);
            return Ok(json!({ "user": user.to_json(), "status": "member" }));
        }
        let user = if user_id == self.bot.id {
            self.bot.clone()
        } else {
            self.users
                .get(&user_id)
                .cloned()
                .ok_or_else(|| ApiError::bad_request("user not found"))?
        };
        Ok(self.member_json(&user, chat_id))
    }

    /// Resolves the reply target of a send: `Ok(None)` when there is none or
    /// it is missing and `allow_sending_without_reply` is set.
    fn reply_target(&self, chat: &Chat, p: &Params) -> Result<Option<i32>, ApiError> {
        let (target, allow_missing) = if let Some(rp) = p.structured("reply_parameters")? {
            let id = rp
                .get("message_id")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::bad_request("can't parse reply parameters: message_id is missing"))?;
            let other_chat = match rp.get("chat_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.trim().parse::<i64>().ok()),
                Some(other) => Some(other.as_i64()),
            };
            if let Some(other_chat) = other_chat
                && other_chat != Some(chat.id)
            {
                return Err(ApiError::bad_request(
                    "replies to other chats are not supported by this fake",
                ));
            }
            let allow = rp
                .get("allow_sending_without_reply")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (id, allow)
        } else if let Some(id) = p.int("reply_to_message_id")? {
            (id, p.flag("allow_sending_without_reply"))
        } else {
            return Ok(None);
        };
        let found = i32::try_from(target).ok().filter(|&id| chat.live(id).is_some());
        match found {
            Some(id) => Ok(Some(id)),
            None if allow_missing => Ok(None),
            None => Err(ApiError::bad_request("message to be replied not found")),
        }
    }

    /// Resolves where a send goes: its reply target (see `reply_target`), then its
    /// `message_thread_id` (0 or less meaning none, as in the Bot API server), which must name a
    /// topic of the chat (see `Chat::check_thread`).
    fn placement(&self, chat: &Chat, p: &Params) -> Result<(Option<i32>, Placement), ApiError> {
        let reply_to = self.reply_target(chat, p)?;
        let thread = match p.int("message_thread_id")? {
            Some(thread) if thread > 0 => Some(chat.check_thread(thread)?),
            _ => None,
        };
        Ok((reply_to, chat.place(thread, reply_to)))
    }

    fn send_message(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        let raw = p.string("text").unwrap_or_default();
        let parse_mode = p.string("parse_mode").filter(|m| !m.is_empty());
        let explicit_entities = p.structured("entities")?;
        let (text, entities) = render(&raw, parse_mode.as_deref(), explicit_entities)?;
        if text.is_empty() {
            return Err(ApiError::bad_request("message text is empty"));
        }
        if text.encode_utf16().count() > MAX_TEXT_LEN {
            return Err(ApiError::bad_request("message is too long"));
        }
        let link_preview_options = p.structured("link_preview_options")?;
        let (reply_to, place) = self.placement(self.chat(chat_id)?, p)?;
        let bot = self.bot.clone();
        let date = self.now();
        let chat = self.chat_mut(chat_id)?;
        let message_id = chat.alloc_message_id();
        chat.messages.insert(
            message_id,
            StoredMessage {
                from: bot,
                date,
                text: text.clone(),
                entities: entities.clone(),
                media: None,
                reply_to,
                edit_date: None,
                link_preview_options: link_preview_options.clone(),
                deleted: false,
                place,
                service: false,
            },
        );
        let result = chat.message_json(message_id, true).expect("message just stored");
        self.sent.push(SentMessage {
            message_id,
            chat_id,
            text: raw,
            parse_mode,
            reply_to,
            deleted: false,
            method: "sendMessage".to_owned(),
            rendered_text: text,
            entities,
            disable_notification: p.flag("disable_notification"),
            link_preview_options,
            caption: None,
            file: None,
            thread: place.topic(),
            at: std::time::Instant::now(),
        });
        Ok(result)
    }

    /// `sendVenue`: latitude and longitude in range, `title` and `address` required. Recorded
    /// with `rendered_text` "title\naddress" and the place in `entities` as `{"latitude", "longitude"}`.
    fn send_venue(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        let coord = |key: &str, max: f64| -> Result<f64, ApiError> {
            p.string(key)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|v| v.abs() <= max)
                .ok_or_else(|| ApiError::bad_request(format!("invalid {key} specified")))
        };
        let (latitude, longitude) = (coord("latitude", 90.0)?, coord("longitude", 180.0)?);
        let (Some(title), Some(address)) = (p.string("title"), p.string("address")) else {
            return Err(ApiError::bad_request("venue title and address must be specified"));
        };
        let place = json!({"latitude": latitude, "longitude": longitude});
        let venue = json!({"location": place, "title": title, "address": address});
        self.store_special(
            p,
            chat_id,
            "sendVenue",
            format!("{title}\n{address}"),
            vec![place],
            "venue",
            venue,
        )
    }

    /// `sendPoll`: question 1-300 characters, 2-10 options (`InputPollOption` objects or strings)
    /// of 1-100 characters each, as the Bot API documents. Recorded with `rendered_text`
    /// "question\noption\n..." and the options in `entities` as strings.
    fn send_poll(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        let question = p.string("question").unwrap_or_default();
        if !(1..=300).contains(&question.encode_utf16().count()) {
            return Err(ApiError::bad_request("poll question length must not exceed 300"));
        }
        let options: Vec<String> = p
            .structured("options")?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o.as_str().or(o["text"].as_str()).map(str::to_owned))
            .collect();
        if options.len() < 2 {
            return Err(ApiError::bad_request("poll must have at least 2 option"));
        }
        if options.len() > 10 {
            return Err(ApiError::bad_request("poll can't have more than 10 options"));
        }
        if options.iter().any(|o| !(1..=100).contains(&o.encode_utf16().count())) {
            return Err(ApiError::bad_request("poll options length must not exceed 100"));
        }
        let poll = json!({"id": format!("poll{}", self.sent.len()), "question": question,
            "options": options.iter().map(|o| json!({"text": o, "voter_count": 0})).collect::<Vec<_>>(),
            "total_voter_count": 0, "is_closed": false, "is_anonymous": p.get("is_anonymous").is_none_or(|_| p.flag("is_anonymous")),
            "type": "regular", "allows_multiple_answers": p.flag("allows_multiple_answers")});
        let summary = std::iter::once(question.clone())
            .chain(options.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        let entities = options.iter().map(|o| json!(o)).collect();
        self.store_special(p, chat_id, "sendPoll", summary, entities, "poll", poll)
    }

    /// Posts the `forum_topic_created` service message of a new topic of forum `chat_id` from
    /// `from` and registers the topic; returns its id (the service message's id).
    fn open_topic(&mut self, chat_id: i64, from: &TgUser, name: String, icon_color: i64, emoji: Option<String>) -> i32 {
        let date = self.now();
        let chat = self.chats.get_mut(&chat_id).expect("open_topic in a known chat");
        let id = chat.alloc_message_id();
        let mut created = json!({ "name": name, "icon_color": icon_color });
        if let Some(emoji) = &emoji {
            created["icon_custom_emoji_id"] = json!(emoji);
        }
        let place = Placement {
            thread: Some(id),
            in_topic: true,
            external_reply: false,
        };
        chat.messages.insert(
            id,
            StoredMessage::service(from, date, "forum_topic_created", created, place),
        );
        let topic = Topic {
            name,
            icon_custom_emoji_id: emoji,
            creator: from.id,
        };
        chat.topics.insert(id, topic);
        id
    }

    /// Posts a `forum_topic_edited` service message (`edited` holds `name` and/or
    /// `icon_custom_emoji_id`) in topic `thread` from `from`; returns its id.
    fn post_topic_edit(&mut self, chat_id: i64, from: &TgUser, thread: i32, edited: Value) -> i32 {
        let date = self.now();
        let chat = self.chats.get_mut(&chat_id).expect("post_topic_edit in a known chat");
        let id = chat.alloc_message_id();
        let place = chat.place(Some(thread), None);
        chat.messages.insert(
            id,
            StoredMessage::service(from, date, "forum_topic_edited", edited, place),
        );
        id
    }

    /// `createForumTopic`: in a forum (`the chat is not a forum`), by an admin with
    /// `can_manage_topics` (`not enough rights to create a topic`); the name is cleaned and cut to
    /// 128 characters (`title must be non-empty`). Posts the `forum_topic_created` message, which
    /// the bot gets as an update too, and answers a `ForumTopic`.
    fn create_forum_topic(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        if !self.chat(chat_id)?.is_forum {
            return Err(ApiError::bad_request("the chat is not a forum"));
        }
        if !self.can_manage_topics(self.bot.id, chat_id) {
            return Err(ApiError::bad_request("not enough rights to create a topic"));
        }
        let name = clean_topic_name(&p.string("name").unwrap_or_default());
        if name.is_empty() {
            return Err(ApiError::bad_request("title must be non-empty"));
        }
        let icon_color = match p.int("icon_color")? {
            None => TOPIC_ICON_COLORS[0],
            Some(color) if (0..=0xFF_FFFF).contains(&color) => color,
            Some(_) => return Err(ApiError::bad_request("invalid icon color specified")),
        };
        let emoji = p.string("icon_custom_emoji_id").filter(|e| !e.is_empty());
        let bot = self.bot.clone();
        let id = self.open_topic(chat_id, &bot, name.clone(), icon_color, emoji.clone());
        self.posted.push((chat_id, id));
        let mut topic = json!({ "message_thread_id": id, "name": name, "icon_color": icon_color });
        if let Some(emoji) = emoji {
            topic["icon_custom_emoji_id"] = json!(emoji);
        }
        Ok(topic)
    }

    /// `editForumTopic`: a topic of a forum (`invalid forum topic identifier specified` for an id
    /// of 0 or less, `TOPIC_ID_INVALID` for an unknown one), by an admin with `can_manage_topics`
    /// or the topic's creator (`not enough rights to edit the topic`). An empty or missing name
    /// keeps the old one; nothing to change does nothing; the same name and icon again is
    /// `TOPIC_NOT_MODIFIED`. Posts `forum_topic_edited`, which the bot gets as an update too.
    fn edit_forum_topic(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        let chat = self.chat(chat_id)?;
        if !chat.is_forum {
            return Err(ApiError::bad_request("the chat is not a forum"));
        }
        let thread = p.int("message_thread_id")?.unwrap_or(0);
        if thread <= 0 {
            return Err(ApiError::bad_request("invalid forum topic identifier specified"));
        }
        let topic = i32::try_from(thread)
            .ok()
            .and_then(|id| chat.topics.get(&id).map(|topic| (id, topic)))
            .filter(|(id, _)| chat.live(*id).is_some());
        let Some((thread, topic)) = topic else {
            return Err(ApiError::bad_request("TOPIC_ID_INVALID"));
        };
        if !self.can_manage_topics(self.bot.id, chat_id) && topic.creator != self.bot.id {
            return Err(ApiError::bad_request("not enough rights to edit the topic"));
        }
        let name = p
            .string("name")
            .map(|name| clean_topic_name(&name))
            .filter(|name| !name.is_empty());
        let emoji = p.string("icon_custom_emoji_id");
        if name.is_none() && emoji.is_none() {
            return Ok(json!(true));
        }
        let new_name = name.filter(|name| *name != topic.name);
        let current_emoji = topic.icon_custom_emoji_id.clone().unwrap_or_default();
        let new_emoji = emoji.filter(|emoji| *emoji != current_emoji);
        if new_name.is_none() && new_emoji.is_none() {
            return Err(ApiError::bad_request("TOPIC_NOT_MODIFIED"));
        }
        let mut edited = json!({});
        if let Some(name) = &new_name {
            edited["name"] = json!(name);
        }
        if let Some(emoji) = &new_emoji {
            edited["icon_custom_emoji_id"] = json!(emoji);
        }
        let topic = self
            .chat_mut(chat_id)?
            .topics
            .get_mut(&thread)
            .expect("topic found above");
        if let Some(name) = new_name {
            topic.name = name;
        }
        if let Some(emoji) = new_emoji {
            topic.icon_custom_emoji_id = Some(emoji).filter(|e| !e.is_empty());
        }
        let bot = self.bot.clone();
        let id = self.post_topic_edit(chat_id, &bot, thread, edited);
        self.posted.push((chat_id, id));
        Ok(json!(true))
    }

    /// Store a message of a kind without text or file (a venue, a poll) and record its send.
    #[allow(clippy::too_many_arguments)]
    fn store_special(
        &mut self,
        p: &Params,
        chat_id: i64,
        method: &str,
        summary: String,
        entities: Vec<Value>,
        field: &str,
        value: Value,
    ) -> ApiResult {
        let (reply_to, place) = self.placement(self.chat(chat_id)?, p)?;
        let bot = self.bot.clone();
        let date = self.now();
        let chat = self.chat_mut(chat_id)?;
        let message_id = chat.alloc_message_id();
        chat.messages.insert(
            message_id,
            StoredMessage {
                from: bot,
                date,
                text: String::new(),
                entities: Vec::new(),
                media: None,
                reply_to,
                edit_date: None,
                link_preview_options: None,
                deleted: false,
                place,
                service: false,
            },
        );
        let mut result = chat.message_json(message_id, true).expect("message just stored");
        if let Some(obj) = result.as_object_mut() {
            obj.remove("text");
            obj.remove("entities");
            obj.insert(field.to_owned(), value);
        }
        self.sent.push(SentMessage {
            message_id,
            chat_id,
            text: String::new(),
            parse_mode: None,
            reply_to,
            deleted: false,
            method: method.to_owned(),
            rendered_text: summary,
            entities,
            disable_notification: p.flag("disable_notification"),
            link_preview_options: None,
            caption: None,
            file: None,
            thread: place.topic(),
            at: std::time::Instant::now(),
        });
        Ok(result)
    }

    fn edit_message_text(&mut self, p: &Params) -> ApiResult {
        if p.get("inline_message_id").is_some() {
            return Err(ApiError::bad_request("inline messages are not supported by this fake"));
        }
        let chat_id = p.chat_id()?;
        let message_id = p.message_id()?;
        let raw = p.string("text").unwrap_or_default();
        let parse_mode = p.string("parse_mode").filter(|m| !m.is_empty());
        let (text, entities) = render(&raw, parse_mode.as_deref(), p.structured("entities")?)?;
        let link_preview_options = p.structured("link_preview_options")?;
        let bot_id = self.bot.id;
        let now = self.now();
        let chat = self.chat_mut(chat_id)?;
        let message = chat
            .messages
            .get_mut(&message_id)
            .filter(|m| !m.deleted)
            .ok_or_else(|| ApiError::bad_request("message to edit not found"))?;
        if message.from.id != bot_id {
            return Err(ApiError::bad_request("message can't be edited"));
        }
        if message.media.is_some() {
            return Err(ApiError::bad_request("there is no text in the message to edit"));
        }
        if text.is_empty() {
            return Err(ApiError::bad_request("message text is empty"));
        }
        if text.encode_utf16().count() > MAX_TEXT_LEN {
            return Err(ApiError::bad_request("MESSAGE_TOO_LONG"));
        }
        if message.text == text && message.entities == entities {
            return Err(ApiError::new(400, NOT_MODIFIED));
        }
        message.text = text;
        message.entities = entities;
        message.edit_date = Some(now.max(message.date));
        if link_preview_options.is_some() {
            message.link_preview_options = link_preview_options;
        }
        let result = chat.message_json(message_id, true).expect("message just edited");
        self.edits.push((chat_id, message_id, raw));
        Ok(result)
    }

    /// Deletes one message, recording it; `false` if it was unknown or already deleted.
    fn delete_one(&mut self, chat_id: i64, message_id: i32) -> bool {
        let Some(message) = self
            .chats
            .get_mut(&chat_id)
            .and_then(|c| c.messages.get_mut(&message_id))
        else {
            return false;
        };
        if message.deleted {
            return false;
        }
        message.deleted = true;
        self.deletions.push((chat_id, message_id));
        for sent in self
            .sent
            .iter_mut()
            .filter(|s| s.chat_id == chat_id && s.message_id == message_id)
        {
            sent.deleted = true;
        }
        true
    }

    fn delete_message(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        let message_id = p.message_id()?;
        self.chat(chat_id)?;
        if self.delete_one(chat_id, message_id) {
            Ok(json!(true))
        } else {
            Err(ApiError::bad_request("message to delete not found"))
        }
    }

    fn delete_messages(&mut self, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        self.chat(chat_id)?;
        let ids = p
            .structured("message_ids")?
            .and_then(|v| v.as_array().cloned())
            .filter(|ids| !ids.is_empty())
            .ok_or_else(|| ApiError::bad_request("message identifiers are not specified"))?;
        // Like the real method, missing messages are skipped silently.
        for id in ids
            .iter()
            .filter_map(Value::as_i64)
            .filter_map(|id| i32::try_from(id).ok())
        {
            self.delete_one(chat_id, id);
        }
        Ok(json!(true))
    }
}

/// Files and media messages.
impl FakeState {
    /// Registers a new file under `dir`; its `file_path` keeps the extension
    /// of `file_name` (or gets the kind's default one).
    fn store_file(
        &mut self,
        kind: MediaKind,
        dir: &str,
        bytes: Bytes,
        file_name: Option<String>,
        mime_type: Option<String>,
    ) -> &mut StoredFile {
        let n = self.next_file;
        self.next_file += 1;
        let extension = file_name
            .as_deref()
            .and_then(extension)
            .or_else(|| kind.default_extension().map(str::to_owned));
        let file_path = match extension {
            Some(extension) => format!("{dir}/file_{n}.{extension}"),
            None => format!("{dir}/file_{n}"),
        };
        let file_id = format!("{}AgADAQADGQEAAl{n:08}fAkE", kind.id_prefix());
        let file = StoredFile {
            file_id: file_id.clone(),
            file_unique_id: format!("AQAD{n:08}"),
            file_path,
            bytes,
            url: None,
            file_name,
            mime_type,
            dims: None,
            thumb: None,
        };
        self.files.entry(file_id).or_insert(file)
    }

    /// The `PhotoSize` array of a photo file: a thumbnail (created on first
    /// use, same bytes) and the full size last.
    fn photo_sizes(&mut self, file_id: &str) -> Value {
        let file = &self.files[file_id];
        let dims = file.dims.unwrap_or(DEFAULT_PHOTO_SIZE);
        let thumb_dims = fit(dims, THUMB_SIDE);
        let thumb_id = match file.thumb.clone() {
            Some(id) => id,
            None => {
                let (bytes, url, mime) = (file.bytes.clone(), file.url.clone(), file.mime_type.clone());
                let thumb = self.store_file(MediaKind::Photo, "photos", bytes, None, mime);
                thumb.url = url;
                thumb.dims = Some(thumb_dims);
                let id = thumb.file_id.clone();
                if let Some(file) = self.files.get_mut(file_id) {
                    file.thumb = Some(id.clone());
                }
                id
            }
        };
        json!([
            self.files[&thumb_id].photo_size_json(thumb_dims),
            self.files[file_id].photo_size_json(dims),
        ])
    }

    /// Resolves the file parameter of a media method (an uploaded part, an
    /// `attach://` reference, a known file id or a URL) to a stored file id,
    /// enforcing the upload limits.
    fn input_file(&mut self, kind: MediaKind, p: &Params) -> Result<String, ApiError> {
        let field = kind.field();
        let wrong = || ApiError::bad_request("wrong file identifier/HTTP URL specified");
        let upload = match p.files.get(field) {
            Some(upload) => upload,
            None => {
                let value = p
                    .string(field)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| ApiError::bad_request(format!("there is no {field} in the request")))?;
                let value = value.trim();
                if let Some(part) = value.strip_prefix("attach://") {
                    p.files.get(part).ok_or_else(wrong)?
                } else if value.starts_with("http://") || value.starts_with("https://") {
                    url::Url::parse(value).map_err(|_| wrong())?;
                    let mime = Some(kind.default_mime().to_owned());
                    let file = self.store_file(kind, kind.dir(), Bytes::new(), None, mime);
                    file.url = Some(value.to_owned());
                    return Ok(file.file_id.clone());
                } else if self.files.contains_key(value) {
                    return Ok(value.to_owned());
                } else {
                    return Err(wrong());
                }
            }
        };
        let size = upload.bytes.len() as u64;
        if size == 0 {
            return Err(ApiError::bad_request("file must be non-empty"));
        }
        if size > UPLOAD_LIMIT {
            return Err(ApiError::too_large());
        }
        let dims = image_dimensions(&upload.bytes);
        if kind == MediaKind::Photo {
            if size > PHOTO_UPLOAD_LIMIT {
                return Err(ApiError::bad_request("PHOTO_SAVE_FILE_INVALID"));
            }
            if let Some((w, h)) = dims
                && (w.min(h) == 0 || w + h > 10_000 || w.max(h) > 20 * w.min(h))
            {
                return Err(ApiError::bad_request("PHOTO_INVALID_DIMENSIONS"));
            }
        }
        let mime = upload
            .file_name
            .as_deref()
            .and_then(guess_mime)
            .map(str::to_owned)
            .or_else(|| upload.content_type.clone())
            .unwrap_or_else(|| kind.default_mime().to_owned());
        let (bytes, file_name) = (upload.bytes.clone(), upload.file_name.clone());
        let file = self.store_file(kind, kind.dir(), bytes, file_name, Some(mime));
        file.dims = dims;
        Ok(file.file_id.clone())
    }

    /// The fields a media message of `kind` with file `file_id` carries
    /// (`{"photo": [..]}`, `{"voice": {..}}`, ...).
    fn media_fields(&mut self, kind: MediaKind, file_id: &str, p: &Params) -> Result<Map<String, Value>, ApiError> {
        let duration = p.int("duration")?.unwrap_or(0).max(0);
        let width = p.int("width")?;
        let height = p.int("height")?;
        let mut fields = Map::new();
        if kind == MediaKind::Photo {
            fields.insert("photo".to_owned(), self.photo_sizes(file_id));
        } else {
            let file = &self.files[file_id];
            let (image_width, image_height) = file.dims.unwrap_or((0, 0));
            let width = width.unwrap_or(i64::from(image_width));
            let height = height.unwrap_or(i64::from(image_height));
            let mime = file.mime_type.clone().unwrap_or_else(|| kind.default_mime().to_owned());
            let mut object = file.meta_json();
            let mut set = |key: &str, value: Value| {
                if !value.is_null() {
                    object[key] = value;
                }
            };
            match kind {
                MediaKind::Photo => unreachable!("handled above"),
                MediaKind::Document => {
                    set("file_name", json!(file.file_name));
                    set("mime_type", json!(mime));
                }
                MediaKind::Voice => {
                    set("duration", json!(duration));
                    set("mime_type", json!(mime));
                }
                MediaKind::Audio => {
                    set("duration", json!(duration));
                    set("performer", json!(p.string("performer")));
                    set("title", json!(p.string("title")));
                    set("file_name", json!(file.file_name));
                    set("mime_type", json!(mime));
                }
                MediaKind::Video | MediaKind::Animation => {
                    set("width", json!(width));
                    set("height", json!(height));
                    set("duration", json!(duration));
                    set("file_name", json!(file.file_name));
                    set("mime_type", json!(mime));
                }
                MediaKind::Sticker => {
                    let (width, height) = file.dims.unwrap_or((512, 512));
                    set("width", json!(width));
                    set("height", json!(height));
                    set("type", json!("regular"));
                    set("is_animated", json!(file.file_path.ends_with(".tgs")));
                    set("is_video", json!(file.file_path.ends_with(".webm")));
                    set("emoji", json!(p.string("emoji")));
                }
                MediaKind::VideoNote => {
                    set("length", json!(p.int("length")?.unwrap_or(width.max(240))));
                    set("duration", json!(duration));
                }
            }
            if kind == MediaKind::Animation {
                // For backward compatibility Telegram also sends `document`.
                let mut document = file.meta_json();
                if let Some(name) = &file.file_name {
                    document["file_name"] = json!(name);
                }
                document["mime_type"] = json!(mime);
                fields.insert("document".to_owned(), document);
            }
            fields.insert(kind.field().to_owned(), object);
        }
        if p.flag("has_spoiler") {
            fields.insert("has_media_spoiler".to_owned(), json!(true));
        }
        if p.flag("show_caption_above_media") {
            fields.insert("show_caption_above_media".to_owned(), json!(true));
        }
        Ok(fields)
    }

    fn send_media(&mut self, kind: MediaKind, p: &Params) -> ApiResult {
        let chat_id = p.chat_id()?;
        self.chat(chat_id)?;
        let has_caption = !matches!(kind, MediaKind::Sticker | MediaKind::VideoNote);
        let raw_caption = p.string("caption").filter(|_| has_caption);
        let parse_mode = p.string("parse_mode").filter(|m| !m.is_empty());
        let (text, entities) = match &raw_caption {
            Some(raw) => render(raw, parse_mode.as_deref(), p.structured("caption_entities")?)?,
            None => (String::new(), Vec::new()),
        };
        if text.encode_utf16().count() > MAX_CAPTION_LEN {
            return Err(ApiError::bad_request("message caption is too long"));
        }
        let (reply_to, place) = self.placement(self.chat(chat_id)?, p)?;
        let file_id = self.input_file(kind, p)?;
        let media = self.media_fields(kind, &file_id, p)?;
        let bot = self.bot.clone();
        let date = self.now();
        let chat = self.chat_mut(chat_id)?;
        let message_id = chat.alloc_message_id();
        chat.messages.insert(
            message_id,
            StoredMessage {
                from: bot,
                date,
                text: text.clone(),
                entities: entities.clone(),
                media: Some(media),
                reply_to,
                edit_date: None,
                link_preview_options: None,
                deleted: false,
                place,
                service: false,
            },
        );
        let result = chat.message_json(message_id, true).expect("message just stored");
        let file = &self.files[&file_id];
        let file = SentFile {
            field: kind.field().to_owned(),
            file_name: file.file_name.clone(),
            mime_type: file.mime_type.clone(),
            bytes: file.bytes.to_vec(),
            duration: p.int("duration")?.and_then(|d| u32::try_from(d).ok()),
            file_id: file.file_id.clone(),
            url: file.url.clone(),
        };
        self.sent.push(SentMessage {
            message_id,
            chat_id,
            text: raw_caption.clone().unwrap_or_default(),
            parse_mode,
            reply_to,
            deleted: false,
            method: kind.method().to_owned(),
            rendered_text: text,
            entities,
            disable_notification: p.flag("disable_notification"),
            link_preview_options: None,
            caption: raw_caption,
            file: Some(file),
            thread: place.topic(),
            at: std::time::Instant::now(),
        });
        Ok(result)
    }

    fn edit_message_caption(&mut self, p: &Params) -> ApiResult {
        if p.get("inline_message_id").is_some() {
            return Err(ApiError::bad_request("inline messages are not supported by this fake"));
        }
        let chat_id = p.chat_id()?;
        let message_id = p.message_id()?;
        let raw = p.string("caption").unwrap_or_default();
        let parse_mode = p.string("parse_mode").filter(|m| !m.is_empty());
        let (text, entities) = render(&raw, parse_mode.as_deref(), p.structured("caption_entities")?)?;
        let bot_id = self.bot.id;
        let now = self.now();
        let chat = self.chat_mut(chat_id)?;
        let message = chat
            .messages
            .get_mut(&message_id)
            .filter(|m| !m.deleted)
            .ok_or_else(|| ApiError::bad_request("message to edit not found"))?;
        if message.from.id != bot_id {
            return Err(ApiError::bad_request("message can't be edited"));
        }
        if message.media.is_none() {
            return Err(ApiError::bad_request("there is no caption in the message to edit"));
        }
        if text.encode_utf16().count() > MAX_CAPTION_LEN {
            return Err(ApiError::bad_request("message caption is too long"));
        }
        if message.text == text && message.entities == entities {
            return Err(ApiError::new(400, NOT_MODIFIED));
        }
        message.text = text;
        message.entities = entities;
        message.edit_date = Some(now.max(message.date));
        let result = chat.message_json(message_id, true).expect("message just edited");
        self.edits.push((chat_id, message_id, raw));
        Ok(result)
    }

    fn get_file(&self, p: &Params) -> ApiResult {
        let file_id = p
            .string("file_id")
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("file_id not specified"))?;
        let file = self
            .files
            .get(file_id.trim())
            .ok_or_else(|| ApiError::bad_request("invalid file id"))?;
        if file.bytes.len() as u64 > self.download_limit {
            return Err(ApiError::bad_request("file is too big"));
        }
        let mut result = file.meta_json();
        result["file_path"] = json!(file.file_path);
        Ok(result)
    }

    fn get_user_profile_photos(&self, p: &Params) -> ApiResult {
        let user_id = p.user_id()?;
        let offset = p.int("offset")?.unwrap_or(0).max(0) as usize;
        let limit = p.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
        let photos: Vec<Value> = self
            .profile_photos
            .get(&user_id)
            .map(|ids| {
                let sizes = ids
                    .iter()
                    .map(|id| {
                        let file = &self.files[id];
                        file.photo_size_json(file.dims.unwrap_or(DEFAULT_PHOTO_SIZE))
                    })
                    .collect();
                vec![Value::Array(sizes)]
            })
            .unwrap_or_default();
        Ok(json!({
            "total_count": photos.len(),
            "photos": photos.into_iter().skip(offset).take(limit).collect::<Vec<_>>(),
        }))
    }
}

/// Clears the "a getUpdates call is in flight" flag when the call ends,
/// including when the client disconnects and the handler future is dropped.
struct PollGuard(Arc<Shared>, Option<usize>);

impl Drop for PollGuard {
    fn drop(&mut self) {
        *self.0.lock().queue(self.1).2 = false;
    }
}

async fn get_updates(shared: &Arc<Shared>, p: &Params, who: Option<usize>) -> ApiResult {
    let offset = p.int("offset")?.unwrap_or(0);
    let limit = p.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = p.int("timeout")?.unwrap_or(0).max(0) as u64;
    let allowed = match p.structured("allowed_updates")? {
        None => None,
        Some(Value::Array(kinds)) => Some(kinds.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect()),
        Some(_) => {
            return Err(ApiError::bad_request("can't parse allowed_updates JSON object"));
        }
    };
    let _guard = {
        let mut st = shared.lock();
        let (_, allowed_now, in_flight) = st.queue(who);
        if *in_flight {
            return Err(ApiError::new(409, CONFLICT));
        }
        *in_flight = true;
        if allowed.is_some() {
            *allowed_now = allowed;
        }
        st.confirm(who, offset);
        st.expire_updates();
        PollGuard(shared.clone(), who)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.updates_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut st = shared.lock();
            st.expire_updates();
            let updates = st.queue(who).0;
            if !updates.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Value::Array(updates.iter().take(limit).cloned().collect()));
            }
        }
        // Either an update arrived or the deadline passed; the loop re-checks.
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot_segment, method)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let account = |token: &str| shared.lock().accounts.iter().position(|a| a.token == token);
    let who = match bot_segment.strip_prefix("bot") {
        Some(token) if token == shared.token => None,
        Some(token) => match account(token) {
            Some(i) => Some(i),
            None => return ApiError::new(401, "Unauthorized").into_response(),
        },
        None => return ApiError::not_found().into_response(),
    };
    let method = method.to_ascii_lowercase();
    let result = handle_method(&shared, who, &method, &headers, query.as_deref(), body).await;
    shared.activity.notify_waiters();
    let hold = shared.lock().holds.remove(&method);
    if let Some(gate) = hold {
        let _ = gate.acquire().await;
    }
    let lose = {
        let mut st = shared.lock();
        match st.lost_answers.get_mut(&method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    if lose {
        // Done, but the client never learns it: the body breaks off after its first bytes.
        let stream = futures::stream::iter([
            Ok(Bytes::from_static(b"{\"ok\":")),
            Err(std::io::Error::other("connection lost")),
        ]);
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from_stream(stream))
            .unwrap();
    }
    match result {
        Ok(result) => Json(json!({ "ok": true, "result": result })).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle_method(
    shared: &Arc<Shared>,
    who: Option<usize>,
    method: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(headers, query, &body);
    let fault = {
        let mut st = shared.lock();
        *st.calls.entry(method.to_owned()).or_default() += 1;
        let recorded = params.as_ref().map_or(Value::Null, Params::recorded);
        st.requests.push((method.to_owned(), recorded));
        st.faults.get_mut(method).and_then(VecDeque::pop_front)
    };
    shared.activity.notify_waiters();
    if let Some(fault) = fault {
        return Err(fault);
    }
    let params = params?;
    if method.starts_with("send") && method != "sendchataction" {
        shared.lock().check_rate(&params)?;
    }
    if method == "getupdates" {
        get_updates(shared, &params, who).await
    } else {
        shared.lock().dispatch_as(who, method, &params)
    }
}

/// `GET {api_url}/file/bot{token}/{file_path}`: the bytes of a known file.
async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot_segment, file_path)): Path<(String, String)>,
) -> Response {
    match bot_segment.strip_prefix("bot") {
        Some(token) if token == shared.token => {}
        Some(_) => return ApiError::new(401, "Unauthorized").into_response(),
        None => return ApiError::not_found().into_response(),
    }
    let bytes = shared
        .lock()
        .files
        .values()
        .find(|f| f.file_path == file_path && f.url.is_none())
        .map(|f| f.bytes.clone());
    shared.activity.notify_waiters();
    match bytes {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        None => ApiError::not_found().into_response(),
    }
}

async fn fallback() -> Response {
    ApiError::not_found().into_response()
}

/// Applies `entities` or `parse_mode` to a raw text and trims it, giving the
/// `(text, entities)` Telegram stores.
fn render(raw: &str, parse_mode: Option<&str>, entities: Option<Value>) -> Result<(String, Vec<Value>), ApiError> {
    let (text, entities) = match (entities, parse_mode) {
        (Some(Value::Array(entities)), _) => (raw.to_owned(), entities),
        (Some(_), _) => return Err(ApiError::bad_request("can't parse entities JSON object")),
        (None, None) => (raw.to_owned(), Vec::new()),
        (None, Some(mode)) => match mode.to_ascii_lowercase().as_str() {
            "html" => parse_html(raw).map_err(|e| ApiError::bad_request(format!("can't parse entities: {e}")))?,
            "markdown" | "markdownv2" => (raw.to_owned(), Vec::new()),
            _ => return Err(ApiError::bad_request("unsupported parse_mode")),
        },
    };
    Ok(trim_message(&text, entities))
}

/// Strips leading/trailing whitespace like Telegram does, shifting and
/// clipping entities (UTF-16 offsets) and dropping those left empty.
fn trim_message(text: &str, entities: Vec<Value>) -> (String, Vec<Value>) {
    let trimmed_start = text.trim_start();
    let lead = text[..text.len() - trimmed_start.len()].encode_utf16().count() as i64;
    let trimmed = trimmed_start.trim_end();
    let end = lead + trimmed.encode_utf16().count() as i64;
    let entities = entities
        .into_iter()
        .filter_map(|mut entity| {
            let offset = entity.get("offset")?.as_i64()?;
            let length = entity.get("length")?.as_i64()?;
            let (start, stop) = (offset.max(lead), (offset + length).min(end));
            (stop > start).then(|| {
                entity["offset"] = json!(start - lead);
                entity["length"] = json!(stop - start);
                entity
            })
        })
        .collect();
    (trimmed.to_owned(), entities)
}

/// Parses Telegram's HTML subset into plain text plus entities (offsets in
/// UTF-16 code units). Errors are the text after "can't parse entities: ".
fn parse_html(src: &str) -> Result<(String, Vec<Value>), String> {
    struct Open {
        tag: String,
        start: usize,
        entity: Option<Value>,
    }
    let mut out = String::with_capacity(src.len());
    let mut pos = 0usize;
    let mut stack: Vec<Open> = Vec::new();
    let mut entities = Vec::new();
    let mut i = 0usize;
    while i < src.len() {
        let rest = &src[i..];
        if let Some(after) = rest.strip_prefix("</") {
            let close = after
                .find('>')
                .ok_or_else(|| format!("Unclosed end tag at byte offset {i}"))?;
            let name = after[..close].trim().to_ascii_lowercase();
            let open = stack
                .pop()
                .ok_or_else(|| format!("Unexpected end tag at byte offset {i}"))?;
            if open.tag != name {
                return Err(format!(
                    "Unmatched end tag at byte offset {i}, expected \"</{}>\", found \"</{name}>\"",
                    open.tag
                ));
            }
            if let Some(mut entity) = open.entity.filter(|_| pos > open.start) {
                entity["offset"] = json!(open.start);
                entity["length"] = json!(pos - open.start);
                entities.push(entity);
            }
            i += 2 + close + 1;
        } else if let Some(after) = rest.strip_prefix('<') {
            let (name, attrs, consumed) = parse_start_tag(after, i)?;
            let attr = |key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            let entity = match name.as_str() {
                "b" | "strong" => Some(json!({ "type": "bold" })),
                "i" | "em" => Some(json!({ "type": "italic" })),
                "u" | "ins" => Some(json!({ "type": "underline" })),
                "s" | "strike" | "del" => Some(json!({ "type": "strikethrough" })),
                "tg-spoiler" => Some(json!({ "type": "spoiler" })),
                "span" if attr("class") == Some("tg-spoiler") => Some(json!({ "type": "spoiler" })),
                "span" => {
                    return Err(format!(
                        "Tag \"span\" must have class \"tg-spoiler\" at byte offset {i}"
                    ));
                }
                "a" => attr("href")
                    .and_then(normalize_url)
                    .map(|url| json!({ "type": "text_link", "url": url })),
                "code" => match stack.last_mut().filter(|open| open.tag == "pre") {
                    // <pre><code class="language-x"> is one `pre` entity with a language.
                    Some(pre) => {
                        let language = attr("class").and_then(|c| c.strip_prefix("language-"));
                        if let (Some(language), Some(entity)) = (language, pre.entity.as_mut()) {
                            entity["language"] = json!(language);
                        }
                        None
                    }
                    None => Some(json!({ "type": "code" })),
                },
                "pre" => Some(json!({ "type": "pre" })),
                "blockquote" if attr("expandable").is_some() => Some(json!({ "type": "expandable_blockquote" })),
                "blockquote" => Some(json!({ "type": "blockquote" })),
                "tg-emoji" => attr("emoji-id").map(|id| json!({ "type": "custom_emoji", "custom_emoji_id": id })),
                other => {
                    return Err(format!("Unsupported start tag \"{other}\" at byte offset {i}"));
                }
            };
            stack.push(Open {
                tag: name,
                start: pos,
                entity,
            });
            i += 1 + consumed;
        } else {
            let (ch, consumed) = decode_entity(rest);
            out.push(ch);
            pos += ch.len_utf16();
            i += consumed;
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            open.tag
        ));
    }
    entities.sort_by_key(|e| {
        (
            e["offset"].as_u64().unwrap_or(0),
            Reverse(e["length"].as_u64().unwrap_or(0)),
        )
    });
    Ok((out, entities))
}

/// A parsed start tag: lower-cased name, `(attribute, value)` pairs, bytes consumed.
type StartTag = (String, Vec<(String, String)>, usize);

/// Parses `name attr="v" ...>` (the text after `<`), returning the lower-cased
/// tag name, its attributes and the number of bytes consumed (including `>`).
fn parse_start_tag(after: &str, at: usize) -> Result<StartTag, String> {
    let bytes = after.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut j = 0;
    while j < bytes.len() && is_name(bytes[j]) {
        j += 1;
    }
    if j == 0 {
        return Err(format!("Unsupported start tag \"\" at byte offset {at}"));
    }
    let name = after[..j].to_ascii_lowercase();
    let unclosed = || format!("Unclosed start tag at byte offset {at}");
    let skip_ws = |j: &mut usize| {
        while *j < bytes.len() && bytes[*j].is_ascii_whitespace() {
            *j += 1;
        }
    };
    let mut attrs = Vec::new();
    loop {
        skip_ws(&mut j);
        match bytes.get(j) {
            None => return Err(unclosed()),
            Some(b'>') => return Ok((name, attrs, j + 1)),
            Some(_) => {}
        }
        let start = j;
        while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'=' && bytes[j] != b'>' {
            j += 1;
        }
        if start == j {
            return Err(format!(
                "Empty attribute name in the tag \"{name}\" at byte offset {at}"
            ));
        }
        let key = after[start..j].to_ascii_lowercase();
        skip_ws(&mut j);
        let mut value = String::new();
        if bytes.get(j) == Some(&b'=') {
            j += 1;
            skip_ws(&mut j);
            match bytes.get(j) {
                None => return Err(unclosed()),
                Some(&quote @ (b'"' | b'\'')) => {
                    let len = after[j + 1..].find(quote as char).ok_or_else(unclosed)?;
                    value = decode_entities(&after[j + 1..j + 1 + len]);
                    j += len + 2;
                }
                Some(_) => {
                    let start = j;
                    while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'>' {
                        j += 1;
                    }
                    value = decode_entities(&after[start..j]);
                }
            }
        }
        attrs.push((key, value));
    }
}

/// Decodes one character at the start of `s`: an HTML entity (`&lt;`, `&gt;`,
/// `&amp;`, `&quot;`, `&#N;`, `&#xN;`) or a literal character. Returns the
/// character and the number of bytes consumed.
fn decode_entity(s: &str) -> (char, usize) {
    for (name, ch) in [("&lt;", '<'), ("&gt;", '>'), ("&amp;", '&'), ("&quot;", '"')] {
        if s.starts_with(name) {
            return (ch, name.len());
        }
    }
    if let Some(num) = s.strip_prefix("&#") {
        let (digits, radix, prefix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 3),
            None => (num, 10, 2),
        };
        if let Some(end) = digits.find(';')
            && let Some(ch) = u32::from_str_radix(&digits[..end], radix).ok().and_then(char::from_u32)
        {
            return (ch, prefix + end + 1);
        }
    }
    let ch = s.chars().next().expect("decode_entity called on empty input");
    (ch, ch.len_utf8())
}

fn decode_entities(mut s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    while !s.is_empty() {
        let (ch, consumed) = decode_entity(s);
        out.push(ch);
        s = &s[consumed..];
    }
    out
}

/// Telegram accepts `href`s without a scheme (prefixing `http://`) and drops
/// links it cannot parse.
fn normalize_url(href: &str) -> Option<String> {
    let href = href.trim();
    if href.is_empty() {
        return None;
    }
    if url::Url::parse(href).is_ok() {
        return Some(href.to_owned());
    }
    let prefixed = format!("http://{href}");
    url::Url::parse(&prefixed).ok().map(|_| prefixed)
}

/// Position of the first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let candidate = at + haystack[at..].iter().position(|&b| b == first)?;
        if haystack.get(candidate + 1..candidate + needle.len())? == rest {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

/// The `key=value` parameters of a header value such as
/// `form-data; name="x"; filename="a.txt"` (keys lower-cased, quotes and
/// backslash escapes removed); the leading value itself is skipped.
fn header_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = value.chars().peekable();
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    while chars.peek().is_some() {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.next() == Some('=') {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                }
            } else {
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                }
                value = value.trim().to_owned();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            params.push((key, value));
        }
    }
    params
}

/// The lower-cased extension of a file name, if it looks like one.
fn extension(file_name: &str) -> Option<String> {
    let (stem, extension) = file_name.rsplit_once('.')?;
    (!stem.is_empty() && (1..=8).contains(&extension.len()) && extension.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| extension.to_ascii_lowercase())
}

/// The MIME type Telegram derives from a file name's extension.
fn guess_mime(file_name: &str) -> Option<&'static str> {
    Some(match extension(file_name)?.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "wav" => "audio/x-wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "tgs" => "application/x-tgsticker",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "json" => "application/json",
        "txt" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        _ => return None,
    })
}

/// `dims` scaled down (keeping the aspect ratio) so that neither side exceeds `max_side`.
fn fit((width, height): (u32, u32), max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |side: u32| ((u64::from(side) * u64::from(max_side)) / u64::from(longest)).max(1) as u32;
    (scale(width), scale(height))
}

/// Width and height of a PNG, GIF, JPEG or WebP image, read from its header.
fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| Some(u32::from(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?)));
    let le16 = |at: usize| Some(u32::from(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?)));
    let be32 = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le24 = |at: usize| {
        let b = bytes.get(at..at + 3)?;
        Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    };
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.get(12..16) == Some(b"IHDR") {
        return Some((be32(16)?, be32(20)?));
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some((le16(6)?, le16(8)?));
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return match bytes.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(bytes.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            _ => None,
        };
    }
    if bytes.starts_with(&[0xff, 0xd8]) {
        let mut at = 2;
        while at + 4 <= bytes.len() {
            if bytes[at] != 0xff {
                return None;
            }
            let marker = bytes[at + 1];
            match marker {
                0xff => at += 1,
                0x01 | 0xd0..=0xd7 => at += 2,
                0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                    return Some((be16(at + 7)?, be16(at + 5)?));
                }
                _ => at += 2 + be16(at + 2)? as usize,
            }
        }
    }
    None
}

impl FakeTelegram {
    /// Starts a fake Bot API server for `token` on `127.0.0.1:0`.
    ///
    /// The bot's user id is the numeric part of the token before `:` (as with
    /// real tokens), or 1000 if there is none; its username is `tgmx_test_bot`.
    pub async fn start(token: &str) -> FakeTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake Telegram: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake Telegram: local_addr");
        let bot_id = token.split(':').next().and_then(|id| id.parse().ok()).unwrap_or(1000);
        let bot = TgUser {
            id: bot_id,
            first_name: "tgmx test bot".to_owned(),
            last_name: None,
            username: Some("tgmx_test_bot".to_owned()),
            is_bot: true,
        };
        let state = FakeState {
            bot,
            chats: BTreeMap::new(),
            upgraded: HashMap::new(),
            users: HashMap::new(),
            next_update_id: FIRST_UPDATE_ID,
            updates: VecDeque::new(),
            allowed_updates: None,
            poll_in_flight: false,
            calls: HashMap::new(),
            requests: Vec::new(),
            faults: HashMap::new(),
            holds: HashMap::new(),
            lost_answers: HashMap::new(),
            sent: Vec::new(),
            edits: Vec::new(),
            deletions: Vec::new(),
            reactions: Vec::new(),
            commands: json!([]),
            files: HashMap::new(),
            next_file: 1,
            download_limit: DEFAULT_DOWNLOAD_LIMIT,
            rate_limits: None,
            post_log: Vec::new(),
            rate_limited: 0,
            profile_photos: HashMap::new(),
            accounts: Vec::new(),
            bot_settings: HashMap::new(),
            clock_offset: Duration::ZERO,
            update_expiry: HashMap::new(),
            expired: 0,
            posted: Vec::new(),
        };
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            addr,
            state: Mutex::new(state),
            updates_changed: Notify::new(),
            activity: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", any(handle))
            .route("/file/{bot}/{*file_path}", get(download))
            .fallback(fallback)
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram { shared }
    }

    /// Base URL for teloxide's `set_api_url`, e.g. `http://127.0.0.1:PORT`.
    /// Requests go to `{api_url}/bot{token}/{method}`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The bot's own user, as returned by `getMe` and used as `from` of its messages.
    pub fn bot_user(&self) -> TgUser {
        self.shared.lock().bot.clone()
    }

    /// Adds another bot with its own `token` (its id is the token's numeric prefix) that polls
    /// and posts here like the primary bot; see the module doc for what it sees.
    pub fn add_bot(&self, token: &str, first_name: &str, username: &str) -> TgUser {
        let id = token
            .split(':')
            .next()
            .and_then(|id| id.parse().ok())
            .expect("fake Telegram: a bot token starts with the bot's numeric id");
        let user = self.add_agent_bot(id, first_name, username);
        self.shared.lock().accounts.push(BotAccount {
            token: token.to_owned(),
            user: user.clone(),
            updates: VecDeque::new(),
            allowed_updates: None,
            poll_in_flight: false,
        });
        user
    }

    /// A bot that posts in chats (with `inject_*`) but does not poll this fake (an agent).
    pub fn add_agent_bot(&self, id: i64, first_name: &str, username: &str) -> TgUser {
        let user = TgUser {
            id,
            first_name: first_name.to_owned(),
            last_name: None,
            username: Some(username.to_owned()),
            is_bot: true,
        };
        self.shared.lock().users.insert(id, user.clone());
        user
    }

    /// Turns a bot's privacy mode on or off (@BotFather `/setprivacy`; default off).
    pub fn set_privacy(&self, bot_id: i64, on: bool) {
        self.shared.lock().bot_settings.entry(bot_id).or_default().privacy = on;
        self.shared.activity.notify_waiters();
    }

    /// Turns a bot's Bot-to-Bot Communication Mode on or off (@BotFather; default off).
    pub fn set_bot_to_bot(&self, bot_id: i64, on: bool) {
        self.shared.lock().bot_settings.entry(bot_id).or_default().bot_to_bot = on;
        self.shared.activity.notify_waiters();
    }

    /// Makes a bot an admin of `chat_id` or a plain member (default: admin).
    pub fn set_admin(&self, bot_id: i64, chat_id: i64, admin: bool) {
        let mut st = self.shared.lock();
        let not_admin = &mut st.bot_settings.entry(bot_id).or_default().not_admin_in;
        if admin {
            not_admin.remove(&chat_id);
        } else {
            not_admin.insert(chat_id);
        }
    }

    /// Every message bot `bot_id` posted in `chat_id`, in order (deleted ones included).
    pub fn sent_by(&self, chat_id: i64, bot_id: i64) -> Vec<SentMessage> {
        let st = self.shared.lock();
        let from = |s: &SentMessage| {
            st.chats
                .get(&s.chat_id)
                .and_then(|c| c.messages.get(&s.message_id))
                .map(|m| m.from.id)
        };
        st.sent
            .iter()
            .filter(|s| s.chat_id == chat_id && from(s) == Some(bot_id))
            .cloned()
            .collect()
    }

    /// The updates queued for bot `bot_id` (the primary bot or one added with
    /// [`FakeTelegram::add_bot`]) and not confirmed yet, oldest first.
    pub fn updates_for(&self, bot_id: i64) -> Vec<Value> {
        let mut st = self.shared.lock();
        st.expire_updates();
        if st.bot.id == bot_id {
            return st.updates.iter().cloned().collect();
        }
        st.accounts
            .iter()
            .find(|a| a.user.id == bot_id)
            .map(|a| a.updates.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Registers a supergroup (or renames an existing chat, keeping its history).
    pub fn add_chat(&self, chat_id: i64, title: &str) {
        self.register_chat(chat_id, ChatType::Supergroup, title);
    }

    /// Registers a basic group (or renames an existing chat, keeping its history).
    pub fn add_group(&self, chat_id: i64, title: &str) {
        self.register_chat(chat_id, ChatType::Group, title);
    }

    /// Registers a supergroup with topics enabled (`is_forum: true` in every `chat` object and
    /// in `getChat`), or turns an existing supergroup into one (renaming it, keeping its
    /// history). The bot, an admin by default, has `can_manage_topics` there unless
    /// [`FakeTelegram::set_topic_rights`] takes it away.
    ///
    /// Panics if `chat_id` is a chat of another kind.
    pub fn add_forum(&self, chat_id: i64, title: &str) {
        self.register_chat(chat_id, ChatType::Supergroup, title);
        let mut st = self.shared.lock();
        let chat = st.chats.get_mut(&chat_id).expect("just registered");
        assert!(
            chat.kind == ChatType::Supergroup,
            "fake Telegram: only a supergroup can be a forum; {chat_id} is a {}",
            chat.kind.as_str()
        );
        chat.is_forum = true;
        // Message id 1 is the General topic's: a forum's first message is never 1.
        chat.next_message_id = chat.next_message_id.max(2);
    }

    /// `from` creates a topic `name` in forum `chat_id`: queues the `forum_topic_created`
    /// service message (`{"name", "icon_color": 7322096}`), whose `message_id` is the topic's
    /// `message_thread_id` and which carries that `message_thread_id` and `is_topic_message`
    /// itself; returns the thread id.
    ///
    /// Panics if the chat is not a forum.
    pub fn create_topic(&self, chat_id: i64, from: &TgUser, name: &str) -> i32 {
        let mut st = self.shared.lock();
        st.users.entry(from.id).or_insert_with(|| from.clone());
        assert!(
            st.chats.get(&chat_id).is_some_and(|c| c.is_forum),
            "fake Telegram: {chat_id} is not a forum; call add_forum first"
        );
        let id = st.open_topic(chat_id, from, name.to_owned(), TOPIC_ICON_COLORS[0], None);
        st.deliver(chat_id, id, "message");
        drop(st);
        self.notify_update();
        id
    }

    /// `from` renames topic `thread` of forum `chat_id` to `name`: queues a `forum_topic_edited`
    /// service message (`{"name"}`) in that topic; returns its message id. The topic's creation
    /// message keeps the old name, as on Telegram.
    ///
    /// Panics if `thread` is not a topic of the chat.
    pub fn edit_topic(&self, chat_id: i64, from: &TgUser, thread: i32, name: &str) -> i32 {
        let mut st = self.shared.lock();
        st.users.entry(from.id).or_insert_with(|| from.clone());
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: unknown chat {chat_id}"));
        let topic = chat
            .topics
            .get_mut(&thread)
            .unwrap_or_else(|| panic!("fake Telegram: {thread} is not a topic of chat {chat_id}"));
        topic.name = name.to_owned();
        let id = st.post_topic_edit(chat_id, from, thread, json!({ "name": name }));
        st.deliver(chat_id, id, "message");
        drop(st);
        self.notify_update();
        id
    }

    /// The current name of topic `thread` of `chat_id` (`None` if there is no such topic).
    pub fn topic_name(&self, chat_id: i64, thread: i32) -> Option<String> {
        let st = self.shared.lock();
        Some(st.chats.get(&chat_id)?.topics.get(&thread)?.name.clone())
    }

    /// The topics of `chat_id`: `(message_thread_id, current name)`, oldest first.
    pub fn topics(&self, chat_id: i64) -> Vec<(i32, String)> {
        let st = self.shared.lock();
        st.chats
            .get(&chat_id)
            .map(|c| c.topics.iter().map(|(id, t)| (*id, t.name.clone())).collect())
            .unwrap_or_default()
    }

    /// Gives bot `bot_id` `can_manage_topics` in forum `chat_id` or takes it away (default: it
    /// has it wherever it is an admin): `createForumTopic` then fails with `not enough rights to
    /// create a topic`, `editForumTopic` of a topic it did not create with `not enough rights to
    /// edit the topic`, and `getChatMember` reports it.
    pub fn set_topic_rights(&self, bot_id: i64, chat_id: i64, can_manage_topics: bool) {
        let mut st = self.shared.lock();
        let none_in = &mut st.bot_settings.entry(bot_id).or_default().no_topic_rights_in;
        if can_manage_topics {
            none_in.remove(&chat_id);
        } else {
            none_in.insert(chat_id);
        }
    }

    /// Every message the bot sent to topic `thread` of `chat_id` (`None`: the General topic, or
    /// anywhere in a chat that is no forum), in order, deleted ones included.
    pub fn sent_in_topic(&self, chat_id: i64, thread: Option<i32>) -> Vec<SentMessage> {
        self.sent(chat_id).into_iter().filter(|s| s.thread == thread).collect()
    }

    /// Moves the fake's clock `by` ahead of real time (cumulative; it starts at real time).
    /// Later messages, edits and updates carry the new time in `date`, and updates left
    /// unconfirmed for longer than they live (24 hours for messages) are dropped now, as the real
    /// server drops them: see [`FakeTelegram::expired_updates`]. The daemon's own clock does not
    /// move: dates from the fake are then in its future.
    pub fn advance_clock(&self, by: Duration) {
        let mut st = self.shared.lock();
        st.clock_offset += by;
        st.expire_updates();
        drop(st);
        self.notify_update();
    }

    /// The fake's current unix time (real time plus [`FakeTelegram::advance_clock`]).
    pub fn unix_time(&self) -> i64 {
        self.shared.lock().now()
    }

    /// How many updates (for any bot) the fake dropped because they were not confirmed through
    /// `getUpdates`'s `offset` within their lifetime (24 hours for messages, edits, reactions;
    /// 150 s for callback queries), whether or not a `getUpdates` had returned them: what a
    /// daemon asleep that long would have lost.
    pub fn expired_updates(&self) -> usize {
        let mut st = self.shared.lock();
        st.expire_updates();
        st.expired
    }

    fn register_chat(&self, chat_id: i64, kind: ChatType, title: &str) {
        let mut st = self.shared.lock();
        st.chats
            .entry(chat_id)
            .and_modify(|chat| chat.title = Some(title.to_owned()))
            .or_insert_with(|| Chat::new(chat_id, kind, Some(title.to_owned()), None));
    }

    /// Registers a (human) user. Like on Telegram, the private chat with the
    /// bot has the user's id as chat id; it is registered too.
    pub fn add_user(&self, id: i64, first_name: &str, last_name: Option<&str>, username: Option<&str>) -> TgUser {
        let user = TgUser {
            id,
            first_name: first_name.to_owned(),
            last_name: last_name.map(str::to_owned),
            username: username.map(str::to_owned),
            is_bot: false,
        };
        let mut st = self.shared.lock();
        st.users.insert(id, user.clone());
        st.chats
            .entry(id)
            .or_insert_with(|| Chat::new(id, ChatType::Private, None, Some(user.clone())));
        user
    }

    /// A user posts `text` in `chat_id`; queues a `message` update and returns the message id.
    pub fn inject_text(&self, chat_id: i64, from: &TgUser, text: &str) -> i32 {
        self.inject_message(chat_id, from, text, Value::Null, None)
    }

    /// A user posts `text` with `entities` (a JSON array of `MessageEntity`, or
    /// `null`), optionally replying to `reply_to`; queues a `message` update
    /// (with a full `reply_to_message`) and returns the message id.
    ///
    /// Panics if the chat is not registered or the reply target does not exist.
    pub fn inject_message(
        &self,
        chat_id: i64,
        from: &TgUser,
        text: &str,
        entities: Value,
        reply_to: Option<i32>,
    ) -> i32 {
        self.inject_message_in(chat_id, None, from, text, entities, reply_to)
    }

    /// [`FakeTelegram::inject_message`] in forum topic `thread` (`None`: where the reply target
    /// is, else the General topic). As on Telegram, a reply lands in its target's topic without
    /// naming it, and a reply to a message of another topic shows it as `external_reply`.
    ///
    /// Panics if `thread` is not a topic of the chat.
    pub fn inject_message_in(
        &self,
        chat_id: i64,
        thread: Option<i32>,
        from: &TgUser,
        text: &str,
        entities: Value,
        reply_to: Option<i32>,
    ) -> i32 {
        let entities = match entities {
            Value::Null => Vec::new(),
            Value::Array(entities) => entities,
            other => panic!("fake Telegram: entities must be a JSON array or null, got {other}"),
        };
        self.inject(chat_id, thread, from, text, entities, reply_to, None, false)
    }

    /// A user posts `text` in topic `thread` of forum `chat_id`; queues a `message` update (with
    /// `message_thread_id`, `is_topic_message` and the topic's creation message as
    /// `reply_to_message`) and returns the message id.
    pub fn inject_topic_text(&self, chat_id: i64, thread: i32, from: &TgUser, text: &str) -> i32 {
        self.inject_message_in(chat_id, Some(thread), from, text, Value::Null, None)
    }

    /// Stores a user message (a text, or a caption with `media` fields) and
    /// queues its `message` update.
    #[allow(clippy::too_many_arguments)]
    fn inject(
        &self,
        chat_id: i64,
        thread: Option<i32>,
        from: &TgUser,
        text: &str,
        entities: Vec<Value>,
        reply_to: Option<i32>,
        media: Option<Map<String, Value>>,
        service: bool,
    ) -> i32 {
        let mut st = self.shared.lock();
        st.users.entry(from.id).or_insert_with(|| from.clone());
        let date = st.now();
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: inject into unknown chat {chat_id}; call add_chat first"));
        if let Some(target) = reply_to {
            assert!(
                chat.live(target).is_some(),
                "fake Telegram: reply target {target} does not exist in chat {chat_id}"
            );
        }
        if let Some(thread) = thread {
            assert!(
                chat.topic_of(thread) == Some(thread),
                "fake Telegram: {thread} is not a topic of chat {chat_id}"
            );
        }
        let place = chat.place(thread, reply_to);
        let message_id = chat.alloc_message_id();
        chat.messages.insert(
            message_id,
            StoredMessage {
                from: from.clone(),
                date,
                text: text.to_owned(),
                entities,
                media,
                reply_to,
                edit_date: None,
                link_preview_options: None,
                deleted: false,
                place,
                service,
            },
        );
        st.deliver(chat_id, message_id, "message");
        drop(st);
        self.notify_update();
        message_id
    }

    /// A user posts a photo of `width`x`height` pixels (two sizes: a
    /// thumbnail and the full size last, both with `bytes`) with an optional
    /// caption; queues a `message` update and returns the message id.
    pub fn inject_photo(
        &self,
        chat_id: i64,
        from: &TgUser,
        bytes: Vec<u8>,
        width: u32,
        height: u32,
        caption: Option<&str>,
    ) -> i32 {
        let photo = {
            let mut st = self.shared.lock();
            let mime = Some("image/jpeg".to_owned());
            let file = st.store_file(MediaKind::Photo, "photos", bytes.into(), None, mime);
            file.dims = Some((width, height));
            let file_id = file.file_id.clone();
            st.photo_sizes(&file_id)
        };
        self.inject_file_message(chat_id, from, caption, "photo", photo)
    }

    /// A user posts a file as a document with an optional caption; queues a
    /// `message` update and returns the message id.
    pub fn inject_document(
        &self,
        chat_id: i64,
        from: &TgUser,
        bytes: Vec<u8>,
        file_name: &str,
        mime: &str,
        caption: Option<&str>,
    ) -> i32 {
        let document = {
            let mut st = self.shared.lock();
            let file = st.store_file(
                MediaKind::Document,
                MediaKind::Document.dir(),
                bytes.into(),
                Some(file_name.to_owned()),
                Some(mime.to_owned()),
            );
            let mut document = file.meta_json();
            document["file_name"] = json!(file_name);
            document["mime_type"] = json!(mime);
            document
        };
        self.inject_file_message(chat_id, from, caption, "document", document)
    }

    /// A user posts a voice message (`audio/ogg`) of `duration` seconds;
    /// queues a `message` update and returns the message id.
    pub fn inject_voice(&self, chat_id: i64, from: &TgUser, bytes: Vec<u8>, duration: u32) -> i32 {
        let voice = {
            let mut st = self.shared.lock();
            let mime = Some("audio/ogg".to_owned());
            let file = st.store_file(MediaKind::Voice, MediaKind::Voice.dir(), bytes.into(), None, mime);
            let mut voice = file.meta_json();
            voice["duration"] = json!(duration);
            voice["mime_type"] = json!("audio/ogg");
            voice
        };
        self.inject_file_message(chat_id, from, None, "voice", voice)
    }

    /// A user posts a message of any other kind: `fields` (a JSON object such
    /// as `{"sticker": {..}}` or `{"location": {..}}`) is merged into the
    /// `Message` object. Queues a `message` update and returns the message id.
    /// Use [`FakeTelegram::add_file`] and [`FakeTelegram::file_meta`] for the
    /// file fields of a downloadable attachment.
    pub fn inject_media(&self, chat_id: i64, from: &TgUser, fields: Value) -> i32 {
        self.inject_media_in(chat_id, None, from, fields)
    }

    /// [`FakeTelegram::inject_media`] in forum topic `thread` (`None`: the General topic).
    pub fn inject_media_in(&self, chat_id: i64, thread: Option<i32>, from: &TgUser, fields: Value) -> i32 {
        let Value::Object(fields) = fields else {
            panic!("fake Telegram: inject_media fields must be a JSON object, got {fields}");
        };
        self.inject(chat_id, thread, from, "", Vec::new(), None, Some(fields), false)
    }

    fn inject_file_message(
        &self,
        chat_id: i64,
        from: &TgUser,
        caption: Option<&str>,
        field: &str,
        value: Value,
    ) -> i32 {
        let media = Map::from_iter([(field.to_owned(), value)]);
        let caption = caption.unwrap_or("");
        self.inject(chat_id, None, from, caption, Vec::new(), None, Some(media), false)
    }

    /// `user` changes their reactions to `message_id` from the emoji `old` to
    /// `new`; queues a `message_reaction` update, which (as on Telegram) only
    /// exists if the last `allowed_updates` listed `message_reaction`.
    ///
    /// Panics if the message does not exist.
    pub fn inject_reaction(&self, chat_id: i64, user: &TgUser, message_id: i32, old: &[&str], new: &[&str]) {
        let emoji = |list: &[&str]| -> Vec<Value> {
            list.iter()
                .map(|emoji| json!({ "type": "emoji", "emoji": emoji }))
                .collect()
        };
        let mut st = self.shared.lock();
        st.users.entry(user.id).or_insert_with(|| user.clone());
        let chat = st
            .chats
            .get(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: unknown chat {chat_id}"));
        assert!(
            chat.live(message_id).is_some(),
            "fake Telegram: no message {message_id} in chat {chat_id} to react to"
        );
        let payload = json!({
            "chat": chat.to_json(),
            "message_id": message_id,
            "user": user.to_json(),
            "date": st.now(),
            "old_reaction": emoji(old),
            "new_reaction": emoji(new),
        });
        st.push_update("message_reaction", payload);
        drop(st);
        self.notify_update();
    }

    /// Stores a file (as a document) and returns its `file_id`; see
    /// [`FakeTelegram::file_meta`] for its `file_unique_id` and size.
    pub fn add_file(&self, bytes: Vec<u8>) -> String {
        let kind = MediaKind::Document;
        let mut st = self.shared.lock();
        st.store_file(kind, kind.dir(), bytes.into(), None, None)
            .file_id
            .clone()
    }

    /// `{"file_id", "file_unique_id", "file_size"}` of a known file (the
    /// fields every Bot API file object starts with), `None` if unknown.
    pub fn file_meta(&self, file_id: &str) -> Option<Value> {
        self.shared.lock().files.get(file_id).map(StoredFile::meta_json)
    }

    /// The bytes of a known file (`None` if unknown or only known by URL).
    pub fn file_bytes(&self, file_id: &str) -> Option<Vec<u8>> {
        let st = self.shared.lock();
        let file = st.files.get(file_id).filter(|f| f.url.is_none())?;
        Some(file.bytes.to_vec())
    }

    /// Sets the largest file size `getFile` accepts (default 20 MiB).
    pub fn set_download_limit(&self, bytes: u64) {
        self.shared.lock().download_limit = bytes;
    }

    /// Gives `user_id` a profile photo (replacing any previous one):
    /// `getUserProfilePhotos` then returns one photo in two sizes (160 px and
    /// 640 px on the longest side, at most the image's own size if its header
    /// is readable), both downloadable with `bytes`.
    pub fn set_profile_photo(&self, user_id: i64, bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        let full = image_dimensions(&bytes).map_or((640, 640), |dims| fit(dims, 640));
        let mut st = self.shared.lock();
        let sizes = [fit(full, 160), full]
            .into_iter()
            .map(|dims| {
                let mime = Some("image/jpeg".to_owned());
                let file = st.store_file(MediaKind::Photo, "profile_photos", bytes.clone(), None, mime);
                file.dims = Some(dims);
                file.file_id.clone()
            })
            .collect();
        st.profile_photos.insert(user_id, sizes);
    }

    /// The author of `message_id` edits it to `new_text` (entities cleared);
    /// queues an `edited_message` update carrying `edit_date`.
    ///
    /// Panics if the message does not exist.
    pub fn inject_edit(&self, chat_id: i64, message_id: i32, new_text: &str) {
        let mut st = self.shared.lock();
        let now = st.now();
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: unknown chat {chat_id}"));
        let message = chat
            .messages
            .get_mut(&message_id)
            .filter(|m| !m.deleted)
            .unwrap_or_else(|| panic!("fake Telegram: no message {message_id} in chat {chat_id} to edit"));
        message.text = new_text.to_owned();
        message.entities.clear();
        message.edit_date = Some(now.max(message.date));
        st.deliver(chat_id, message_id, "edited_message");
        drop(st);
        self.notify_update();
    }

    /// Sets a chat's description and photo (as `getChat` reports them; `None` removes them).
    pub fn set_chat_details(&self, chat_id: i64, description: Option<&str>, photo: Option<Vec<u8>>) {
        let mut st = self.shared.lock();
        let photo = photo.map(|bytes| {
            let mime = Some("image/jpeg".to_owned());
            st.store_file(MediaKind::Photo, "photos", bytes.into(), None, mime)
                .file_id
                .clone()
        });
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: unknown chat {chat_id}"));
        chat.description = description.map(str::to_owned);
        chat.photo = photo;
    }

    /// A chat's title, description and photo bytes, as the bot set them (or the test did).
    pub fn chat_details(&self, chat_id: i64) -> (Option<String>, Option<String>, Option<Vec<u8>>) {
        let st = self.shared.lock();
        let chat = st
            .chats
            .get(&chat_id)
            .unwrap_or_else(|| panic!("fake Telegram: unknown chat {chat_id}"));
        let photo = chat
            .photo
            .as_ref()
            .and_then(|id| st.files.get(id))
            .map(|f| f.bytes.to_vec());
        (chat.title.clone(), chat.description.clone(), photo)
    }

    /// A service message (`new_chat_members`, `left_chat_member`, `new_chat_title`,
    /// `pinned_message`, ...) from `from`: `fields` (a JSON object) is merged into the `Message`
    /// object, which has no text. Queues a `message` update and returns the message id.
    pub fn inject_service(&self, chat_id: i64, from: &TgUser, fields: Value) -> i32 {
        self.inject_service_in(chat_id, None, from, fields)
    }

    /// [`FakeTelegram::inject_service`] in forum topic `thread` (`None`: the General topic).
    pub fn inject_service_in(&self, chat_id: i64, thread: Option<i32>, from: &TgUser, fields: Value) -> i32 {
        let Value::Object(fields) = fields else {
            panic!("fake Telegram: inject_service fields must be a JSON object, got {fields}");
        };
        self.inject(chat_id, thread, from, "", Vec::new(), None, Some(fields), true)
    }

    /// Queues an arbitrary update `{"update_id": .., kind: payload}` (e.g.
    /// `"callback_query"`). Returns its update id, or `None` if the current
    /// `allowed_updates` setting filters it out.
    pub fn inject_update(&self, kind: &str, payload: Value) -> Option<i64> {
        let id = self.shared.lock().push_update(kind, payload);
        self.notify_update();
        id
    }

    /// The basic group `old` becomes supergroup `new` (same title), as when an admin makes its
    /// history visible or it grows: from now on every request naming `old` answers 400 `group
    /// chat was upgraded to a supergroup chat` with `parameters.migrate_to_chat_id`. `by` did
    /// it; the two service messages are queued (see [`FakeTelegram::announce_upgrade`]).
    ///
    /// Panics if `old` is not a registered basic group.
    pub fn upgrade_group(&self, old: i64, new: i64, by: &TgUser) {
        self.upgrade_group_quietly(old, new);
        self.announce_upgrade(old, new, by);
    }

    /// [`FakeTelegram::upgrade_group`] without its service messages (yet): as when a send to
    /// the old id crosses the upgrade before the bot read of it.
    pub fn upgrade_group_quietly(&self, old: i64, new: i64) {
        let mut st = self.shared.lock();
        let title = match st.chats.get(&old) {
            Some(chat) if chat.kind == ChatType::Group => chat.title.clone(),
            _ => panic!("fake Telegram: {old} is not a basic group to upgrade"),
        };
        st.chats
            .entry(new)
            .or_insert_with(|| Chat::new(new, ChatType::Supergroup, title, None));
        st.upgraded.insert(old, new);
        drop(st);
        self.shared.activity.notify_waiters();
    }

    /// The service messages of an upgrade, queued for every bot: `migrate_from_chat_id` in the
    /// supergroup, then `migrate_to_chat_id` in the old group (the order Telegram uses).
    pub fn announce_upgrade(&self, old: i64, new: i64, by: &TgUser) {
        let mut st = self.shared.lock();
        let service = |st: &mut FakeState, chat_id: i64, key: &str, other: i64| {
            let date = st.now();
            let chat = st.chats.get_mut(&chat_id).expect("registered by upgrade_group");
            let payload = json!({
                "message_id": chat.alloc_message_id(),
                "from": by.to_json(),
                "chat": chat.to_json(),
                "date": date,
                key: other,
            });
            for who in std::iter::once(None).chain((0..st.accounts.len()).map(Some)) {
                st.push_update_for(who, "message", payload.clone());
            }
        };
        service(&mut st, new, "migrate_from_chat_id", old);
        service(&mut st, old, "migrate_to_chat_id", new);
        drop(st);
        self.notify_update();
    }

    /// The ids of the chats the bot asked about or posted to (`chat_id` of every request), in
    /// order, failed requests included: what went to a group after it was upgraded.
    pub fn chats_addressed(&self) -> Vec<(String, i64)> {
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter_map(|(method, p)| {
                let chat = p.get("chat_id")?;
                let chat = chat.as_i64().or_else(|| chat.as_str()?.trim().parse().ok())?;
                Some((method.clone(), chat))
            })
            .collect()
    }

    fn notify_update(&self) {
        self.shared.updates_changed.notify_waiters();
        self.shared.activity.notify_waiters();
    }

    /// The current Bot API `Message` JSON of a stored message (`None` if unknown or deleted).
    pub fn message(&self, chat_id: i64, message_id: i32) -> Option<Value> {
        self.shared.lock().chats.get(&chat_id)?.message_json(message_id, true)
    }

    /// Every message the bot sent to `chat_id`, in order, deleted ones included (`deleted: true`).
    pub fn sent(&self, chat_id: i64) -> Vec<SentMessage> {
        self.shared
            .lock()
            .sent
            .iter()
            .filter(|s| s.chat_id == chat_id)
            .cloned()
            .collect()
    }

    /// `(message_id, raw new text or caption)` of every successful
    /// `editMessageText` / `editMessageCaption` in `chat_id`, in order.
    pub fn edits(&self, chat_id: i64) -> Vec<(i32, String)> {
        let st = self.shared.lock();
        st.edits
            .iter()
            .filter(|e| e.0 == chat_id)
            .map(|(_, id, text)| (*id, text.clone()))
            .collect()
    }

    /// Ids of the messages the bot deleted in `chat_id`, in order.
    pub fn deleted(&self, chat_id: i64) -> Vec<i32> {
        let st = self.shared.lock();
        st.deletions.iter().filter(|d| d.0 == chat_id).map(|d| d.1).collect()
    }

    /// `(message_id, reaction array)` of every `setMessageReaction` in `chat_id`, in order.
    pub fn reactions(&self, chat_id: i64) -> Vec<(i32, Value)> {
        let st = self.shared.lock();
        st.reactions
            .iter()
            .filter(|r| r.0 == chat_id)
            .map(|(_, id, r)| (*id, r.clone()))
            .collect()
    }

    /// Message ids currently pinned in `chat_id`, oldest pin first.
    pub fn pinned(&self, chat_id: i64) -> Vec<i32> {
        self.shared
            .lock()
            .chats
            .get(&chat_id)
            .map(|c| c.pinned.clone())
            .unwrap_or_default()
    }

    /// The command list last set with `setMyCommands` (a JSON array).
    pub fn commands(&self) -> Value {
        self.shared.lock().commands.clone()
    }

    /// Number of queued updates not yet confirmed through `getUpdates`'s `offset`.
    pub fn pending_updates(&self) -> usize {
        let mut st = self.shared.lock();
        st.expire_updates();
        st.updates.len()
    }

    /// How many times `method` was called (case-insensitive), failed calls included.
    pub fn calls(&self, method: &str) -> usize {
        self.shared
            .lock()
            .calls
            .get(&method.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The parameters (a JSON object; `null` if unparsable) of every call of
    /// `method`, in order. Form and query values appear as strings.
    pub fn requests(&self, method: &str) -> Vec<Value> {
        let method = method.to_ascii_lowercase();
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Fault injection: the next `times` calls of `method` fail with HTTP
    /// `status` and the matching Bot API error, without side effects. With
    /// 429 the description is `Too Many Requests: retry after N` and
    /// `retry_after: Some(N)` is sent as `parameters.retry_after`. Successive
    /// calls queue up. Note teloxide sleeps 10 s on any 5xx answer.
    pub fn fail_next(&self, method: &str, status: u16, retry_after: Option<u32>, times: usize) {
        let mut st = self.shared.lock();
        let queue = st.faults.entry(method.to_ascii_lowercase()).or_default();
        queue.extend(std::iter::repeat_n(ApiError::injected(status, retry_after), times));
    }

    /// Enforce Telegram's flood limits from now on (`None`: off, the default); see the module
    /// doc. Only the benchmarks switch them on.
    pub fn set_rate_limits(&self, limits: Option<RateLimits>) {
        self.shared.lock().rate_limits = limits;
    }

    /// Posts refused with 429 by [`FakeTelegram::set_rate_limits`]'s limits.
    pub fn rate_limited(&self) -> usize {
        self.shared.lock().rate_limited
    }

    /// Every post checked against the rate limits while they were on: (chat, arrival, accepted).
    pub fn post_log(&self) -> Vec<(i64, std::time::Instant, bool)> {
        self.shared.lock().post_log.clone()
    }

    /// The next call of `method` is carried out, but its answer waits until a permit is added
    /// to the returned semaphore (`add_permits(1)`).
    pub fn hold_next_answer(&self, method: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.shared
            .lock()
            .holds
            .insert(method.to_ascii_lowercase(), gate.clone());
        gate
    }

    /// The next `times` calls of `method` are carried out (a message is posted), but the
    /// connection breaks before the answer is complete, as when a network fails mid-request.
    pub fn lose_next_answers(&self, method: &str, times: usize) {
        *self
            .shared
            .lock()
            .lost_answers
            .entry(method.to_ascii_lowercase())
            .or_default() += times;
    }

    /// Waits until at least `count` messages were sent to `chat_id` and returns
    /// them all; panics with what was sent so far if `timeout` elapses first.
    pub async fn wait_sent(&self, chat_id: i64, count: usize, timeout: Duration) -> Vec<SentMessage> {
        self.wait_for(
            timeout,
            |fake| {
                let sent = fake.sent(chat_id);
                (sent.len() >= count).then_some(sent)
            },
            |fake| {
                let texts: Vec<String> = fake.sent(chat_id).into_iter().map(|s| s.text).collect();
                format!(
                    "{count} message(s) sent to chat {chat_id}; got {}: {texts:?}",
                    texts.len()
                )
            },
        )
        .await
    }

    /// Waits until `method` was called at least `count` times; panics on timeout.
    pub async fn wait_calls(&self, method: &str, count: usize, timeout: Duration) {
        self.wait_for(
            timeout,
            |fake| (fake.calls(method) >= count).then_some(()),
            |fake| format!("{count} call(s) of {method}; got {}", fake.calls(method)),
        )
        .await
    }

    /// Waits until `condition` holds; panics mentioning `what` on timeout.
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut condition: impl FnMut(&FakeTelegram) -> bool) {
        self.wait_for(timeout, |fake| condition(fake).then_some(()), |_| what.to_owned())
            .await
    }

    /// Re-evaluates `check` after every request and test-side mutation until it
    /// yields a value; on timeout panics with `describe`'s account of the state.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&FakeTelegram) -> Option<T>,
        describe: impl FnOnce(&FakeTelegram) -> String,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.activity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(self) {
                return value;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(value) = check(self) {
                    return value;
                }
                panic!(
                    "fake Telegram: timed out after {timeout:?} waiting for {}",
                    describe(self)
                );
            }
        }
    }
}
