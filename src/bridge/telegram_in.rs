//! Telegram -> Matrix: one stored update at a time.

use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};
use teloxide::types::{Message, UpdateKind, User};

use super::portals::Routed;
use super::{Bridge, SOURCE_KEY};
use crate::error::{Error, Result};
use crate::storage::Direction;
use crate::telegram::Place;
use crate::telegram::format::{entities_to_html, has_formatting};

/// A Matrix event is at most 65,536 bytes; content above this is sent in parts. Well below the
/// limit: in an encrypted room the content travels as base64 ciphertext, a third larger.
const MATRIX_CONTENT_MAX: usize = 40_000;
/// The HTML of one part (its plain body is at most as long, so a part stays well under the limit).
const MATRIX_PART_BYTES: usize = 16_000;

impl Bridge {
    /// Bridge one stored Telegram update (JSON as Telegram sent it), read leniently: what cannot
    /// be read is left out and recorded for `tgmx audit`; an update that cannot be read at all
    /// is announced in its room when its chat is known, and recorded.
    pub async fn handle_tg_update(&self, json: &str) -> Result<()> {
        let read = crate::telegram::update::read_update(json)?;
        if json.contains("failpoint:handler-panic") && crate::failpoint::fire("handler-panic") {
            panic!("failpoint handler-panic");
        }
        let Some(update) = read.update else {
            return self.tg_unreadable(&read).await;
        };
        // Taken just before a standby began (the lane checks before it fetches): it waits too.
        let chat = match &update.kind {
            UpdateKind::Message(m) | UpdateKind::EditedMessage(m) => Some(m.chat.id.0),
            UpdateKind::MessageReaction(r) => Some(r.chat.id.0),
            _ => None,
        };
        if self.holds_telegram(chat) {
            return Err(Error::Held("standby: waits for the rollback".into()));
        }
        let message = match &update.kind {
            UpdateKind::Message(m) | UpdateKind::EditedMessage(m) => Some((m.chat.id.0, m.id.0)),
            _ => None,
        };
        match update.kind {
            UpdateKind::Message(m) => self.tg_message(&m).await?,
            UpdateKind::EditedMessage(m) => self.tg_edit(&m).await?,
            UpdateKind::MessageReaction(r) => self.tg_reaction(&r).await?,
            other => {
                tracing::debug!(kind = ?std::mem::discriminant(&other), "ignoring telegram update");
            }
        }
        if let (false, Some((chat, msg))) = (read.dropped.is_empty(), message)
            && !self.portals.rooms_of_chat(chat).is_empty()
        {
            let what = read.dropped.join("; ");
            tracing::warn!(chat, msg, "carried without {what}");
            self.store
                .record_failure(
                    Direction::TgToMx,
                    &format!("partly:{chat}:{msg}"),
                    &format!("carried without {what}"),
                )
                .await?;
        }
        Ok(())
    }

    /// An update that cannot be read: its text, if any, goes to its room with a notice from the
    /// bot; either way it gets a row for `tgmx audit`.
    async fn tg_unreadable(&self, read: &crate::telegram::update::ReadUpdate) -> Result<()> {
        let error = read.error.as_deref().unwrap_or("unreadable");
        let salvage = read.salvage.as_ref();
        let room = salvage.and_then(|s| s.chat).and_then(|c| self.portals.room_for_chat(c));
        let text_carried = room.is_some() && salvage.is_some_and(|s| s.text.is_some());
        let source = match salvage {
            Some(s) => format!(
                "{}:{}:{}",
                if text_carried { "partly" } else { "unreadable" },
                s.chat.map_or("?".into(), |c| c.to_string()),
                s.message_id.map_or("?".into(), |m| m.to_string())
            ),
            None => format!("unreadable-update:{}", read.id.map_or("?".into(), |i| i.to_string())),
        };
        if salvage.and_then(|s| s.chat).is_some() && room.is_none() {
            tracing::debug!(%source, "unreadable update from an unbridged chat ignored");
            return Ok(());
        }
        tracing::warn!(%source, "telegram update cannot be read: {error}");
        if let (Some(room), Some(s)) = (&room, salvage) {
            let who = s.from.as_deref().unwrap_or("someone");
            let body = match &s.text {
                Some(text) => format!("⚠ A Telegram message from {who} could not be read in full; its text:\n{text}"),
                None => format!("⚠ A Telegram message from {who} could not be read and is not shown here."),
            };
            let txn = crate::matrix::txn::unreadable_update(&source);
            let content = json!({"msgtype": "m.notice", "body": body, SOURCE_KEY: {"unreadable": source}});
            self.send_event(room, &self.bot_mxid, "m.room.message", &txn, &content)
                .await?;
        }
        let carried = if text_carried {
            "its text was posted as a notice"
        } else {
            "not carried"
        };
        self.store
            .record_failure(
                Direction::TgToMx,
                &source,
                &format!(
                    "telegram update could not be read ({}); {carried}",
                    crate::error::capped(error, 300)
                ),
            )
            .await
    }

    /// Whether `user` is this bridge's Telegram bot (its id is the token's prefix).
    pub(super) fn is_own_bot(&self, user: Option<&User>) -> bool {
        let cfg = self.cfg();
        let own = cfg
            .telegram_token()
            .ok()
            .and_then(|t| t.split(':').next())
            .and_then(|id| id.parse::<u64>().ok());
        user.is_some_and(|u| u.is_bot && Some(u.id.0) == own)
    }

    /// Where a message posted in `place` goes (see [`super::portals::Portals::route`]); `None`
    /// when it is not bridged (ignored), an error when its room is configured but not resolved
    /// yet (retried).
    pub(super) fn route_of(&self, place: Place) -> Result<Option<Routed>> {
        let cfg = self.cfg();
        let chat = self.portals.current_chat(place.chat);
        let configured = |p: Place| {
            cfg.rooms
                .iter()
                .any(|r| self.portals.current_chat(r.telegram) == chat && r.telegram_topic == p.topic)
        };
        // A topic whose own room is not set up yet waits for it (not the chat's room).
        if place.topic.is_some() && configured(place) && self.portals.room_for(place).is_none() {
            return Err(Error::NotReady(format!("room for {place} not joined yet")));
        }
        if let Some(routed) = self.portals.route(place) {
            return Ok(Some(routed));
        }
        if configured(place) || configured(Place::chat(chat)) {
            return Err(Error::NotReady(format!("room for {place} not joined yet")));
        }
        Ok(None)
    }

    /// A message from a forum topic that has no room, in a forum bridged by topic rooms only:
    /// not bridged, by configuration; logged and recorded for `tgmx audit`.
    async fn unrouted_topic(&self, place: Place, msg: i32) -> Result<()> {
        if !self.chat_is_configured(place.chat) {
            tracing::debug!(chat = place.chat, "message from an unbridged chat ignored");
            return Ok(());
        }
        let topic = match place.topic {
            Some(t) => format!("topic {t}"),
            None => "the General topic".to_owned(),
        };
        tracing::debug!(%place, msg, "message from a forum topic without a room ignored");
        self.store
            .record_failure(
                Direction::TgToMx,
                &format!("ignored:topic:{}:{msg}", place.chat),
                &format!(
                    "not bridged: {topic} of chat {} has no room (`rooms` maps only other topics of this chat)",
                    place.chat
                ),
            )
            .await
    }

    /// Show which forum topic a message comes from, in a room that shows several: its text
    /// (or a file's caption) starts with the topic's name.
    async fn show_topic(&self, content: &mut Value, place: Place, m: &Message) -> Result<()> {
        let name = match self.store.topic_name(place).await? {
            Some(name) => name,
            None => match m.reply_to_message().and_then(|r| r.forum_topic_created()) {
                // Messages in a topic reply to the message that created it, which names it.
                Some(created) => {
                    self.store.save_topic_name(place, &created.name).await?;
                    created.name.clone()
                }
                None => format!("topic {}", place.topic.unwrap_or_default()),
            },
        };
        with_label(content, &format!("[{name}]"));
        Ok(())
    }

    /// The Matrix account that speaks for a Telegram user in `room`: their own (double puppet)
    /// or their puppet, registered, named and joined on first use.
    pub async fn sender_for(&self, user: &User, room: &OwnedRoomId) -> Result<OwnedUserId> {
        let tg_id = user.id.0 as i64;
        if let Some(real) = self.identity_for_tg(tg_id) {
            self.ensure_joined(&real, room).await?;
            return Ok(real);
        }
        let mxid = self.puppet_mxid(tg_id);
        let name = super::people::puppet_name(user);
        match self.store.puppet(tg_id).await? {
            Some(p) if p.displayname.as_deref() == Some(name.as_str()) => {}
            known => {
                if known.is_none() {
                    self.mx.register(mxid.localpart()).await?;
                }
                // Always set explicitly: Conduit appends " ⚡️" to new users' names otherwise.
                self.mx.set_displayname(&mxid, &name).await?;
                self.store.save_puppet(tg_id, &mxid, &name).await?;
                tracing::info!(%mxid, tg_user = tg_id, "puppet ready");
            }
        }
        self.ensure_joined(&mxid, room).await?;
        self.sync_avatar(tg_id, &mxid).await;
        Ok(mxid)
    }

    /// Matrix `m.room.message` content for a Telegram message (text, or a readable placeholder).
    fn tg_content(&self, m: &Message) -> Value {
        let (text, entities) = match (m.text(), m.caption()) {
            (Some(t), _) => (t.to_owned(), m.entities().unwrap_or_default()),
            (None, Some(c)) => (c.to_owned(), m.caption_entities().unwrap_or_default()),
            (None, None) => {
                if let Some(l) = m.location() {
                    let body = format!("Location: {:.6}, {:.6}", l.latitude, l.longitude);
                    return json!({"msgtype": "m.location", "body": body, "geo_uri": format!("geo:{},{}", l.latitude, l.longitude)});
                }
                (describe(m), &[][..])
            }
        };
        let mut content = json!({"msgtype": "m.text", "body": text});
        if has_formatting(entities) {
            let html = entities_to_html(&text, entities, &|id| {
                self.identity_for_tg(id)
                    .unwrap_or_else(|| self.puppet_mxid(id))
                    .to_string()
            });
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(html);
        }
        content
    }

    async fn tg_message(&self, m: &Message) -> Result<()> {
        let chat = m.chat.id.0;
        // The group became a supergroup: the portal follows the new id (`upgrade`).
        if let Some(to) = m.migrate_to_chat_id() {
            return self.chat_upgraded(chat, to.0, "service message in the group").await;
        }
        if let Some(from) = m.migrate_from_chat_id() {
            return self
                .chat_upgraded(from.0, chat, "service message in the supergroup")
                .await;
        }
        let place = Place::topic(chat, topic_of(m));
        if self.tg_topic_service(m, place).await? {
            return Ok(()); // a topic created or renamed: `service`
        }
        let Some(routed) = self.route_of(place)? else {
            return self.unrouted_topic(place, m.id.0).await;
        };
        let room = routed.room;
        if self.store.link_by_tg(chat, m.id.0).await?.is_some() {
            return Ok(()); // already bridged before a restart
        }
        if self.tg_service(m, &room).await? {
            return Ok(()); // a service message (joins, leaves, title, photo, pin): `service`
        }
        let Some(from) = m.from.as_ref() else {
            return Ok(());
        };
        if self.is_own_bot(Some(from)) {
            // Telegram does not send a bot its own posts; should one come, it is not relayed back.
            tracing::debug!(chat, msg = m.id.0, "own bot's message ignored");
            return Ok(());
        }
        if let (Some(identity), Some(text)) = (self.identity_for_tg(from.id.0 as i64), m.text().or(m.caption()))
            && let Some(twin) = self
                .matrix_twin(&identity, chat, &room, m.id.0, text, m.date.timestamp_millis())
                .await?
        {
            // The Matrix post is the original; on Telegram it is its relayed copy, if any.
            let linked = match <&ruma::EventId>::try_from(twin.as_str()) {
                Ok(twin) => self.store.link_by_event(twin).await?,
                Err(_) => None,
            };
            let tg_copy = linked.map_or(m.id.0, |l| l.tg_msg_id);
            return self.mark_original(&room, &twin, chat, tg_copy).await;
        }
        let sender = self.sender_for(from, &room).await?;
        let mut content = match self.tg_media_content(m, &sender, &room).await? {
            Some(c) => c,
            None => self.tg_content(m),
        };
        let sent_at = m.date.timestamp_millis();
        if self.was_held(sent_at) {
            // Held by a standby and bridged after the rollback: it shows when it was sent.
            let label = format!("[sent {}]", super::standby::held_time(sent_at));
            with_label(&mut content, &label);
        }
        if routed.shows_topic.is_some() {
            self.show_topic(&mut content, place, m).await?;
        }
        // In a forum topic, a message that replies to nothing replies to the topic's creation.
        if let Some(reply) = m.reply_to_message().filter(|r| r.forum_topic_created().is_none()) {
            match self.store.link_by_tg(chat, reply.id.0).await? {
                Some(link) => content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": link.mx_event_id}}),
                // A quick reply to a message the bot just relayed can overtake the write of its
                // link (the other direction's worker): wait for it a little, then go without.
                None if self.is_own_bot(reply.from.as_ref())
                    && crate::storage::now_ms() - m.date.timestamp_millis() < 10_000 =>
                {
                    return Err(Error::NotReady(format!("reply target {} not linked yet", reply.id.0)));
                }
                None => {}
            }
        }
        content[SOURCE_KEY] = json!({"chat": chat, "message": m.id.0});
        let event = self.send_message_parts(&room, &sender, chat, m.id.0, content).await?;
        self.store
            .link_message(
                place,
                m.id.0,
                &room,
                &event,
                Direction::TgToMx,
                &sender,
                m.date.timestamp_millis(),
                None,
            )
            .await?;
        crate::metrics::METRICS.delivered(Direction::TgToMx, crate::storage::now_ms() - m.date.timestamp_millis());
        tracing::debug!(chat, msg = m.id.0, %event, "telegram -> matrix");
        Ok(())
    }

    /// Send a Telegram message's Matrix content: as one event when it fits, else (a text whose
    /// HTML, mentions and links make it larger than a Matrix event may be) in parts cut like
    /// long Matrix messages are for Telegram (`crate::split`), each recorded in `message_parts`.
    /// Transaction ids derive from the Telegram ids and the part, so a retry after a crash
    /// cannot double-post. Returns the first part's event.
    async fn send_message_parts(
        &self,
        room: &ruma::RoomId,
        sender: &ruma::UserId,
        chat: i64,
        msg: i32,
        content: Value,
    ) -> Result<ruma::OwnedEventId> {
        use crate::split::{Measure, plain_of, split_html};
        let size = content_size(&content);
        let html = content["formatted_body"].as_str().filter(|_| size > MATRIX_CONTENT_MAX);
        let is_text = matches!(content["msgtype"].as_str(), Some("m.text" | "m.notice" | "m.emote"));
        let (Some(html), true) = (html, is_text) else {
            let txn = crate::matrix::txn::telegram_message(chat, msg);
            return self.send_event(room, sender, "m.room.message", &txn, &content).await;
        };
        let parts = split_html(html, MATRIX_PART_BYTES, Measure::RawBytes);
        let mut first: Option<ruma::OwnedEventId> = None;
        for (i, part) in parts.iter().enumerate() {
            let mut c = content.clone();
            c["formatted_body"] = json!(part);
            c["body"] = json!(plain_of(part));
            if i > 0
                && let Some(obj) = c.as_object_mut()
            {
                obj.remove("m.relates_to"); // only the first part is the reply
            }
            let txn = match i {
                0 => crate::matrix::txn::telegram_message(chat, msg),
                _ => crate::matrix::txn::telegram_message_part(chat, msg, i),
            };
            let event = self.send_event(room, sender, "m.room.message", &txn, &c).await?;
            let first_event = first.clone().unwrap_or_else(|| event.clone());
            self.store
                .save_part(&tg_part(&first_event, i, chat, msg, &event))
                .await?;
            first.get_or_insert(event);
        }
        tracing::info!(
            chat,
            msg,
            parts = parts.len(),
            "telegram message too large for one Matrix event: sent in parts"
        );
        first.ok_or_else(|| Error::Internal("a message in parts without a first part".into()))
    }

    /// The Matrix content of a bridged file message with `m`'s (edited) caption: the original
    /// event's content (read back, decrypted in an encrypted room) with a new body.
    async fn captioned(&self, room: &ruma::RoomId, event: &ruma::EventId, m: &Message) -> Result<Value> {
        let mut original = self.reader.event(room, event).await?;
        if original["type"] == "m.room.encrypted" {
            match self.intents.decrypt(room, &original).await? {
                crate::matrix::crypto::Decrypted::Event(clear) => original = clear,
                crate::matrix::crypto::Decrypted::Undecryptable(why) => {
                    return Err(Error::NotReady(format!(
                        "the captioned file cannot be read back yet: {why}"
                    )));
                }
            }
        }
        let mut content = original["content"].clone();
        let Some(obj) = content.as_object_mut() else {
            return Err(Error::Internal(format!("event {event} has no content")));
        };
        for key in ["m.relates_to", "m.new_content", "format", "formatted_body", SOURCE_KEY] {
            obj.remove(key);
        }
        let caption = m.caption().unwrap_or_default();
        let name = obj
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        obj.insert(
            "body".into(),
            json!(if caption.is_empty() { name.as_str() } else { caption }),
        );
        let entities = m.caption_entities().unwrap_or_default();
        if !caption.is_empty() && has_formatting(entities) {
            let html = entities_to_html(caption, entities, &|id| {
                self.identity_for_tg(id)
                    .unwrap_or_else(|| self.puppet_mxid(id))
                    .to_string()
            });
            obj.insert("format".into(), json!("org.matrix.custom.html"));
            obj.insert("formatted_body".into(), json!(html));
        }
        Ok(content)
    }

    async fn tg_edit(&self, m: &Message) -> Result<()> {
        let chat = m.chat.id.0;
        let place = Place::topic(chat, topic_of(m));
        if self.route_of(place)?.is_none() {
            return Ok(());
        }
        let Some(link) = self.store.link_by_tg(chat, m.id.0).await? else {
            tracing::debug!(chat, msg = m.id.0, "edit of a message that was never bridged");
            return Ok(());
        };
        if link.direction != Direction::TgToMx {
            return Ok(());
        }
        // The room the message went to (a forum topic's, or the chat's), while it is a portal.
        let room = link.mx_room_id.clone();
        let Some(portal) = self.portals.place_for_room(&room) else {
            return Ok(());
        };
        let sender = link.sender;
        let mut new_content = match super::media::has_file(m) {
            // A caption edit: the file stays, only its caption changes.
            true => self.captioned(&room, &link.mx_event_id, m).await?,
            false => self.tg_content(m),
        };
        if portal.topic.is_none() && place.topic.is_some() {
            self.show_topic(&mut new_content, place, m).await?;
        }
        let edit_ts = m.edit_date().map(|d| d.timestamp()).unwrap_or_default();
        let is_text = matches!(new_content["msgtype"].as_str(), Some("m.text" | "m.notice" | "m.emote"));
        if is_text {
            let parts = self.store.parts_of_event(&link.mx_event_id).await?;
            if !parts.is_empty() || content_size(&new_content) > MATRIX_CONTENT_MAX {
                return self
                    .tg_edit_parts(
                        &room,
                        &sender,
                        (chat, m.id.0, edit_ts),
                        &link.mx_event_id,
                        &parts,
                        new_content,
                    )
                    .await;
            }
        }
        let mut content = json!({
            "msgtype": new_content["msgtype"],
            "body": format!("* {}", new_content["body"].as_str().unwrap_or_default()),
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": link.mx_event_id},
        });
        if let Some(f) = content["m.new_content"]
            .get("formatted_body")
            .and_then(Value::as_str)
            .map(str::to_owned)
        {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(format!("* {f}"));
        }
        content[SOURCE_KEY] = json!({"chat": chat, "message": m.id.0});
        let txn = crate::matrix::txn::telegram_edit(chat, m.id.0, edit_ts);
        self.send_event(&room, &sender, "m.room.message", &txn, &content)
            .await?;
        Ok(())
    }

    /// A Telegram edit of a text carried in parts (or that no longer fits one Matrix event):
    /// the new text is cut as the first was, each part edits its event, parts it needs more are
    /// sent, parts it no longer needs are redacted. `(chat, msg, edit_ts)` name the edit.
    async fn tg_edit_parts(
        &self,
        room: &OwnedRoomId,
        sender: &ruma::UserId,
        (chat, msg, edit_ts): (i64, i32, i64),
        first: &ruma::EventId,
        old: &[crate::storage::MessagePart],
        new_content: Value,
    ) -> Result<()> {
        use crate::split::{Measure, plain_of, split_html};
        let html = match new_content["formatted_body"].as_str() {
            Some(h) => h.to_owned(),
            None => crate::telegram::format::escape_html(new_content["body"].as_str().unwrap_or_default()),
        };
        let old_events: Vec<ruma::OwnedEventId> = match old.is_empty() {
            true => vec![first.to_owned()],
            false => old.iter().map(|p| p.part_event_id.clone()).collect(),
        };
        let parts = split_html(&html, MATRIX_PART_BYTES, Measure::RawBytes);
        for (i, part) in parts.iter().enumerate() {
            let part_content = json!({
                "msgtype": new_content["msgtype"],
                "body": plain_of(part),
                "format": "org.matrix.custom.html",
                "formatted_body": part,
            });
            let txn = crate::matrix::txn::telegram_edit_part(chat, msg, edit_ts, i);
            match old_events.get(i) {
                Some(event) => {
                    let mut content = json!({
                        "msgtype": new_content["msgtype"],
                        "body": format!("* {}", plain_of(part)),
                        "format": "org.matrix.custom.html",
                        "formatted_body": format!("* {part}"),
                        "m.new_content": part_content,
                        "m.relates_to": {"rel_type": "m.replace", "event_id": event},
                    });
                    content[SOURCE_KEY] = json!({"chat": chat, "message": msg});
                    self.send_event(room, sender, "m.room.message", &txn, &content).await?;
                }
                None => {
                    let mut content = part_content;
                    content[SOURCE_KEY] = json!({"chat": chat, "message": msg});
                    let event = self.send_event(room, sender, "m.room.message", &txn, &content).await?;
                    if i == 1 && old.is_empty() {
                        // The message was whole until now: its first part is recorded too.
                        self.store.save_part(&tg_part(first, 0, chat, msg, first)).await?;
                    }
                    self.store.save_part(&tg_part(first, i, chat, msg, &event)).await?;
                }
            }
        }
        for (i, event) in old_events.iter().enumerate().skip(parts.len()) {
            let txn = crate::matrix::txn::telegram_edit_drop(chat, msg, edit_ts, i);
            self.intents.user(sender).redact(room, event, &txn).await?;
            self.store.drop_part(first, i as i64).await?;
        }
        tracing::debug!(
            chat,
            msg,
            parts = parts.len(),
            was = old_events.len(),
            "telegram edit carried in parts"
        );
        Ok(())
    }
}

/// Part `i` of a Telegram message carried to Matrix in parts.
fn tg_part(first: &ruma::EventId, i: usize, chat: i64, msg: i32, event: &ruma::EventId) -> crate::storage::MessagePart {
    crate::storage::MessagePart {
        mx_event_id: first.to_owned(),
        part: i as i64,
        tg_chat_id: chat,
        tg_msg_id: msg,
        part_event_id: event.to_owned(),
    }
}

/// The size of Matrix content as JSON, measured only when its text could be near the limit
/// (JSON escaping at most sextuples it).
fn content_size(content: &Value) -> usize {
    let text_len = ["body", "formatted_body"]
        .iter()
        .map(|k| content[*k].as_str().map_or(0, str::len))
        .sum::<usize>();
    match text_len * 6 > MATRIX_CONTENT_MAX {
        true => serde_json::to_vec(content).map_or(0, |v| v.len()),
        false => text_len,
    }
}

/// The forum topic a message is in (`None`: not a forum, or its General topic). A reply thread
/// in a supergroup without topics has a `message_thread_id` too, but is no topic.
pub(super) fn topic_of(m: &Message) -> Option<i32> {
    m.thread_id.filter(|_| m.is_topic_message).map(|t| t.0.0)
}

/// Start a message's text, or a file's caption, with `label` (`[Intel]`, `[sent …]`).
fn with_label(content: &mut Value, label: &str) {
    let body = content["body"].as_str().unwrap_or_default().to_owned();
    match content["msgtype"].as_str() {
        Some("m.text" | "m.notice" | "m.emote") | None => {}
        // A file: its body is its caption, or its name when it has none.
        Some(_) => {
            if content.get("filename").is_none() {
                content["filename"] = json!(body);
            }
        }
    }
    content["body"] = json!(format!("{label} {body}"));
    if let Some(html) = content["formatted_body"].as_str() {
        let html = format!("<b>{}</b> {html}", crate::telegram::format::escape_html(label));
        content["formatted_body"] = json!(html);
    }
}

/// Readable text for message kinds that have no Matrix equivalent.
fn describe(m: &Message) -> String {
    if let Some(c) = m.contact() {
        let name = [c.first_name.as_str(), c.last_name.as_deref().unwrap_or_default()].join(" ");
        return format!("Contact: {} {}", name.trim(), c.phone_number);
    }
    if let Some(p) = m.poll() {
        let options: Vec<String> = p.options.iter().map(|o| format!("• {}", o.text)).collect();
        return format!("Poll: {}\n{}", p.question, options.join("\n"));
    }
    if let Some(d) = m.dice() {
        return format!("rolled a {}", d.value);
    }
    "[a message of a kind the bridge does not carry]".to_owned()
}
