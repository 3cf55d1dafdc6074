//! Portals (`portals`): which Matrix room bridges which Telegram chat or forum topic
//! (`tg_thread_id` 0: the chat as a whole); `chat_upgrades`: groups that became supergroups (old
//! chat id -> new), which the portal follows; `forum_topics`: topic names.

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId};

use super::{Store, now_ms, parse_id};
use crate::error::Result;
use crate::telegram::Place;

/// `portals.tg_thread_id` of a place: 0 for the chat as a whole.
fn thread_column(place: Place) -> i64 {
    place.topic.map_or(0, i64::from)
}

/// A row of `portals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// The Telegram chat or topic (the key).
    pub place: Place,
    /// The Matrix room that bridges it.
    pub mx_room_id: OwnedRoomId,
    /// The alias the room was configured by, if it was (a config naming another room or alias
    /// later no longer matches this portal).
    pub mx_alias: Option<OwnedRoomAliasId>,
}

impl Store {
    /// Link a chat or topic to a room (replacing an earlier link of the place). A group that
    /// became a supergroup is linked under the supergroup's id (a link made while the upgrade was
    /// being recorded lands there too).
    pub async fn upsert_portal(&self, place: Place, mx_room_id: &RoomId, alias: Option<&RoomAliasId>) -> Result<()> {
        self.write(false, async |tx| {
            // A room bridges one place: a room moved to another topic leaves its old one.
            on!(tx.db(), |c| sqlx::query(
                "DELETE FROM portals WHERE mx_room_id = $1 AND NOT (tg_chat_id = \
                 COALESCE((SELECT new_chat_id FROM chat_upgrades WHERE old_chat_id = $2), $2) AND tg_thread_id = $3)"
            )
            .bind(mx_room_id.as_str())
            .bind(place.chat)
            .bind(thread_column(place))
            .execute(c)
            .await
            .map(|_| ()))?;
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO portals (tg_chat_id, tg_thread_id, mx_room_id, mx_alias, created_at)
                 VALUES (COALESCE((SELECT new_chat_id FROM chat_upgrades WHERE old_chat_id = $1), $1), $2, $3, $4, $5)
                 ON CONFLICT(tg_chat_id, tg_thread_id) DO UPDATE SET mx_room_id = excluded.mx_room_id, mx_alias = excluded.mx_alias",
            )
            .bind(place.chat)
            .bind(thread_column(place))
            .bind(mx_room_id.as_str())
            .bind(alias.map(RoomAliasId::as_str))
            .bind(now_ms())
            .execute(c)
            .await
            .map(|_| ()))?;
            Ok(())
        })
        .await
    }

    /// The stored portal of a chat or topic. A stored room id or alias that does not parse is an
    /// error naming the column.
    pub async fn portal(&self, place: Place) -> Result<Option<Portal>> {
        let row: Option<(String, Option<String>)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT mx_room_id, mx_alias FROM portals WHERE tg_chat_id = $1 AND tg_thread_id = $2"
        )
        .bind(place.chat)
        .bind(thread_column(place))
        .fetch_optional(p)
        .await)?;
        let Some((room, alias)) = row else { return Ok(None) };
        Ok(Some(Portal {
            place,
            mx_room_id: parse_id("portals.mx_room_id", room)?,
            mx_alias: alias.map(|a| parse_id("portals.mx_alias", a)).transpose()?,
        }))
    }

    /// When the portal of this room was linked (events before it are history).
    pub async fn portal_created_at(&self, mx_room_id: &RoomId) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT created_at FROM portals WHERE mx_room_id = $1"
        )
        .bind(mx_room_id.as_str())
        .fetch_optional(p)
        .await)?)
    }

    /// The room of a chat's or topic's portal, if it has one.
    pub async fn portal_room(&self, place: Place) -> Result<Option<OwnedRoomId>> {
        Ok(self.portal(place).await?.map(|p| p.mx_room_id))
    }

    /// Remember a forum topic's name (from the service message that created or renamed it).
    pub async fn save_topic_name(&self, place: Place, name: &str) -> Result<()> {
        let Some(topic) = place.topic else { return Ok(()) };
        let r = on!(self.db(), |p| {
            sqlx::query(
            "INSERT INTO forum_topics (tg_chat_id, tg_thread_id, name, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(tg_chat_id, tg_thread_id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
        )
        .bind(place.chat)
        .bind(i64::from(topic))
        .bind(name)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ())
        });
        self.noted(r)
    }

    /// A forum topic's name, if the bridge has seen it.
    pub async fn topic_name(&self, place: Place) -> Result<Option<String>> {
        let Some(topic) = place.topic else { return Ok(None) };
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT name FROM forum_topics WHERE tg_chat_id = $1 AND tg_thread_id = $2"
        )
        .bind(place.chat)
        .bind(i64::from(topic))
        .fetch_optional(p)
        .await)?)
    }

    /// Record that group `old` became supergroup `new`, and move the portal of `old` (if any) to
    /// `new`, in one transaction. `false` when it was recorded already (nothing changed).
    pub async fn record_chat_upgrade(&self, old: i64, new: i64) -> Result<bool> {
        self.write(true, async |tx| {
            let known: Option<i64> = on!(tx.db(), |c| sqlx::query_scalar(
                "SELECT new_chat_id FROM chat_upgrades WHERE old_chat_id = $1"
            )
            .bind(old)
            .fetch_optional(c)
            .await)?;
            if known == Some(new) {
                return Ok(false);
            }
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO chat_upgrades (old_chat_id, new_chat_id, at) VALUES ($1, $2, $3)
                 ON CONFLICT(old_chat_id) DO UPDATE SET new_chat_id = excluded.new_chat_id, at = excluded.at",
            )
            .bind(old)
            .bind(new)
            .bind(now_ms())
            .execute(c)
            .await
            .map(|_| ()))?;
            // Earlier upgrades that led to `old` lead on to `new`.
            on!(tx.db(), |c| sqlx::query(
                "UPDATE chat_upgrades SET new_chat_id = $1 WHERE new_chat_id = $2"
            )
            .bind(new)
            .bind(old)
            .execute(c)
            .await
            .map(|_| ()))?;
            let moved: Option<i32> = on!(tx.db(), |c| sqlx::query_scalar(
                "SELECT 1 FROM portals WHERE tg_chat_id = $1"
            )
            .bind(old)
            .fetch_optional(c)
            .await)?;
            if moved.is_some() {
                // A portal of the new id cannot be linked before the upgrade is known; if one
                // is, the old chat's (the configured one) wins.
                on!(tx.db(), |c| sqlx::query("DELETE FROM portals WHERE tg_chat_id = $1")
                    .bind(new)
                    .execute(c)
                    .await
                    .map(|_| ()))?;
                on!(tx.db(), |c| sqlx::query(
                    "UPDATE portals SET tg_chat_id = $1 WHERE tg_chat_id = $2"
                )
                .bind(new)
                .bind(old)
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            Ok(true)
        })
        .await
    }

    /// Every recorded upgrade: (old chat id, new chat id).
    pub async fn chat_upgrades(&self) -> Result<Vec<(i64, i64)>> {
        Ok(on!(self.db(), |p| sqlx::query_as::<_, (i64, i64)>(
            "SELECT old_chat_id, new_chat_id FROM chat_upgrades ORDER BY at"
        )
        .fetch_all(p)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::temp_store;
    use crate::storage::testing::both_backends;
    use crate::telegram::Place;

    both_backends! {
        async fn an_upgrade_moves_the_portal_to_the_new_chat_once() {
            let (store, _dir) = temp_store().await;
            let room = <&ruma::RoomId>::try_from("!r:hs").unwrap();
            store.upsert_portal(Place::chat(-5), room, None).await.unwrap();
            assert!(store.record_chat_upgrade(-5, -1005).await.unwrap());
            assert!(!store.record_chat_upgrade(-5, -1005).await.unwrap());
            assert_eq!(store.portal(Place::chat(-5)).await.unwrap(), None);
            assert_eq!(
                store.portal_room(Place::chat(-1005)).await.unwrap().as_deref(),
                Some(room)
            );
            assert_eq!(store.chat_upgrades().await.unwrap(), vec![(-5, -1005)]);
            // A link of the old id made after the upgrade was recorded is the new id's.
            let other = <&ruma::RoomId>::try_from("!s:hs").unwrap();
            store.upsert_portal(Place::chat(-5), other, None).await.unwrap();
            assert_eq!(store.portal(Place::chat(-5)).await.unwrap(), None);
            assert_eq!(
                store.portal_room(Place::chat(-1005)).await.unwrap().as_deref(),
                Some(other)
            );
        }
    }

    both_backends! {
        async fn a_forum_has_a_portal_per_topic_and_topic_names() {
            let (store, _dir) = temp_store().await;
            let (whole, deploys) = (Place::chat(-100), Place::topic(-100, Some(7)));
            let r1 = <&ruma::RoomId>::try_from("!whole:hs").unwrap();
            let r2 = <&ruma::RoomId>::try_from("!deploys:hs").unwrap();
            store.upsert_portal(whole, r1, None).await.unwrap();
            store.upsert_portal(deploys, r2, None).await.unwrap();
            assert_eq!(store.portal_room(whole).await.unwrap().as_deref(), Some(r1));
            assert_eq!(store.portal_room(deploys).await.unwrap().as_deref(), Some(r2));
            assert_eq!(store.portal(Place::topic(-100, Some(8))).await.unwrap(), None);
            // A room moved to another topic leaves its old one.
            store
                .upsert_portal(Place::topic(-100, Some(8)), r2, None)
                .await
                .unwrap();
            assert_eq!(store.portal(deploys).await.unwrap(), None);
            assert_eq!(store.topic_name(deploys).await.unwrap(), None);
            store.save_topic_name(deploys, "Deploys").await.unwrap();
            store.save_topic_name(deploys, "Releases").await.unwrap();
            assert_eq!(store.topic_name(deploys).await.unwrap().as_deref(), Some("Releases"));
            assert_eq!(store.topic_name(whole).await.unwrap(), None);
        }
    }
}
