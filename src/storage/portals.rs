//! Portals (`portals`): which Matrix room bridges which Telegram chat.

use futures::FutureExt;
use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId};
use sqlx::Row;

use super::{Store, now_ms, parse_id};
use crate::error::Result;

/// A row of `portals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// The Telegram chat (the key).
    pub tg_chat_id: i64,
    /// The Matrix room that bridges it.
    pub mx_room_id: OwnedRoomId,
    /// The alias the room was configured by, if it was (a config naming another room or alias
    /// later no longer matches this portal).
    pub mx_alias: Option<OwnedRoomAliasId>,
}

impl Store {
    /// Link a chat to a room (replacing an earlier link of the chat).
    pub async fn upsert_portal(&self, tg_chat_id: i64, mx_room_id: &RoomId, alias: Option<&RoomAliasId>) -> Result<()> {
        sqlx::query(
            "INSERT INTO portals (tg_chat_id, mx_room_id, mx_alias, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(tg_chat_id) DO UPDATE SET mx_room_id = excluded.mx_room_id, mx_alias = excluded.mx_alias",
        )
        .bind(tg_chat_id)
        .bind(mx_room_id.as_str())
        .bind(alias.map(RoomAliasId::as_str))
        .bind(now_ms())
        .execute(&self.pool)
        .map(|r| self.noted(r))
        .await?;
        Ok(())
    }

    /// The stored portal of a chat. A stored room id or alias that does not parse is an error
    /// naming the column.
    pub async fn portal(&self, tg_chat_id: i64) -> Result<Option<Portal>> {
        let row = sqlx::query("SELECT mx_room_id, mx_alias FROM portals WHERE tg_chat_id = ?")
            .bind(tg_chat_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Portal {
            tg_chat_id,
            mx_room_id: parse_id("portals.mx_room_id", r.get(0))?,
            mx_alias: r
                .get::<Option<String>, _>(1)
                .map(|a| parse_id("portals.mx_alias", a))
                .transpose()?,
        }))
    }

    /// When the portal of this room was linked (events before it are history).
    pub async fn portal_created_at(&self, mx_room_id: &RoomId) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT created_at FROM portals WHERE mx_room_id = ?")
                .bind(mx_room_id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The room of a chat's portal, if it has one.
    pub async fn portal_room(&self, tg_chat_id: i64) -> Result<Option<OwnedRoomId>> {
        sqlx::query_scalar::<_, String>("SELECT mx_room_id FROM portals WHERE tg_chat_id = ?")
            .bind(tg_chat_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| parse_id("portals.mx_room_id", r))
            .transpose()
    }
}
