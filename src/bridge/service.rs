//! Telegram service messages -> Matrix: they are not noise, and they are not messages.
//!
//! - `new_chat_members`: each new member's puppet joins the room (a mapped person's own account
//!   is invited and joined, as for their first message); the bot itself is left out.
//! - `left_chat_member`: the member's puppet leaves. Removed by someone else (`from` is not the
//!   member) it is a kick: the bot kicks the puppet with a reason naming who removed them, or,
//!   when the bot lacks the power to kick, the puppet leaves with that reason. A ban looks the
//!   same in the message (the Bot API tells bans apart only in `chat_member` updates, which need
//!   admin rights and an explicit `allowed_updates`), so a ban is shown as a removal. A mapped
//!   person's own Matrix account is theirs: it is never made to leave.
//! - `new_chat_title`, `new_chat_photo`, `delete_chat_photo`: the room's name and avatar, set by
//!   the bot (it needs the power to change room state; without it the change is told in a
//!   notice instead). A description change has no service message in the Bot API: the topic is
//!   taken from Telegram only when the portal is first bridged (see `room_details`).
//! - `pinned_message`: a notice from the bot naming the pinned message (a reply to its Matrix
//!   copy when there is one).
//! - `forum_topic_created`, `forum_topic_edited`: the topic's name is remembered (messages of a
//!   topic shown in the chat's room start with it) and a notice from the bot in the room that
//!   shows the topic says who created or renamed it.
//! - Anything else without content (chat created, auto-delete timer, topics closed or reopened,
//!   video chats, boosts, …) is skipped with a debug log.
//!
//! Changes the bridge itself made (title and photo set by the bot on Telegram, pins of the
//! cutover notices) are not carried back.

use ruma::{OwnedRoomId, UserId};
use serde_json::{Value, json};
use teloxide::types::{MaybeInaccessibleMessage, Message, MessageKind, PhotoSize, User};

use super::{Bridge, SOURCE_KEY};
use crate::error::{Error, Result};
use crate::telegram::Place;

/// Longest excerpt of a pinned message quoted in the notice, in characters.
const PIN_EXCERPT_CHARS: usize = 120;

impl Bridge {
    /// Handle `m` if it is a service message (returns `true`: nothing more to do with it);
    /// `false` for a message that carries content, bridged as a message.
    pub(super) async fn tg_service(&self, m: &Message, room: &OwnedRoomId) -> Result<bool> {
        let chat = m.chat.id.0;
        let own = self.is_own_bot(m.from.as_ref());
        match &m.kind {
            // Content: text, media, polls, dice, …
            MessageKind::Common(_)
            | MessageKind::Dice(_)
            | MessageKind::Invoice(_)
            | MessageKind::Giveaway(_)
            | MessageKind::GiveawayWinners(_) => return Ok(false),
            MessageKind::NewChatMembers(k) => {
                for user in &k.new_chat_members {
                    if self.is_own_bot(Some(user)) {
                        continue;
                    }
                    let mxid = self.sender_for(user, room).await?;
                    tracing::info!(chat, tg_user = user.id.0, %mxid, "joined on telegram");
                }
            }
            MessageKind::LeftChatMember(k) => {
                let by = m.from.as_ref().filter(|f| f.id != k.left_chat_member.id);
                self.tg_member_left(chat, room, &k.left_chat_member, by).await?;
            }
            MessageKind::NewChatTitle(_) | MessageKind::NewChatPhoto(_) | MessageKind::DeleteChatPhoto(_) if own => {
                tracing::debug!(chat, "the bridge's own change of the group's details");
            }
            MessageKind::NewChatTitle(k) => {
                let content = json!({"name": k.new_chat_title});
                let told = format!("changed the group's name to “{}”", k.new_chat_title);
                self.tg_room_detail(m, room, "m.room.name", &content, &told).await?;
            }
            MessageKind::NewChatPhoto(k) => {
                let content = self.tg_photo_to_avatar(&k.new_chat_photo).await?;
                self.tg_room_detail(m, room, "m.room.avatar", &content, "changed the group's photo")
                    .await?;
            }
            MessageKind::DeleteChatPhoto(_) => {
                self.tg_room_detail(m, room, "m.room.avatar", &json!({}), "removed the group's photo")
                    .await?;
            }
            MessageKind::Pinned(_) if own => {
                tracing::debug!(chat, "the bridge's own pin");
            }
            MessageKind::Pinned(k) => self.tg_pinned(m, room, &k.pinned).await?,
            other => {
                let kind = format!("{other:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("?");
                tracing::debug!(chat, msg = m.id.0, kind, "service message without content skipped");
            }
        }
        Ok(true)
    }

    /// Handle `m` if it creates or renames a forum topic (returns `true`). `place`: where `m` was
    /// posted (a topic's creation is posted in the topic it creates).
    pub(super) async fn tg_topic_service(&self, m: &Message, place: Place) -> Result<bool> {
        let (name, created) = match (m.forum_topic_created(), m.forum_topic_edited()) {
            (Some(c), _) => (Some(c.name.clone()), true),
            (None, Some(e)) => (e.name.clone(), false),
            _ => return Ok(false),
        };
        let chat = place.chat;
        let place = match place.topic {
            None if created => Place::topic(chat, Some(m.id.0)),
            _ => place,
        };
        let Some(name) = name else {
            tracing::debug!(%place, "a topic's icon changed: skipped");
            return Ok(true);
        };
        if !self.chat_is_configured(place.chat) {
            return Ok(true); // a forum that is not bridged: nothing to remember
        }
        // Where it is told: waited for while the room is being set up.
        let routed = self.route_of(place)?;
        let before = self.store.topic_name(place).await?;
        self.store.save_topic_name(place, &name).await?;
        tracing::info!(%place, name, "forum topic {}", if created { "created" } else { "renamed" });
        let Some(routed) = routed else {
            return Ok(true);
        };
        if self.is_own_bot(m.from.as_ref()) {
            return Ok(true); // created by the bridge: nothing to tell
        }
        let who = m.from.as_ref().map_or("someone".to_owned(), User::full_name);
        let body = match (created, before) {
            (true, _) => format!("{who} created the topic “{name}”"),
            (false, Some(old)) if old != name => format!("{who} renamed the topic “{old}” to “{name}”"),
            (false, _) => format!("{who} renamed the topic to “{name}”"),
        };
        let content = json!({"msgtype": "m.notice", "body": body, SOURCE_KEY: {"chat": chat, "message": m.id.0}});
        let txn = crate::matrix::txn::telegram_message(chat, m.id.0);
        self.send_event(&routed.room, &self.bot_mxid, "m.room.message", &txn, &content)
            .await?;
        Ok(true)
    }

    /// A member left the Telegram group (`by`: removed by that admin): their puppet leaves.
    async fn tg_member_left(&self, chat: i64, room: &OwnedRoomId, member: &User, by: Option<&User>) -> Result<()> {
        let tg_id = member.id.0 as i64;
        if self.is_own_bot(Some(member)) {
            tracing::warn!(chat, "the bot was removed from the Telegram group");
            return Ok(());
        }
        if let Some(own) = self.identity_for_tg(tg_id) {
            tracing::info!(chat, %own, "a mapped person left the Telegram group; their Matrix account stays");
            return Ok(());
        }
        if self.store.puppet(tg_id).await?.is_none() {
            return Ok(()); // never bridged: no puppet to remove
        }
        let puppet = self.puppet_mxid(tg_id);
        if self.mx.membership(room, &puppet, &self.bot_mxid).await.as_deref() != Some("join") {
            self.store.set_member(&puppet, room, false).await?;
            return Ok(());
        }
        match by {
            Some(admin) => {
                let reason = format!("removed from the Telegram group by {}", admin.full_name());
                match self.mx.kick(room, &self.bot_mxid, &puppet, &reason).await {
                    Ok(()) => tracing::info!(chat, %puppet, "removed on telegram: kicked"),
                    Err(Error::Matrix { status: 403, .. }) => {
                        tracing::info!(chat, %puppet, "removed on telegram; the bot may not kick, the puppet leaves");
                        self.mx.leave_because(room, &puppet, &reason).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                self.mx.leave_because(room, &puppet, "left the Telegram group").await?;
                tracing::info!(chat, %puppet, "left on telegram");
            }
        }
        self.store.set_member(&puppet, room, false).await
    }

    /// Set a detail of the room (its name or avatar) as the bot; when the bot may not, say in a
    /// notice what changed on Telegram (`told`, after the person's name).
    async fn tg_room_detail(
        &self,
        m: &Message,
        room: &OwnedRoomId,
        event_type: &str,
        content: &Value,
        told: &str,
    ) -> Result<()> {
        if self.set_room_state(room, event_type, content).await? {
            return Ok(());
        }
        let who = m.from.as_ref().map_or("Someone".to_owned(), User::full_name);
        let body = format!("{who} {told} on Telegram.");
        self.tg_notice(m, room, body, None).await
    }

    /// Set a state event of `room` as the bot. `false` when the bot lacks the power to (logged).
    pub(super) async fn set_room_state(&self, room: &OwnedRoomId, event_type: &str, content: &Value) -> Result<bool> {
        match self.mx.set_state(room, &self.bot_mxid, event_type, "", content).await {
            Ok(_) => {
                tracing::info!(%room, event_type, "room detail set from telegram");
                Ok(true)
            }
            Err(Error::Matrix {
                status: 403, message, ..
            }) => {
                tracing::warn!(
                    %room, event_type,
                    "the bot may not change this room's state (give it power to mirror the group's details): {message}"
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `m.room.avatar` content for a Telegram chat photo (its largest size), uploaded as the bot.
    async fn tg_photo_to_avatar(&self, sizes: &[PhotoSize]) -> Result<Value> {
        let Some(big) = sizes.iter().max_by_key(|p| p.width * p.height) else {
            return Ok(json!({}));
        };
        let bytes = self.tg_download(&big.file).await?;
        let size = bytes.len();
        let url = self
            .mx
            .upload(&self.bot_mxid, bytes, "image/jpeg", "avatar.jpg")
            .await?;
        Ok(json!({"url": url, "info": {"mimetype": "image/jpeg", "size": size, "w": big.width, "h": big.height}}))
    }

    /// A pin: a notice from the bot naming the pinned message, as a reply to its Matrix copy.
    async fn tg_pinned(&self, m: &Message, room: &OwnedRoomId, pinned: &MaybeInaccessibleMessage) -> Result<()> {
        let chat = m.chat.id.0;
        let who = m.from.as_ref().map_or("Someone".to_owned(), User::full_name);
        let excerpt = match pinned {
            MaybeInaccessibleMessage::Regular(p) => p.text().or(p.caption()).map(|t| {
                let mut e: String = t.chars().take(PIN_EXCERPT_CHARS).collect();
                if t.chars().count() > PIN_EXCERPT_CHARS {
                    e.push('…');
                }
                e
            }),
            MaybeInaccessibleMessage::Inaccessible(_) => None,
        };
        let link = self.store.link_by_tg(chat, pinned.id().0).await?;
        let body = match (&excerpt, &link) {
            (Some(e), _) => format!("📌 {who} pinned a message: “{e}”"),
            (None, Some(_)) => format!("📌 {who} pinned a message (the one this replies to)"),
            (None, None) => format!("📌 {who} pinned a message"),
        };
        self.tg_notice(m, room, body, link.map(|l| l.mx_event_id)).await
    }

    /// A notice from the bot for service message `m`, once (its transaction id comes from the
    /// message's ids).
    async fn tg_notice(
        &self,
        m: &Message,
        room: &OwnedRoomId,
        body: String,
        reply_to: Option<ruma::OwnedEventId>,
    ) -> Result<()> {
        let (chat, msg) = (m.chat.id.0, m.id.0);
        let mut content = json!({"msgtype": "m.notice", "body": body, SOURCE_KEY: {"chat": chat, "message": msg}});
        if let Some(event) = reply_to {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": event}});
        }
        let txn = crate::matrix::txn::telegram_message(chat, msg);
        let bot: &UserId = &self.bot_mxid;
        self.send_event(room, bot, "m.room.message", &txn, &content).await?;
        Ok(())
    }
}
