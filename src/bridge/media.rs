//! Files both ways (photos, documents, voice, audio, video, animations, stickers), reactions,
//! and puppet avatars. Limits are checked on every hop (Bot API download and upload limits, the
//! homeserver's upload limit); a file over a limit becomes a clear notice on the receiving side
//! and a row in `failures`, never silence.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use teloxide::types::{ChatId, FileMeta, Message, MessageId, MessageReactionUpdated, ReactionType};

use super::Bridge;
use crate::error::{Error, Result};
use crate::matrix::intent::MediaSource;
use crate::split::{Measure, TELEGRAM_CAPTION, TELEGRAM_TEXT, split_html};
use crate::storage::Direction;
use crate::telegram::Place;
use crate::telegram::format::{entities_to_html, escape_html, has_formatting};
use crate::telegram::sender::{FileKind, OutFile, TgError};

/// A file attached to a Telegram message, with what Matrix needs to know about it.
struct TgFile<'a> {
    meta: &'a FileMeta,
    what: &'static str,
    msgtype: &'static str,
    name: String,
    mime: String,
    info: Value,
    voice: bool,
    /// A smaller rendition to upload as the thumbnail (photos).
    thumb: Option<(&'a FileMeta, u32, u32)>,
}

fn mime_of(m: Option<&impl std::fmt::Display>, default: &str) -> String {
    m.map(|m| m.to_string()).unwrap_or_else(|| default.to_owned())
}

fn tg_file(m: &Message) -> Option<TgFile<'_>> {
    let f = |meta, what, msgtype, name: String, mime: String, info: Value| TgFile {
        meta,
        what,
        msgtype,
        name,
        mime,
        info,
        voice: false,
        thumb: None,
    };
    if let Some(sizes) = m.photo() {
        let big = sizes.iter().max_by_key(|p| p.width * p.height)?;
        let small = sizes
            .iter()
            .min_by_key(|p| p.width * p.height)
            .filter(|s| s.file.unique_id != big.file.unique_id);
        let mut tf = f(
            &big.file,
            "photo",
            "m.image",
            "photo.jpg".into(),
            "image/jpeg".into(),
            json!({"w": big.width, "h": big.height}),
        );
        tf.thumb = small.map(|s| (&s.file, s.width, s.height));
        return Some(tf);
    }
    if let Some(v) = m.voice() {
        let secs = v.duration.seconds();
        let mut tf = f(
            &v.file,
            "voice message",
            "m.audio",
            "voice.ogg".into(),
            mime_of(v.mime_type.as_ref(), "audio/ogg"),
            json!({"duration": secs * 1000}),
        );
        tf.voice = true;
        return Some(tf);
    }
    if let Some(a) = m.audio() {
        let name = a.file_name.clone().unwrap_or_else(|| "audio.mp3".into());
        return Some(f(
            &a.file,
            "audio file",
            "m.audio",
            name,
            mime_of(a.mime_type.as_ref(), "audio/mpeg"),
            json!({"duration": a.duration.seconds() * 1000}),
        ));
    }
    if let Some(v) = m.video() {
        let name = v.file_name.clone().unwrap_or_else(|| "video.mp4".into());
        let info = json!({"w": v.width, "h": v.height, "duration": v.duration.seconds() * 1000});
        return Some(f(
            &v.file,
            "video",
            "m.video",
            name,
            mime_of(v.mime_type.as_ref(), "video/mp4"),
            info,
        ));
    }
    if let Some(v) = m.video_note() {
        // A round video message: a square video on Matrix.
        let info = json!({"w": v.length, "h": v.length, "duration": v.duration.seconds() * 1000});
        return Some(f(
            &v.file,
            "video note",
            "m.video",
            "video_note.mp4".into(),
            "video/mp4".into(),
            info,
        ));
    }
    if let Some(a) = m.animation() {
        let name = a.file_name.clone().unwrap_or_else(|| "animation.mp4".into());
        let info = json!({"w": a.width, "h": a.height, "duration": a.duration.seconds() * 1000});
        return Some(f(
            &a.file,
            "animation",
            "m.video",
            name,
            mime_of(a.mime_type.as_ref(), "video/mp4"),
            info,
        ));
    }
    if let Some(d) = m.document() {
        let name = d.file_name.clone().unwrap_or_else(|| "file".into());
        return Some(f(
            &d.file,
            "file",
            "m.file",
            name,
            mime_of(d.mime_type.as_ref(), "application/octet-stream"),
            json!({}),
        ));
    }
    if let Some(s) = m.sticker() {
        let info = json!({"w": s.width, "h": s.height});
        return Some(if s.flags.is_animated {
            f(
                &s.file,
                "sticker",
                "m.file",
                "sticker.tgs".into(),
                "application/x-tgsticker".into(),
                info,
            )
        } else if s.flags.is_video {
            f(
                &s.file,
                "sticker",
                "m.video",
                "sticker.webm".into(),
                "video/webm".into(),
                info,
            )
        } else {
            f(
                &s.file,
                "sticker",
                "m.image",
                "sticker.webp".into(),
                "image/webp".into(),
                info,
            )
        });
    }
    None
}

/// What the media path learns once per run.
#[derive(Default)]
pub struct MediaLimits {
    /// The homeserver's upload limit once asked (`Some(None)`: it states none).
    hs_upload_limit: std::sync::Mutex<Option<Option<u64>>>,
}

/// Whether a Telegram message carries a file the bridge takes across.
pub(super) fn has_file(m: &Message) -> bool {
    tg_file(m).is_some()
}

impl Bridge {
    /// Download a Telegram file within the configured limit.
    pub(super) async fn tg_download(&self, meta: &FileMeta) -> Result<Vec<u8>> {
        let limit = self.cfg().gateway.telegram.max_download_bytes;
        if meta.size != u32::MAX && u64::from(meta.size) > limit {
            return Err(Error::TooLarge {
                size: meta.size.into(),
                limit,
            });
        }
        match self.tg.download(meta).await {
            Ok(bytes) => Ok(bytes),
            Err(TgError::TooLarge) => Err(Error::TooLarge {
                size: meta.size.into(),
                limit,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The homeserver's upload limit, asked once.
    async fn hs_upload_limit(&self) -> Option<u64> {
        if let Some(l) = *self.media.hs_upload_limit.lock().expect("lock") {
            return l;
        }
        let l = self.mx.upload_limit().await.ok()?;
        *self.media.hs_upload_limit.lock().expect("lock") = Some(l);
        l
    }

    /// Matrix content for a Telegram message with a file, or `None` when it has none.
    /// A file over a limit yields a notice instead (and a recorded failure).
    pub(super) async fn tg_media_content(&self, m: &Message, sender: &UserId, room: &RoomId) -> Result<Option<Value>> {
        let Some(tf) = tg_file(m) else {
            return Ok(None);
        };
        let caption = m.caption().unwrap_or_default();
        self.check_encryption(room).await?;
        match self.tg_upload_to_matrix(&tf, sender, room).await {
            Ok((source, size, thumb)) => {
                let mut info = tf.info.clone();
                info["mimetype"] = json!(tf.mime);
                info["size"] = json!(size);
                if let Some((tsource, tinfo)) = thumb {
                    // `thumbnail_url`, or `thumbnail_file` in an encrypted room.
                    let key = format!("thumbnail_{}", tsource.key());
                    info[key] = tsource.into_json();
                    info["thumbnail_info"] = tinfo;
                }
                let mut content = json!({"msgtype": tf.msgtype, "body": if caption.is_empty() { tf.name.as_str() } else { caption },
                    "filename": tf.name, "info": info});
                let key = source.key();
                content[key] = source.into_json();
                let entities = m.caption_entities().unwrap_or_default();
                if !caption.is_empty() && has_formatting(entities) {
                    let puppet = |id| {
                        self.identity_for_tg(id)
                            .unwrap_or_else(|| self.puppet_mxid(id))
                            .to_string()
                    };
                    content["format"] = json!("org.matrix.custom.html");
                    content["formatted_body"] = json!(entities_to_html(caption, entities, &puppet));
                }
                if tf.voice {
                    content["org.matrix.msc3245.voice"] = json!({});
                    content["org.matrix.msc1767.audio"] = json!({"duration": tf.info["duration"]});
                }
                let original = format!("tg:{}:{}", m.chat.id.0, m.id.0);
                self.note_file(Direction::TgToMx, &original, file_kind(tf.voice, tf.msgtype))
                    .await;
                Ok(Some(content))
            }
            Err(e @ Error::TooLarge { .. }) => {
                let reason = format!("{} not bridged: {e}", tf.what);
                let source = format!("tg:{}:{}", m.chat.id.0, m.id.0);
                self.store.record_failure(Direction::TgToMx, &source, &reason).await?;
                tracing::warn!(%source, "{reason}");
                let body = if caption.is_empty() {
                    format!("[{reason}]")
                } else {
                    format!("{caption}\n[{reason}]")
                };
                Ok(Some(json!({"msgtype": "m.notice", "body": body})))
            }
            Err(e) => Err(e),
        }
    }

    /// Download from Telegram, check the homeserver limit, upload as `sender` into `room` (the
    /// intent encrypts it in an encrypted room). Returns the source, the size, and the
    /// thumbnail's source and info.
    async fn tg_upload_to_matrix(
        &self,
        tf: &TgFile<'_>,
        sender: &UserId,
        room: &RoomId,
    ) -> Result<(MediaSource, usize, Option<(MediaSource, Value)>)> {
        let bytes = self.tg_download(tf.meta).await?;
        let size = bytes.len();
        if let Some(limit) = self.hs_upload_limit().await.filter(|l| size as u64 > *l) {
            return Err(Error::TooLarge {
                size: size as u64,
                limit,
            });
        }
        let upload = |bytes: Vec<u8>, mime: String, name: String| async move {
            self.intents.user(sender).upload(room, bytes, &mime, &name).await
        };
        let source = upload(bytes, tf.mime.clone(), tf.name.clone()).await?;
        let mut thumb = None;
        if let Some((meta, w, h)) = tf.thumb
            && let Ok(tb) = self.tg_download(meta).await
        {
            let tsize = tb.len();
            if let Ok(tsource) = upload(tb, "image/jpeg".into(), "thumbnail.jpg".into()).await {
                thumb = Some((
                    tsource,
                    json!({"w": w, "h": h, "mimetype": "image/jpeg", "size": tsize}),
                ));
            }
        }
        Ok((source, size, thumb))
    }

    /// Matrix file message -> Telegram (sendPhoto / sendDocument / sendVoice / sendAudio /
    /// sendVideo). Returns the Telegram message id of what was sent (the file or a notice).
    pub(super) async fn mx_media_to_tg(
        &self,
        ev: &Value,
        event_id: &ruma::EventId,
        room: &OwnedRoomId,
        sender: &OwnedUserId,
        to: Place,
        reply_to: Option<i32>,
    ) -> Result<i32> {
        let content = &ev["content"];
        let name_html = format!("<b>{}</b>", escape_html(&self.matrix_name(room, sender).await));
        let body = content["body"].as_str().unwrap_or_default();
        let caption_text = content["filename"].as_str().filter(|f| *f != body).map(|_| body);
        let caption = match caption_text {
            Some(c) => format!("{name_html}: {}", escape_html(c)),
            None => name_html.clone(),
        };
        // A caption over Telegram's 1024: the file with the first part, the rest as text.
        let mut caption_parts = split_html(&caption, TELEGRAM_CAPTION, Measure::VisibleUtf16).into_iter();
        let caption = caption_parts.next().unwrap_or_default();
        let rest: String = caption_parts.collect();
        if rest.is_empty() {
            return self
                .mx_media_post(ev, event_id, &name_html, caption, to, reply_to)
                .await;
        }
        let done = self.store.parts_of_event(event_id).await?;
        let first = match done.iter().find(|p| p.part == 0) {
            Some(p) => p.tg_msg_id,
            None => {
                let msg = self
                    .mx_media_post(ev, event_id, &name_html, caption, to, reply_to)
                    .await?;
                self.store.save_part(&part_of(event_id, 0, to.chat, msg)).await?;
                msg
            }
        };
        let texts = split_html(&rest, TELEGRAM_TEXT, Measure::VisibleUtf16);
        for (k, text) in texts.into_iter().enumerate() {
            let i = k as i64 + 1;
            if done.iter().any(|p| p.part == i) {
                continue;
            }
            let turn = self.turn_for(event_id, to, i).await?;
            let msg = self.tg.send_html(turn, text, None).await?.0;
            self.store.save_part(&part_of(event_id, i, to.chat, msg)).await?;
        }
        Ok(first)
    }

    /// Post a Matrix file to Telegram with `caption` (at most 1024 characters): the file, or a
    /// notice when it cannot be carried. Returns the message id of what was sent.
    async fn mx_media_post(
        &self,
        ev: &Value,
        event_id: &ruma::EventId,
        name_html: &str,
        caption: String,
        to: Place,
        reply_to: Option<i32>,
    ) -> Result<i32> {
        let content = &ev["content"];
        // A sticker is an image on Telegram (its stickers must be made for it).
        let msgtype = match ev["type"].as_str() {
            Some("m.sticker") => "m.image",
            _ => content["msgtype"].as_str().unwrap_or_default(),
        };
        let body = content["body"].as_str().unwrap_or_default();
        let filename = content["filename"].as_str().unwrap_or(body).to_owned();
        let tcfg = self.cfg().gateway.telegram.clone();
        let Some(source) = MediaSource::of_content(content) else {
            let text = format!(
                "{name_html} sent a file the bridge cannot carry: {}",
                escape_html(&filename)
            );
            let turn = self.turn_for(event_id, to, 0).await?;
            let sent = self.tg.send_html(turn, text, None).await?;
            return Ok(sent.0);
        };
        let declared = content["info"]["size"].as_u64().unwrap_or(0);
        let fetched = if declared > tcfg.max_upload_bytes {
            Err(Error::TooLarge {
                size: declared,
                limit: tcfg.max_upload_bytes,
            })
        } else {
            // An encrypted file is decrypted with the bot's device; its mime type comes from the
            // event.
            self.intents.download(&source, tcfg.max_upload_bytes).await
        };
        let (bytes, mime) = match fetched {
            Ok(b) => b,
            Err(e @ Error::TooLarge { .. }) => {
                return self.tg_too_large_notice(event_id, to, name_html, &filename, &e).await;
            }
            Err(e) => return Err(e),
        };
        let mime = content["info"]["mimetype"]
            .as_str()
            .map(str::to_owned)
            .or(mime)
            .unwrap_or_default();
        let size = bytes.len() as u64;
        let is_voice = content.get("org.matrix.msc3245.voice").is_some();
        let kind = match msgtype {
            "m.image" if size <= tcfg.max_photo_bytes && mime != "image/gif" => FileKind::Photo,
            "m.audio" if is_voice => FileKind::Voice {
                duration_secs: content["info"]["duration"].as_u64().map(|ms| ms.div_ceil(1000) as u32),
            },
            "m.audio" => FileKind::Audio,
            "m.video" => FileKind::Video,
            _ => FileKind::Document,
        };
        let file = OutFile {
            kind,
            bytes,
            name: filename.clone(),
            caption_html: caption,
        };
        let turn = self.turn_for(event_id, to, 0).await?;
        match self.tg.send_file(turn, file, reply_to.map(MessageId)).await {
            Ok(m) => {
                self.note_file(Direction::MxToTg, event_id.as_str(), file_kind(is_voice, msgtype))
                    .await;
                Ok(m.0)
            }
            Err(TgError::TooLarge) => {
                // Refused: nothing was posted, and the notice takes the send intent next.
                self.store.forget_send(event_id).await?;
                let e = Error::TooLarge {
                    size,
                    limit: tcfg.max_upload_bytes,
                };
                self.tg_too_large_notice(event_id, to, name_html, &filename, &e).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Note for `tgmx status` (its "voice or file each way" gate) that a file of `kind` crossed
    /// for the message `source`; it counts once the message's link is written. Not noted is
    /// only a stricter gate, so a failure is logged and bridging goes on (after a send, an error
    /// would make the lane post the file again).
    async fn note_file(&self, direction: Direction, source: &str, kind: &str) {
        if let Err(e) = self.store.note_file(direction, source, kind).await {
            tracing::warn!(%direction, source, kind, "cannot note the file for `tgmx status`: {e}");
        }
    }

    async fn tg_too_large_notice(
        &self,
        event_id: &ruma::EventId,
        to: Place,
        name_html: &str,
        filename: &str,
        e: &Error,
    ) -> Result<i32> {
        let source = format!("mx:{event_id}");
        self.store
            .record_failure(Direction::MxToTg, &source, &format!("{filename}: {e}"))
            .await?;
        tracing::warn!(%source, "{filename}: {e}");
        let text = format!(
            "{name_html} sent {}: {}",
            escape_html(filename),
            escape_html(&e.to_string())
        );
        let turn = self.turn_for(event_id, to, 0).await?;
        let sent = self.tg.send_html(turn, text, None).await?;
        Ok(sent.0)
    }

    // ---- reactions ----

    /// Telegram reaction change -> m.reaction events (added) and redactions (removed).
    pub(super) async fn tg_reaction(&self, r: &MessageReactionUpdated) -> Result<()> {
        let chat = r.chat.id.0;
        let Some(user) = r.user() else { return Ok(()) };
        let Some(link) = self.store.link_by_tg(chat, r.message_id.0).await? else {
            return Ok(());
        };
        // In the room the message went to (a forum's topics may have rooms of their own), while
        // that room is still a portal.
        let room = link.mx_room_id.clone();
        if self.portals.place_for_room(&room).is_none() {
            return Ok(());
        }
        let emojis = |v: &[ReactionType]| -> Vec<String> {
            v.iter()
                .filter_map(|t| match t {
                    ReactionType::Emoji { emoji } => Some(emoji.clone()),
                    _ => None,
                })
                .collect()
        };
        let (old, new) = (emojis(&r.old_reaction), emojis(&r.new_reaction));
        let sender = self.sender_for(user, &room).await?;
        let reactor = user.id.0.to_string();
        for e in new.iter().filter(|e| !old.contains(e)) {
            if self.store.reaction(chat, link.tg_msg_id, &reactor, e).await?.is_some() {
                continue;
            }
            let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": link.mx_event_id, "key": e}});
            let txn = crate::matrix::txn::telegram_reaction(chat, link.tg_msg_id, &reactor, e);
            let ev = self.send_event(&room, &sender, "m.reaction", &txn, &content).await?;
            self.store
                .save_reaction(chat, link.tg_msg_id, &reactor, e, &ev, Direction::TgToMx)
                .await?;
        }
        for e in old.iter().filter(|e| !new.contains(e)) {
            if let Some(ev) = self.store.reaction(chat, link.tg_msg_id, &reactor, e).await? {
                self.intents
                    .user(&sender)
                    .redact(&room, &ev, &crate::matrix::txn::unreaction(ev.as_str()))
                    .await?;
                self.store.delete_reaction(&ev).await?;
            }
        }
        Ok(())
    }

    /// Matrix m.reaction on a bridged message -> the bot's reaction on Telegram.
    pub(super) async fn mx_reaction(&self, ev: &Value, sender: &OwnedUserId, chat: i64) -> Result<()> {
        let rel = &ev["content"]["m.relates_to"];
        fn event_id(v: &Value) -> Option<&ruma::EventId> {
            v.as_str().and_then(|e| e.try_into().ok())
        }
        let (Some(target), Some(key), Some(event_id)) = (
            event_id(&rel["event_id"]),
            rel["key"].as_str(),
            event_id(&ev["event_id"]),
        ) else {
            return Ok(());
        };
        let Some(link) = self.store.link_by_event(target).await? else {
            return Ok(());
        };
        self.store
            .save_reaction(chat, link.tg_msg_id, sender.as_str(), key, event_id, Direction::MxToTg)
            .await?;
        self.sync_bot_reaction(chat, link.tg_msg_id).await
    }

    /// The bot has one reaction per message: the newest Matrix reaction still standing.
    pub(super) async fn sync_bot_reaction(&self, chat: i64, msg: i32) -> Result<()> {
        let current = self.store.latest_mx_reaction(chat, msg).await?;
        tracing::debug!(chat, msg, reaction = ?current, "bot reaction");
        if let Err(e) = self.tg.set_reaction(ChatId(chat), MessageId(msg), current).await {
            // Telegram allows a fixed set of emoji; others cannot be mirrored.
            tracing::debug!(chat, msg, "setMessageReaction failed: {e}");
        }
        Ok(())
    }

    // ---- avatars ----

    /// Set a puppet's avatar from the Telegram profile photo, when it changed. Checked at most
    /// once an hour per user; failures only log.
    pub(super) async fn sync_avatar(&self, tg_user: i64, mxid: &UserId) {
        if !self.people.avatar_check_due(tg_user) {
            return;
        }
        let result: Result<()> = async {
            let Some(best) = self.tg.profile_photo(teloxide::types::UserId(tg_user as u64)).await? else {
                return Ok(());
            };
            if self.store.puppet_avatar(tg_user).await?.as_deref() == Some(best.file.unique_id.0.as_str()) {
                return Ok(());
            }
            let bytes = self.tg_download(&best.file).await?;
            let url = self.mx.upload(mxid, bytes, "image/jpeg", "avatar.jpg").await?;
            self.mx.set_avatar_url(mxid, &url).await?;
            self.store.set_puppet_avatar(tg_user, &best.file.unique_id.0).await?;
            tracing::info!(%mxid, "puppet avatar updated");
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(%mxid, "avatar not updated: {e}");
        }
    }
}

/// A part of a Matrix message sent to Telegram in parts.
pub(super) fn part_of(event_id: &ruma::EventId, part: i64, chat: i64, msg: i32) -> crate::storage::MessagePart {
    crate::storage::MessagePart {
        mx_event_id: event_id.to_owned(),
        part,
        tg_chat_id: chat,
        tg_msg_id: msg,
        part_event_id: event_id.to_owned(),
    }
}

/// The kind of a file for `tgmx status`: `voice`, `file` (a document), `image`, `audio`, `video`.
fn file_kind(voice: bool, msgtype: &str) -> &'static str {
    match msgtype {
        _ if voice => "voice",
        "m.image" => "image",
        "m.audio" => "audio",
        "m.video" => "video",
        _ => "file",
    }
}
