//! Matrix -> Telegram: one stored appservice event at a time.

use ruma::{EventId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;
use teloxide::types::{ChatId, MessageId};

use super::media::part_of;
use super::{Bridge, SOURCE_KEY};
use crate::error::{Error, Result};
use crate::split::{Measure, TELEGRAM_TEXT, split_html};
use crate::storage::Direction;
use crate::telegram::format::escape_html;
use crate::telegram::html::{matrix_html_to_telegram, plain_to_telegram};
use crate::telegram::sender::Turn;
use crate::telegram::{Place, TgError};

/// How long an encrypted event without keys is retried before the Telegram side is told.
const UTD_WAIT_MS: i64 = 20_000;

/// Matrix events already posted to Telegram whose link could not be written (the database
/// failed right after the send): event id -> Telegram message id. The retry writes the link
/// instead of posting the message again. In memory: a restart meanwhile leaves the send intent
/// (see `begin_send`), which the audit reports as a possible repeat.
#[derive(Default)]
pub struct Unlinked(std::sync::Mutex<std::collections::HashMap<ruma::OwnedEventId, i32>>);

impl Unlinked {
    fn get(&self, event: &ruma::EventId) -> Option<i32> {
        self.0.lock().expect("lock").get(event).copied()
    }

    fn insert(&self, event: &ruma::EventId, msg: i32) {
        self.0.lock().expect("lock").insert(event.to_owned(), msg);
    }

    fn remove(&self, event: &ruma::EventId) {
        self.0.lock().expect("lock").remove(event);
    }
}

tokio::task_local! {
    /// The inbox row of the event a Matrix -> Telegram lane is handling ([`Bridge::handle_mx_item`]):
    /// the message-map row that ends the event removes it in the same transaction, one commit
    /// instead of two per message.
    static INBOX_ROW: std::cell::RefCell<InboxRow>;
}

/// See [`INBOX_ROW`].
struct InboxRow {
    /// `mx_inbox.seq`.
    seq: i64,
    /// The event's id: only its own link removes the row.
    event_id: Option<String>,
    /// Removed with the link.
    removed: bool,
}

/// Just the event id of a stored event (a full parse comes later).
#[derive(serde::Deserialize)]
struct EventIdOnly<'a> {
    #[serde(borrow)]
    event_id: Option<std::borrow::Cow<'a, str>>,
}

impl Bridge {
    /// Handle one event of the Matrix inbox. Returns whether its inbox row was already removed
    /// (with the event's link, see [`INBOX_ROW`]); otherwise the caller removes it.
    pub async fn handle_mx_item(&self, item: &crate::storage::InboxItem) -> Result<bool> {
        let event_id = serde_json::from_str::<EventIdOnly>(&item.json)
            .ok()
            .and_then(|e| e.event_id)
            .map(|e| e.into_owned());
        let row = std::cell::RefCell::new(InboxRow {
            seq: item.key,
            event_id,
            removed: false,
        });
        INBOX_ROW
            .scope(row, async {
                self.handle_mx_event(&item.json).await?;
                Ok(INBOX_ROW.with(|r| r.borrow().removed))
            })
            .await
    }

    /// Write the link of a Matrix event posted to Telegram; removes the event's inbox row in the
    /// same transaction when this task handles that row.
    #[allow(clippy::too_many_arguments)]
    async fn link_posted(
        &self,
        to: Place,
        msg: i32,
        room: &ruma::RoomId,
        event_id: &EventId,
        sender: &UserId,
        ts: i64,
    ) -> Result<()> {
        let seq = INBOX_ROW
            .try_with(|r| {
                let r = r.borrow();
                (!r.removed && r.event_id.as_deref() == Some(event_id.as_str())).then_some(r.seq)
            })
            .ok()
            .flatten();
        self.store
            .link_message(to, msg, room, event_id, Direction::MxToTg, sender, ts, seq)
            .await?;
        if seq.is_some() {
            INBOX_ROW.with(|r| r.borrow_mut().removed = true);
        }
        Ok(())
    }

    /// Whether a Matrix event is the bridge's own coming back: a non-state event sent by the bot
    /// or a puppet, or a double puppet's relayed post (a mapped person's event carrying the
    /// bridge's source mark; anyone else's mark is ignored, or any user could hide a message
    /// from Telegram by adding it). State events (membership, encryption) always matter.
    pub fn is_own_echo(&self, ev: &Value) -> bool {
        let Some(sender) = ev["sender"].as_str().and_then(|s| UserId::parse(s).ok()) else {
            return false;
        };
        ev.get("state_key").is_none()
            && (self.is_bridge_user(&sender)
                || (ev["content"].get(SOURCE_KEY).is_some() && self.identity_for_mx(&sender).is_some()))
    }

    pub async fn handle_mx_event(&self, json: &str) -> Result<()> {
        let ev: Value = serde_json::from_str(json)?;
        let (Some(kind), Some(sender), Some(room)) = (
            ev["type"].as_str(),
            ev["sender"].as_str().and_then(|s| OwnedUserId::try_from(s).ok()),
            ev["room_id"].as_str().and_then(|r| OwnedRoomId::try_from(r).ok()),
        ) else {
            tracing::debug!("event without type/sender/room ignored");
            return Ok(());
        };
        tracing::trace!(event = %json, "matrix event");
        if kind == "m.room.member" {
            return self.mx_member(&ev, &room, &sender).await;
        }
        // The management room is never bridged: operators' commands (see `management`).
        if self.is_management_room(&room).await? {
            return self.management_event(&ev, &room, &sender).await;
        }
        let Some(portal) = self.portals.place_for_room(&room) else {
            if self.has_unresolved_rooms() {
                // It may belong to a configured room not joined yet: retried, never dropped.
                return Err(crate::error::Error::NotReady(format!("room {room} not resolved yet")));
            }
            tracing::debug!(%room, "event from an unbridged room ignored");
            return Ok(());
        };
        if kind == "m.room.encryption" && ev["state_key"] == "" {
            return self.room_encrypted(&room).await;
        }
        if matches!(kind, "m.room.name" | "m.room.topic" | "m.room.avatar") {
            return self.mx_room_detail(&ev, &room, &sender, portal, kind).await;
        }
        if self.is_own_echo(&ev) {
            return Ok(()); // normally not even stored (see `is_own_echo`)
        }
        if self.holds_matrix(portal.chat) {
            // Normally held in the inbox by the lane (`bridge::standby`); one taken just before
            // the switch waits here, in order, for the rollback.
            return Err(Error::Held("standby: waits for the rollback".into()));
        }
        if kind == "m.room.encrypted" {
            return self.mx_encrypted(&ev, &room, &sender, portal).await;
        }
        if self.cfg().encryption.require {
            self.check_encryption(&room).await?;
            if !self.is_encrypted(&room) {
                tracing::warn!(%room, "not relayed: the room is not encrypted and `encryption.require` is on");
                return Ok(());
            }
        }
        match kind {
            "m.room.message" | "m.sticker" | POLL_START | POLL_START_UNSTABLE => {
                self.mx_message(&ev, &room, &sender, portal).await
            }
            "m.room.redaction" => self.mx_redaction(&ev, portal.chat).await,
            "m.reaction" => self.mx_reaction(&ev, &sender, portal.chat).await,
            _ => self.mx_not_carried(&ev, kind, &room, &sender, portal).await,
        }
    }

    /// An encrypted event: decrypted with the bot's device, then bridged like a plain one. Keys
    /// that have not arrived yet are waited for (the lane retries) until the event is
    /// [`UTD_WAIT_MS`] old; then the Telegram side gets a notice instead of silence.
    async fn mx_encrypted(&self, ev: &Value, room: &OwnedRoomId, sender: &OwnedUserId, portal: Place) -> Result<()> {
        use crate::matrix::crypto::Decrypted;
        if !self.cfg().encryption.allow {
            tracing::warn!(%room, "encrypted event not relayed: `encryption.allow` is off");
            return Ok(());
        }
        match self.intents.decrypt(room, ev).await? {
            Decrypted::Event(clear) => {
                if clear["type"] == "m.room.encrypted" {
                    return Err(Error::Internal("decrypted event is still encrypted".into()));
                }
                Box::pin(self.handle_mx_event(&clear.to_string())).await
            }
            Decrypted::Undecryptable(reason) => {
                // Keys normally arrive (to-device, through the bot's sync) within a second or two.
                let age = crate::storage::now_ms() - ev["origin_server_ts"].as_i64().unwrap_or(0);
                if age < UTD_WAIT_MS {
                    return Err(Error::NotReady(format!(
                        "no keys yet for an encrypted event ({reason})"
                    )));
                }
                let event_id = ev["event_id"].as_str().unwrap_or_default();
                tracing::warn!(%room, event_id, "cannot decrypt: {reason}");
                crate::metrics::METRICS.failed(crate::storage::Direction::MxToTg);
                self.store
                    .record_failure(
                        crate::storage::Direction::MxToTg,
                        &format!("undecryptable:{event_id}"),
                        &format!("cannot decrypt: {reason}"),
                    )
                    .await?;
                let name = crate::telegram::format::escape_html(&self.matrix_name(room, sender).await);
                let text = format!("⚠ <b>{name}</b> sent an encrypted message the bridge could not decrypt.");
                let turn = self.tg.turn_at(portal).await;
                self.tg.send_html(turn, text, None).await?;
                Ok(())
            }
        }
    }

    async fn mx_member(&self, ev: &Value, room: &OwnedRoomId, sender: &OwnedUserId) -> Result<()> {
        let Some(target) = ev["state_key"].as_str().and_then(|s| OwnedUserId::try_from(s).ok()) else {
            return Ok(());
        };
        let membership = ev["content"]["membership"].as_str().unwrap_or_default();
        if target == self.bot_mxid {
            if membership == "invite" {
                self.bot_invited(room, Some(sender)).await?;
            }
            return Ok(());
        }
        match membership {
            "join" => self
                .people
                .remember_name(room, &target, ev["content"]["displayname"].as_str()),
            "leave" | "ban" => {
                self.people.remember_name(room, &target, None);
                if self.is_bridge_user(&target) || self.identity_for_mx(&target).is_some() {
                    self.store.set_member(&target, room, false).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Telegram HTML for a Matrix message body, without the sender prefix.
    fn mx_body_html(content: &Value) -> String {
        let formatted = (content["format"].as_str() == Some("org.matrix.custom.html"))
            .then(|| content["formatted_body"].as_str())
            .flatten();
        match formatted {
            Some(html) => matrix_html_to_telegram(html),
            None => plain_to_telegram(content["body"].as_str().unwrap_or_default()),
        }
    }

    async fn relay_text(&self, room: &OwnedRoomId, sender: &OwnedUserId, content: &Value) -> String {
        let name = escape_html(&self.matrix_name(room, sender).await);
        let body = Self::mx_body_html(content);
        match content["msgtype"].as_str() {
            Some("m.emote") => format!("* <b>{name}</b> {body}"),
            Some("m.text" | "m.notice") | None => format!("<b>{name}</b>: {body}"),
            Some(_) => format!("<b>{name}</b>: [file] {body}"),
        }
    }

    async fn mx_message(&self, ev: &Value, room: &OwnedRoomId, sender: &OwnedUserId, portal: Place) -> Result<()> {
        let chat = portal.chat;
        let Some(event_id) = ev["event_id"].as_str().and_then(|e| <&ruma::EventId>::try_from(e).ok()) else {
            return Ok(());
        };
        let content = &ev["content"];
        let relates = &content["m.relates_to"];
        if relates["rel_type"].as_str() == Some("m.replace") {
            let Some(target) = relates["event_id"]
                .as_str()
                .and_then(|e| <&ruma::EventId>::try_from(e).ok())
            else {
                return Ok(());
            };
            let Some(link) = self.store.link_by_event(target).await? else {
                return Ok(());
            };
            if link.direction != Direction::MxToTg || link.sender != *sender {
                return Ok(());
            }
            let new_content = if content["m.new_content"].is_object() {
                &content["m.new_content"]
            } else {
                content
            };
            let text = self.relay_text(room, sender, new_content).await;
            return self.edit_text_parts(&link, text).await;
        }
        if self.store.link_by_event(event_id).await?.is_some() {
            return Ok(()); // already relayed before a restart
        }
        let ts = ev["origin_server_ts"].as_i64().unwrap_or_default();
        let is_text = matches!(content["msgtype"].as_str(), Some("m.text" | "m.notice" | "m.emote"));
        if let (Some(tg_user), true) = (self.identity_for_mx(sender), is_text) {
            let body = content["body"].as_str().unwrap_or_default();
            if let Some(twin) = self
                .telegram_twin(sender, tg_user, chat, event_id.as_str(), body, ts)
                .await?
            {
                // The Telegram post is the original; on Matrix it is its bridged copy, if any.
                let mx_copy = self
                    .store
                    .link_by_tg(chat, twin)
                    .await?
                    .map_or(event_id.to_owned(), |l| l.mx_event_id);
                return self.mark_original(room, mx_copy.as_str(), chat, twin).await;
            }
        }
        let reply_link = match relates["m.in_reply_to"]["event_id"]
            .as_str()
            .and_then(|e| <&ruma::EventId>::try_from(e).ok())
        {
            Some(target) => self.store.link_by_event(target).await?,
            None => None,
        };
        let reply_to = reply_link.as_ref().map(|l| l.tg_msg_id);
        let to = self.post_place(portal, reply_link.as_ref(), relates).await?;
        let earlier = self.unlinked.get(event_id);
        let sent = match earlier {
            // Posted already; only its link is missing (the database failed after the send).
            Some(sent) => sent,
            None => {
                let kind = ev["type"].as_str().unwrap_or_default();
                let sent = if kind == "m.sticker"
                    || matches!(
                        content["msgtype"].as_str(),
                        Some("m.image" | "m.file" | "m.audio" | "m.video")
                    ) {
                    self.mx_media_to_tg(ev, event_id, room, sender, to, reply_to).await
                } else if let Some(place) = geo(content) {
                    let name = self.matrix_name(room, sender).await;
                    let address = content["body"].as_str().unwrap_or_default().to_owned();
                    let turn = self.turn_for(event_id, to, 0).await?;
                    self.tg
                        .send_venue(turn, place, name, address, reply_to.map(MessageId))
                        .await
                        .map(|m| m.0)
                        .map_err(Error::from)
                } else if let Some(poll) = Poll::of(kind, content) {
                    self.mx_poll_to_tg(event_id, room, sender, to, poll, reply_to).await
                } else {
                    let mut text = self.relay_text(room, sender, content).await;
                    if self.was_held(ts) {
                        // Held by a standby and posted after the rollback: when it was said.
                        text = format!("<i>{}</i> {text}", super::standby::held_time(ts));
                    }
                    self.send_text_parts(event_id, to, text, reply_to).await
                };
                match sent {
                    Ok(sent) => sent,
                    Err(e) => {
                        if !e.may_have_reached_telegram() {
                            self.store.forget_send(event_id).await?;
                        }
                        // A group that became a supergroup: sent again, to the new id.
                        return Err(self.upgraded_since(chat, e).await);
                    }
                }
            }
        };
        if let Err(e) = self.link_posted(to, sent, room, event_id, sender, ts).await {
            self.unlinked.insert(event_id, sent);
            return Err(e);
        }
        self.unlinked.remove(event_id);
        crate::metrics::METRICS.delivered(Direction::MxToTg, crate::storage::now_ms() - ts);
        tracing::debug!(%event_id, chat, msg = sent, "matrix -> telegram");
        Ok(())
    }

    /// Post Telegram HTML for `event_id`: in one message when it fits, else in parts cut at
    /// paragraph, line or word boundaries (`crate::split`), each recorded as soon as it is sent,
    /// so a retry after a crash or an error sends only the parts still missing. The first part
    /// replies to `reply_to`. Returns the first part's message id.
    async fn send_text_parts(&self, event_id: &EventId, to: Place, html: String, reply_to: Option<i32>) -> Result<i32> {
        let parts = split_html(&html, TELEGRAM_TEXT, Measure::VisibleUtf16);
        if parts.len() == 1 {
            let turn = self.turn_for(event_id, to, 0).await?;
            return Ok(self.tg.send_html(turn, html, reply_to.map(MessageId)).await?.0);
        }
        let done = self.store.parts_of_event(event_id).await?;
        let mut first = done.iter().find(|p| p.part == 0).map(|p| p.tg_msg_id);
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let i = i as i64;
            if done.iter().any(|p| p.part == i) {
                continue;
            }
            let turn = self.turn_for(event_id, to, i).await?;
            let reply = if i == 0 { reply_to } else { None };
            let msg = self.tg.send_html(turn, part, reply.map(MessageId)).await?.0;
            self.store.save_part(&part_of(event_id, i, to.chat, msg)).await?;
            first.get_or_insert(msg);
        }
        tracing::info!(%event_id, chat = to.chat, parts = count, "long message sent in parts");
        first.ok_or_else(|| Error::Internal("a message in parts without a first part".into()))
    }

    /// Apply an edit of a Matrix message to its Telegram message, or to every part of it: parts
    /// are edited in place, new parts sent, parts no longer needed deleted.
    async fn edit_text_parts(&self, link: &crate::storage::MessageLink, html: String) -> Result<()> {
        let chat = link.tg_chat_id;
        let old = self.store.parts_of_event(&link.mx_event_id).await?;
        let mut old_msgs: Vec<i32> = old.iter().map(|p| p.tg_msg_id).collect();
        if old_msgs.is_empty() {
            old_msgs.push(link.tg_msg_id);
        }
        let new = split_html(&html, TELEGRAM_TEXT, Measure::VisibleUtf16);
        let record = |i: usize, msg: i32| part_of(&link.mx_event_id, i as i64, chat, msg);
        for (i, part) in new.iter().enumerate() {
            match old_msgs.get(i) {
                Some(msg) => match self.tg.edit_html(ChatId(chat), MessageId(*msg), part.clone()).await {
                    Ok(()) | Err(TgError::NotModified) => {}
                    Err(e) => return Err(e.into()),
                },
                None => {
                    if i == 1 && old.is_empty() {
                        // The message was whole until now: its first part is recorded too.
                        self.store.save_part(&record(0, link.tg_msg_id)).await?;
                    }
                    // A send intent like any post: a stop mid-send is reported, not hidden.
                    let place = Place::topic(chat, link.tg_thread_id);
                    let turn = self.turn_for(&link.mx_event_id, place, i as i64).await?;
                    let msg = match self.tg.send_html(turn, part.clone(), None).await {
                        Ok(m) => m.0,
                        Err(e) => {
                            let e = Error::from(e);
                            if !e.may_have_reached_telegram() {
                                self.store.forget_send(&link.mx_event_id).await?;
                            }
                            return Err(e);
                        }
                    };
                    self.store.save_part(&record(i, msg)).await?;
                    self.store.forget_send(&link.mx_event_id).await?;
                }
            }
        }
        for (i, msg) in old_msgs.iter().enumerate().skip(new.len()) {
            if let Err(e) = self.tg.delete(ChatId(chat), MessageId(*msg)).await {
                tracing::warn!(chat, msg, "deleting a part no longer needed failed: {e}");
            }
            self.store.drop_part(&link.mx_event_id, i as i64).await?;
        }
        Ok(())
    }

    /// A Matrix poll: a native Telegram poll when it fits Telegram's limits (the question names
    /// who asked), else the question and its options as text. Votes do not cross.
    async fn mx_poll_to_tg(
        &self,
        event_id: &EventId,
        room: &OwnedRoomId,
        sender: &OwnedUserId,
        to: Place,
        poll: Poll,
        reply_to: Option<i32>,
    ) -> Result<i32> {
        let name = self.matrix_name(room, sender).await;
        let question = format!("{name}: {}", poll.question);
        if crate::telegram::sender::poll_fits(&question, &poll.options) {
            let turn = self.turn_for(event_id, to, 0).await?;
            return Ok(self
                .tg
                .send_poll(turn, question, poll.options, poll.multiple, reply_to.map(MessageId))
                .await?
                .0);
        }
        let options: String = poll.options.iter().map(|o| format!("\n• {}", escape_html(o))).collect();
        let html = format!(
            "<b>{}</b> started a poll: {}{options}",
            escape_html(&name),
            escape_html(&poll.question)
        );
        self.send_text_parts(event_id, to, html, reply_to).await
    }

    /// An event that carries something the bridge cannot carry (a call, an unknown event type
    /// with a body): a short notice in the chat and a row for `tgmx audit`. Signalling that
    /// carries nothing for people (poll votes, call negotiation, state) is skipped.
    async fn mx_not_carried(
        &self,
        ev: &Value,
        kind: &str,
        room: &OwnedRoomId,
        sender: &OwnedUserId,
        portal: Place,
    ) -> Result<()> {
        let content = &ev["content"];
        let what = if kind == "m.call.invite" {
            "a call (calls do not cross)".to_owned()
        } else if ev.get("state_key").is_some()
            || kind.starts_with("m.call.")
            || kind.contains("poll.response")
            || kind.contains("poll.end")
            || content["body"].as_str().is_none()
        {
            tracing::debug!(%room, kind, "nothing to carry");
            return Ok(());
        } else {
            format!("a {kind} event the bridge cannot carry")
        };
        let Some(event_id) = ev["event_id"].as_str().and_then(|e| <&EventId>::try_from(e).ok()) else {
            return Ok(());
        };
        if self.store.link_by_event(event_id).await?.is_some() {
            return Ok(());
        }
        let msg = match self.unlinked.get(event_id) {
            // Posted already; only its link is missing (the database failed after the send).
            Some(msg) => msg,
            None => {
                let name = escape_html(&self.matrix_name(room, sender).await);
                let html = format!("<b>{name}</b> sent {}", escape_html(&what));
                // Recorded first: whatever happens to the notice, the audit knows.
                self.store
                    .record_failure(
                        Direction::MxToTg,
                        &format!("mx:{event_id}"),
                        &format!("{kind}: not carried"),
                    )
                    .await?;
                let turn = self.turn_for(event_id, portal, 0).await?;
                self.tg.send_html(turn, html, None).await?.0
            }
        };
        let ts = ev["origin_server_ts"].as_i64().unwrap_or_default();
        if let Err(e) = self.link_posted(portal, msg, room, event_id, sender, ts).await {
            self.unlinked.insert(event_id, msg);
            return Err(e);
        }
        self.unlinked.remove(event_id);
        Ok(())
    }

    /// Take a turn to post part `part` of `event_id` in `chat` (0: the first, or the whole
    /// message; pacing), then record its send intent: right before the request, so a stop before
    /// it (while downloading a file, or waiting for the chat's rate) leaves no intent behind and
    /// no false "may show twice".
    pub(super) async fn turn_for(&self, event_id: &EventId, to: Place, part: i64) -> Result<Turn> {
        let turn = self.tg.turn_at(to).await;
        self.begin_send(event_id, to.chat, part).await?;
        Ok(turn)
    }

    /// Where on Telegram a Matrix post from `portal`'s room goes: a topic's room posts in its
    /// topic; the chat's room posts in the topic of the message it replies to (or of its Matrix
    /// thread's root), else in the chat (a forum's General topic).
    async fn post_place(
        &self,
        portal: Place,
        reply: Option<&crate::storage::MessageLink>,
        relates: &Value,
    ) -> Result<Place> {
        if portal.topic.is_some() {
            return Ok(portal);
        }
        let mut linked = reply.cloned();
        if linked.is_none()
            && relates["rel_type"] == "m.thread"
            && let Some(root) = relates["event_id"].as_str().and_then(|e| <&EventId>::try_from(e).ok())
        {
            linked = self.store.link_by_event(root).await?;
        }
        Ok(match linked {
            Some(l) if self.portals.current_chat(l.tg_chat_id) == portal.chat => {
                Place::topic(portal.chat, l.tg_thread_id)
            }
            _ => portal,
        })
    }

    /// Record that `event_id` is about to be posted. If an earlier attempt may have posted it
    /// (the daemon stopped mid-send, or Telegram's answer was lost), it is posted again and the
    /// possible repeat is recorded for `tgmx audit`: a lost message is worse than a repeated one.
    async fn begin_send(&self, event_id: &EventId, chat: i64, part: i64) -> Result<()> {
        if let Some(at) = self.store.begin_send(event_id, chat, part).await? {
            let age_s = (crate::storage::now_ms() - at) / 1000;
            tracing::warn!(
                %event_id,
                chat,
                "an attempt {age_s} s ago may have posted this message already (stopped mid-send, or the \
                 answer was lost); posting it again"
            );
            self.store
                .record_failure(
                    Direction::MxToTg,
                    &format!("possible-repeat:{event_id}"),
                    &format!(
                        "may show twice on Telegram (chat {chat}): an attempt {age_s} s earlier may have posted it \
                         before the daemon stopped or lost Telegram's answer; posted again"
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn mx_redaction(&self, ev: &Value, chat: i64) -> Result<()> {
        // Room v11+ carries `redacts` in content; older rooms at the top level.
        let Some(target) = ev["content"]["redacts"].as_str().or(ev["redacts"].as_str()) else {
            return Ok(());
        };
        tracing::debug!(redacts = target, "redaction");
        let Ok(target) = <&ruma::EventId>::try_from(target) else {
            return Ok(());
        };
        if let Some(r) = self.store.delete_reaction(target).await? {
            if r.direction == Direction::MxToTg {
                self.sync_bot_reaction(r.tg_chat_id, r.tg_msg_id).await?;
            }
            return Ok(());
        }
        let Some(link) = self.store.link_by_event(target).await? else {
            return Ok(());
        };
        if link.tg_chat_id != chat {
            return Ok(());
        }
        let parts = self.store.parts_of_event(target).await?;
        let msgs: Vec<i32> = if parts.is_empty() {
            vec![link.tg_msg_id]
        } else {
            parts.iter().map(|p| p.tg_msg_id).collect()
        };
        for msg in msgs {
            match self.tg.delete(ChatId(chat), MessageId(msg)).await {
                Ok(()) => tracing::debug!(chat, msg, "redaction -> deleteMessage"),
                // A Telegram user's message can only be deleted by an admin bot; not fatal.
                Err(e) => tracing::warn!(chat, msg, "deleteMessage failed: {e}"),
            }
        }
        Ok(())
    }
}

/// The unstable and stable event types of a Matrix poll (MSC3381).
const POLL_START_UNSTABLE: &str = "org.matrix.msc3381.poll.start";
const POLL_START: &str = "m.poll.start";

/// A Matrix poll's question and answers.
struct Poll {
    question: String,
    options: Vec<String>,
    multiple: bool,
}

impl Poll {
    /// Read a poll start event (stable `m.poll` or unstable MSC3381 content).
    fn of(kind: &str, content: &Value) -> Option<Poll> {
        let text = |v: &Value| -> Option<String> {
            v["org.matrix.msc1767.text"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| v["m.text"][0]["body"].as_str().map(str::to_owned))
                .or_else(|| v["body"].as_str().map(str::to_owned))
        };
        let poll = match kind {
            POLL_START_UNSTABLE => &content[POLL_START_UNSTABLE],
            POLL_START => &content["m.poll"],
            _ => return None,
        };
        let question = text(&poll["question"])?;
        let options: Vec<String> = poll["answers"].as_array()?.iter().filter_map(text).collect();
        let multiple = poll["max_selections"].as_u64().unwrap_or(1) > 1;
        Some(Poll {
            question,
            options,
            multiple,
        })
    }
}

/// The place of an `m.location` message (`geo:lat,lon[;u=..]`).
fn geo(content: &Value) -> Option<(f64, f64)> {
    if content["msgtype"] != "m.location" {
        return None;
    }
    let uri = content["geo_uri"].as_str()?.strip_prefix("geo:")?;
    let coords = uri.split(';').next()?;
    let mut it = coords.split(',');
    let lat: f64 = it.next()?.trim().parse().ok()?;
    let lon: f64 = it.next()?.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn places_and_polls_are_read_from_matrix_content() {
        assert_eq!(
            super::geo(&json!({"msgtype": "m.location", "geo_uri": "geo:51.5,-0.12;u=20"})),
            Some((51.5, -0.12))
        );
        assert_eq!(
            super::geo(&json!({"msgtype": "m.location", "geo_uri": "geo:500,1"})),
            None
        );
        let unstable = json!({"org.matrix.msc3381.poll.start": {"question": {"org.matrix.msc1767.text": "Deploy?"},
            "answers": [{"id": "a", "org.matrix.msc1767.text": "yes"}, {"id": "b", "org.matrix.msc1767.text": "no"}],
            "max_selections": 1}});
        let p = super::Poll::of(super::POLL_START_UNSTABLE, &unstable).unwrap();
        assert_eq!(
            (p.question.as_str(), p.options.len(), p.multiple),
            ("Deploy?", 2, false)
        );
        let stable = json!({"m.poll": {"question": {"m.text": [{"body": "Which?"}]},
            "answers": [{"m.id": "1", "m.text": [{"body": "A"}]}, {"m.id": "2", "m.text": [{"body": "B"}]}],
            "max_selections": 2}});
        let p = super::Poll::of(super::POLL_START, &stable).unwrap();
        assert_eq!(
            (p.question.as_str(), p.options, p.multiple),
            ("Which?", vec!["A".to_owned(), "B".to_owned()], true)
        );
    }
}
