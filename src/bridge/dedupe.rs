//! Cross-side duplicate suppression: a mapped person (the operator) may post the same command on
//! Telegram and on Matrix. Each platform already shows its own copy, so a copy whose twin exists
//! on the other platform within the window is not mirrored again; the Matrix copy gets a ✓
//! reaction (and the Telegram copy a 👌) so everyone sees it was sent on both.
//!
//! Race-free without locks: a post is visible to the other worker from the moment it is stored in
//! its inbox until it is processed, and from then on in `echo_watch` (written before the post
//! leaves the inbox). So of two twins, at least the one processed second finds the first.

use ruma::{OwnedRoomId, UserId};
use serde_json::{Value, json};
use teloxide::types::{ChatId, MessageId, Update, UpdateKind};

use super::Bridge;
use crate::error::Result;
use crate::telegram::html::strip_reply_fallback;

/// Case-folded, whitespace-collapsed text.
pub fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl Bridge {
    fn dedupe_window_ms(&self) -> Option<i64> {
        let cfg = self.cfg();
        cfg.gateway
            .dedupe
            .enabled
            .then(|| cfg.gateway.dedupe.window_secs as i64 * 1000)
    }

    /// For a Telegram post of a mapped identity: the native Matrix twin's event id, if any.
    pub(super) async fn matrix_twin(
        &self,
        identity: &UserId,
        chat: i64,
        room: &OwnedRoomId,
        msg_id: i32,
        text: &str,
        ts: i64,
    ) -> Result<Option<String>> {
        let Some(window) = self.dedupe_window_ms() else {
            return Ok(None);
        };
        let norm = normalize(text);
        self.store
            .watch_post("telegram", &msg_id.to_string(), identity, chat, &norm, ts)
            .await?;
        if let Some(ev) = self
            .store
            .find_watched("matrix", identity, chat, &norm, ts, window)
            .await?
        {
            return Ok(Some(ev));
        }
        for item in self.store.all_mx_inbox().await? {
            let Ok(ev) = serde_json::from_str::<Value>(&item.json) else {
                continue;
            };
            if ev["type"] == "m.room.message"
                && ev["sender"] == identity.as_str()
                && ev["room_id"] == room.as_str()
                && ev["content"]["m.relates_to"]["rel_type"] != "m.replace"
                && (ev["origin_server_ts"].as_i64().unwrap_or_default() - ts).abs() <= window
                && normalize(&strip_reply_fallback(
                    ev["content"]["body"].as_str().unwrap_or_default(),
                )) == norm
            {
                return Ok(ev["event_id"].as_str().map(str::to_owned));
            }
        }
        Ok(None)
    }

    /// For a Matrix post of a mapped identity: the native Telegram twin's message id, if any.
    pub(super) async fn telegram_twin(
        &self,
        identity: &UserId,
        tg_user: i64,
        chat: i64,
        event_id: &str,
        body: &str,
        ts: i64,
    ) -> Result<Option<i32>> {
        let Some(window) = self.dedupe_window_ms() else {
            return Ok(None);
        };
        let norm = normalize(&strip_reply_fallback(body));
        self.store
            .watch_post("matrix", event_id, identity, chat, &norm, ts)
            .await?;
        if let Some(m) = self
            .store
            .find_watched("telegram", identity, chat, &norm, ts, window)
            .await?
        {
            return Ok(m.parse().ok());
        }
        for item in self.store.all_tg_inbox().await? {
            let Ok(Update {
                kind: UpdateKind::Message(m),
                ..
            }) = serde_json::from_str::<Update>(&item.json)
            else {
                continue;
            };
            if m.chat.id.0 == chat
                && m.from.as_ref().is_some_and(|f| f.id.0 as i64 == tg_user)
                && (m.date.timestamp_millis() - ts).abs() <= window
                && m.text().or(m.caption()).is_some_and(|t| normalize(t) == norm)
            {
                return Ok(Some(m.id.0));
            }
        }
        Ok(None)
    }

    /// Mark the original of a pair of twins: ✓ on its Matrix copy, 👌 on its Telegram copy.
    /// The ✓ is required (retried on failure); the Telegram reaction is best effort.
    pub(super) async fn mark_original(&self, room: &OwnedRoomId, mx_event: &str, chat: i64, tg_msg: i32) -> Result<()> {
        let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": mx_event, "key": "✓"}});
        // Both workers may mark the same pair: the txn id makes the second a no-op.
        self.send_event(
            room,
            &self.bot_mxid,
            "m.reaction",
            &crate::matrix::txn::twin_mark(mx_event),
            &content,
        )
        .await?;
        if let Err(e) = self
            .tg
            .set_reaction(ChatId(chat), MessageId(tg_msg), Some("👌".into()))
            .await
        {
            tracing::debug!(chat, tg_msg, "cannot react on telegram: {e}");
        }
        tracing::info!(%room, mx_event, chat, tg_msg, "same post on both platforms: second copy not mirrored");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalisation_ignores_case_and_spacing() {
        assert_eq!(normalize("  Deploy   NOW\n please "), "deploy now please");
        assert_ne!(normalize("deploy now"), normalize("deploy later"));
    }
}
