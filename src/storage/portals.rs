//! Portals (`portals`): which Matrix room bridges which Telegram chat; `chat_upgrades`: groups that
//! became supergroups (old chat id -> new), which the portal follows.

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
    /// Link a chat to a room (replacing an earlier link of the chat). A group that became a
    /// supergroup is linked under the supergroup's id (a link made while the upgrade was being
    /// recorded lands there too).
    pub async fn upsert_portal(&self, tg_chat_id: i64, mx_room_id: &RoomId, alias: Option<&RoomAliasId>) -> Result<()> {
        sqlx::query(
            "INSERT INTO portals (tg_chat_id, mx_room_id, mx_alias, created_at)
             VALUES (COALESCE((SELECT new_chat_id FROM chat_upgrades WHERE old_chat_id = ?1), ?1), ?2, ?3, ?4)
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

    /// Record that group `old` became supergroup `new`, and move the portal of `old` (if any) to
    /// `new`, in one transaction. `false` when it was recorded already (nothing changed).
    pub async fn record_chat_upgrade(&self, old: i64, new: i64) -> Result<bool> {
        self.write(true, async |tx| {
            let known: Option<i64> = sqlx::query_scalar("SELECT new_chat_id FROM chat_upgrades WHERE old_chat_id = ?")
                .bind(old)
                .fetch_optional(&mut *tx)
                .await?;
            if known == Some(new) {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO chat_upgrades (old_chat_id, new_chat_id, at) VALUES (?, ?, ?)
                 ON CONFLICT(old_chat_id) DO UPDATE SET new_chat_id = excluded.new_chat_id, at = excluded.at",
            )
            .bind(old)
            .bind(new)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            // Earlier upgrades that led to `old` lead on to `new`.
            sqlx::query("UPDATE chat_upgrades SET new_chat_id = ? WHERE new_chat_id = ?")
                .bind(new)
                .bind(old)
                .execute(&mut *tx)
                .await?;
            let moved: Option<i64> = sqlx::query_scalar("SELECT 1 FROM portals WHERE tg_chat_id = ?")
                .bind(old)
                .fetch_optional(&mut *tx)
                .await?;
            if moved.is_some() {
                // A portal of the new id cannot be linked before the upgrade is known; if one
                // is, the old chat's (the configured one) wins.
                sqlx::query("DELETE FROM portals WHERE tg_chat_id = ?")
                    .bind(new)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE portals SET tg_chat_id = ? WHERE tg_chat_id = ?")
                    .bind(new)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(true)
        })
        .await
    }

    /// Every recorded upgrade: (old chat id, new chat id).
    pub async fn chat_upgrades(&self) -> Result<Vec<(i64, i64)>> {
        Ok(
            sqlx::query_as::<_, (i64, i64)>("SELECT old_chat_id, new_chat_id FROM chat_upgrades ORDER BY at")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::temp_store;

    #[tokio::test]
    async fn an_upgrade_moves_the_portal_to_the_new_chat_once() {
        let (store, _dir) = temp_store().await;
        let room = <&ruma::RoomId>::try_from("!r:hs").unwrap();
        store.upsert_portal(-5, room, None).await.unwrap();
        assert!(store.record_chat_upgrade(-5, -1005).await.unwrap());
        assert!(!store.record_chat_upgrade(-5, -1005).await.unwrap());
        assert_eq!(store.portal(-5).await.unwrap(), None);
        assert_eq!(store.portal_room(-1005).await.unwrap().as_deref(), Some(room));
        assert_eq!(store.chat_upgrades().await.unwrap(), vec![(-5, -1005)]);
        // A link of the old id made after the upgrade was recorded is the new id's.
        let other = <&ruma::RoomId>::try_from("!s:hs").unwrap();
        store.upsert_portal(-5, other, None).await.unwrap();
        assert_eq!(store.portal(-5).await.unwrap(), None);
        assert_eq!(store.portal_room(-1005).await.unwrap().as_deref(), Some(other));
    }
}
