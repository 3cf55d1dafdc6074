//! Room details (name, topic, avatar) and members.
//!
//! - When a portal is first bridged, the Telegram group's title, description and photo
//!   (`getChat`) become the room's name, topic and avatar, set by the bot (it needs the power to
//!   change room state; without it this is logged once and skipped). A name or topic given in
//!   the config (`rooms[].name`, `rooms[].topic`) wins over Telegram's. Done once per portal: the
//!   `kv` key `room_details:<chat>` remembers the room it was done for, so a restart does not
//!   redo it (a new room for the chat does).
//! - Matrix -> Telegram, only for rooms with `sync_details_to_telegram: true`: a new room name,
//!   topic or avatar becomes the group's title, description or photo. Changes the bridge made
//!   itself (state events from the bot or a puppet) are never carried back.
//! - Members, for `tgmx status`: the Matrix side lists its joined members; the Telegram side can
//!   only be known in part, because the Bot API has no call that lists a group's members: the
//!   administrators (`getChatAdministrators`), the member count (`getChatMemberCount`) and the
//!   Telegram users whose puppets are in the room.

use ruma::{MxcUri, OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};
use teloxide::types::ChatId;

use super::Bridge;
use crate::config::{Config, RoomMapping};
use crate::error::Result;
use crate::storage::Store;

/// Largest Matrix avatar fetched to become a Telegram group photo.
const MAX_PHOTO_BYTES: u64 = 10 << 20;

/// How long `tgmx status` waits for each Bot API answer about members.
const ASK_TELEGRAM: std::time::Duration = std::time::Duration::from_secs(10);

impl Bridge {
    /// Set the Telegram title, description and photo on every portal that has not had them yet.
    /// Failures are logged; a transient one is tried again after the next setup.
    pub async fn initial_room_details(&self) {
        let cfg = self.cfg();
        if !cfg.gateway.telegram.enabled {
            return;
        }
        // A forum topic's room keeps its own name: the group's details are the chat's room's.
        for r in cfg.rooms.iter().filter(|r| r.telegram_topic.is_none()) {
            let Some(room) = self.portals.room_for_chat(r.telegram) else {
                continue;
            };
            let key = format!("room_details:{}", r.telegram);
            match self.store.get_kv(&key).await {
                Ok(Some(done)) if done == room.as_str() => {
                    tracing::debug!(%room, chat = r.telegram, "room details from telegram set already");
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%room, "cannot read whether the room's details were set: {e}");
                    continue;
                }
            }
            match self.set_initial_details(r, &room).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(%room, chat = r.telegram, "room details from telegram not set yet: {e}");
                    continue;
                }
                Err(e) => tracing::warn!(%room, chat = r.telegram, "room details from telegram not set: {e}"),
                Ok(()) => {}
            }
            if let Err(e) = self.store.set_kv(&key, room.as_str()).await {
                tracing::warn!(%room, "cannot record that the room's details were set: {e}");
            }
        }
    }

    async fn set_initial_details(&self, r: &RoomMapping, room: &OwnedRoomId) -> Result<()> {
        // A group that became a supergroup is followed (and this retried at the next setup).
        let details = self
            .follow_upgrade(r.telegram, self.tg.chat_details(ChatId(r.telegram)).await)
            .await?;
        let mut set = Vec::new();
        let current = |event_type: &'static str, key: &'static str| async move {
            let state = self.mx.state_event(room, event_type, "", &self.bot_mxid).await.ok();
            state.and_then(|s| s[key].as_str().map(str::to_owned))
        };
        let title = details.title.filter(|t| !t.is_empty());
        let title = match title {
            Some(t) if current("m.room.name", "name").await.as_deref() == Some(t.as_str()) => None,
            other => other,
        };
        let description = details.description.filter(|d| !d.is_empty());
        let description = match description {
            Some(d) if current("m.room.topic", "topic").await.as_deref() == Some(d.as_str()) => None,
            other => other,
        };
        if let (None, Some(title)) = (&r.name, title) {
            if !self
                .set_room_state(room, "m.room.name", &json!({"name": title}))
                .await?
            {
                return Ok(()); // no power: said once in the log
            }
            set.push("name");
        }
        if let (None, Some(description)) = (&r.topic, description) {
            if !self
                .set_room_state(room, "m.room.topic", &json!({"topic": description}))
                .await?
            {
                return Ok(());
            }
            set.push("topic");
        }
        if let Some(photo) = details.photo {
            let bytes = self.tg_download(&photo).await?;
            let size = bytes.len();
            let url = self
                .mx
                .upload(&self.bot_mxid, bytes, "image/jpeg", "avatar.jpg")
                .await?;
            let content = json!({"url": url, "info": {"mimetype": "image/jpeg", "size": size}});
            if !self.set_room_state(room, "m.room.avatar", &content).await? {
                return Ok(());
            }
            set.push("avatar");
        }
        tracing::info!(%room, chat = r.telegram, ?set, "room details taken from the telegram group");
        Ok(())
    }

    /// A Matrix room's name, topic or avatar changed (`kind`): carried to the Telegram group when
    /// the room's `sync_details_to_telegram` is on. The bridge's own changes are not.
    pub(super) async fn mx_room_detail(
        &self,
        ev: &Value,
        room: &OwnedRoomId,
        sender: &OwnedUserId,
        portal: crate::telegram::Place,
        kind: &str,
    ) -> Result<()> {
        let chat = portal.chat;
        if ev["state_key"] != "" {
            return Ok(());
        }
        if self.is_bridge_user(sender) {
            tracing::debug!(%room, kind, "the bridge's own room detail: not carried back");
            return Ok(());
        }
        let cfg = self.cfg();
        if !cfg
            .rooms
            .iter()
            .any(|r| r.place() == portal && r.sync_details_to_telegram)
        {
            tracing::debug!(%room, kind, "room detail not carried: `sync_details_to_telegram` is off");
            return Ok(());
        }
        if self.holds_matrix(chat) {
            return Err(crate::error::Error::Held("standby: waits for the rollback".into()));
        }
        let content = &ev["content"];
        let text = |key: &str, max: usize| -> String {
            content[key]
                .as_str()
                .unwrap_or_default()
                .trim()
                .chars()
                .take(max)
                .collect()
        };
        let chat_id = ChatId(chat);
        let done = match kind {
            "m.room.name" => {
                let name = text("name", 128);
                if name.is_empty() {
                    tracing::info!(%room, "room name removed: a Telegram group keeps a title, not carried");
                    return Ok(());
                }
                self.tg.set_title(chat_id, name).await
            }
            "m.room.topic" => self.tg.set_description(chat_id, text("topic", 255)).await,
            _ => match content["url"].as_str().filter(|u| !u.is_empty()) {
                Some(url) => {
                    let mxc: &MxcUri = url.into();
                    let (bytes, _) = self.mx.download(mxc, MAX_PHOTO_BYTES).await?;
                    self.tg.set_photo(chat_id, bytes).await
                }
                None => self.tg.delete_photo(chat_id).await,
            },
        };
        match done {
            Ok(()) => tracing::info!(%room, chat, kind, "room detail carried to telegram"),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => tracing::warn!(
                %room, chat, kind,
                "room detail not carried to telegram (does the bot have the admin right to change the group's info?): {e}"
            ),
        }
        Ok(())
    }

    /// Who is in each portal, on both sides: lines for `tgmx status`. `telegram`: whether to ask
    /// the Bot API (administrators and member count).
    pub async fn member_lines(&self, telegram: bool) -> Vec<String> {
        let cfg = self.cfg();
        let mut lines = Vec::new();
        for r in &cfg.rooms {
            let Some(room) = self.portals.room_for(r.place()) else {
                continue;
            };
            lines.push(format!("  {} <-> {}:", r.matrix, r.place()));
            let mut seen = Vec::new();
            match self.mx.joined_members(&room, &self.bot_mxid).await {
                Ok(mut members) => {
                    members.sort();
                    let mut people = Vec::new();
                    for m in &members {
                        if *m == self.bot_mxid {
                            continue;
                        }
                        match self.puppet_tg_id(m) {
                            Some(tg) => {
                                let name = match self.store.puppet(tg).await {
                                    Ok(Some(p)) => p.displayname.unwrap_or_default(),
                                    _ => String::new(),
                                };
                                seen.push(if name.is_empty() {
                                    format!("{tg}")
                                } else {
                                    format!("{name} ({tg})")
                                });
                            }
                            None => {
                                if let Some(tg) = self.identity_for_mx(m) {
                                    seen.push(format!("{m} ({tg})"));
                                }
                                people.push(m.to_string());
                            }
                        }
                    }
                    let puppets = members.iter().filter(|m| self.puppet_tg_id(m).is_some()).count();
                    if puppets > 0 {
                        people.push(format!("{puppets} puppet(s)"));
                    }
                    if members.contains(&self.bot_mxid) {
                        people.push("the bridge bot".to_owned());
                    }
                    lines.push(format!("    matrix: {} joined: {}", members.len(), people.join(", ")));
                }
                Err(e) => lines.push(format!("    matrix: cannot list the members ({e})")),
            }
            if telegram {
                let chat = ChatId(r.telegram);
                let count = match tokio::time::timeout(ASK_TELEGRAM, self.tg.member_count(chat)).await {
                    Ok(Ok(n)) => n.to_string(),
                    Ok(Err(e)) => format!("? ({e})"),
                    Err(_) => "? (no answer)".to_owned(),
                };
                let admins = match tokio::time::timeout(ASK_TELEGRAM, self.tg.administrators(chat)).await {
                    Ok(Ok(admins)) => admins
                        .iter()
                        .map(|u| format!("{} ({})", u.full_name(), u.id.0))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Ok(Err(e)) => format!("? ({e})"),
                    Err(_) => "? (no answer)".to_owned(),
                };
                lines.push(format!("    telegram: {count} member(s); administrators: {admins}"));
            }
            lines.push(format!(
                "    telegram users seen (in the room): {}",
                if seen.is_empty() {
                    "-".to_owned()
                } else {
                    seen.join(", ")
                }
            ));
        }
        lines
    }
}

/// The members section of `tgmx status`: who is in each linked room on both sides, as far as
/// each side tells (the Bot API lists no group's members beyond its administrators).
pub async fn member_report(cfg: &Config, store: &Store) -> Vec<String> {
    let reg = match crate::config::Registration::load(&cfg.appservice.registration) {
        Ok(reg) => reg,
        Err(e) => return vec![format!("  cannot list members: {e}")],
    };
    let mx = crate::matrix::client::MatrixClient::new(&cfg.homeserver.url, &reg.as_token).acting_as(cfg.bot_user_id());
    let t = &cfg.gateway.telegram;
    let tg = match (t.enabled, cfg.telegram_token(), url::Url::parse(&t.api_url)) {
        (true, Ok(token), Ok(api)) => Some(crate::telegram::TelegramSender::new(
            token.to_owned(),
            api,
            t.poll_timeout,
            0,
            t.per_bot_per_second,
        )),
        _ => None,
    };
    let telegram = tg.is_some();
    let bridge = Bridge::new(
        cfg.clone(),
        store.clone(),
        mx,
        tg.unwrap_or_else(crate::telegram::TelegramSender::offline),
    );
    if let Err(e) = bridge.load_portals().await {
        return vec![format!("  cannot list members: {e}")];
    }
    let mut lines = bridge.member_lines(telegram).await;
    if !telegram {
        lines.push("  (telegram not asked: no bot token, or telegram is disabled)".to_owned());
    }
    lines
}
