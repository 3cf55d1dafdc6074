//! The bridge's Matrix users: puppets of Telegram users (`puppets`, with their avatars), the
//! rooms they joined (`memberships`), and the devices of users that act in encrypted rooms
//! (`e2ee_devices`).

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, RoomId, UserId};

use super::{Store, now_ms, parse_id};
use crate::error::Result;

/// A registered puppet (a row of `puppets` with `registered = 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Puppet {
    /// Its Matrix user.
    pub mxid: OwnedUserId,
    /// The display name last set, compared with the Telegram name to tell when to set it again.
    pub displayname: Option<String>,
}

/// A device of one of the bridge's users (a row of `e2ee_devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eeDevice {
    /// The device the login created.
    pub device_id: OwnedDeviceId,
    /// Its access token; never logged.
    pub access_token: String,
}

impl Store {
    // ---- puppets ----

    /// The stored puppet of a Telegram user, if it was registered. A stored mxid that does not
    /// parse is an error naming the column.
    pub async fn puppet(&self, tg_user_id: i64) -> Result<Option<Puppet>> {
        if let Some(p) = self.cache.lock().expect("lock").puppets.get(&tg_user_id) {
            return Ok(Some(p.clone()));
        }
        let row: Option<(String, Option<String>)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT mxid, displayname FROM puppets WHERE tg_user_id = $1 AND registered = 1"
        )
        .bind(tg_user_id)
        .fetch_optional(p)
        .await)?;
        let Some((mxid, displayname)) = row else {
            return Ok(None);
        };
        let puppet = Puppet {
            mxid: parse_id("puppets.mxid", mxid)?,
            displayname,
        };
        self.cache
            .lock()
            .expect("lock")
            .puppets
            .insert(tg_user_id, puppet.clone());
        Ok(Some(puppet))
    }

    /// Record a puppet as registered, with the display name just set.
    pub async fn save_puppet(&self, tg_user_id: i64, mxid: &UserId, displayname: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO puppets (tg_user_id, mxid, displayname, registered, updated_at) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT(tg_user_id) DO UPDATE SET displayname = excluded.displayname, registered = 1,
             updated_at = excluded.updated_at",
        )
        .bind(tg_user_id)
        .bind(mxid.as_str())
        .bind(displayname)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)?;
        self.cache.lock().expect("lock").puppets.insert(
            tg_user_id,
            Puppet {
                mxid: mxid.to_owned(),
                displayname: Some(displayname.to_owned()),
            },
        );
        Ok(())
    }

    /// Whether `mxid` is known to be joined to `room`.
    pub async fn is_member(&self, mxid: &UserId, room: &RoomId) -> Result<bool> {
        let key = (mxid.to_owned(), room.to_owned());
        if self.cache.lock().expect("lock").members.contains(&key) {
            return Ok(true);
        }
        let member = on!(self.db(), |p| sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM memberships WHERE mxid = $1 AND mx_room_id = $2"
        )
        .bind(mxid.as_str())
        .bind(room.as_str())
        .fetch_optional(p)
        .await)?
        .is_some();
        if member {
            self.cache.lock().expect("lock").members.insert(key);
        }
        Ok(member)
    }

    /// Record that `mxid` joined (`member`) or left `room`.
    pub async fn set_member(&self, mxid: &UserId, room: &RoomId, member: bool) -> Result<()> {
        let key = (mxid.to_owned(), room.to_owned());
        // Forgotten before the delete: a failed delete must not leave a stale "joined" behind.
        self.cache.lock().expect("lock").members.remove(&key);
        let q = if member {
            "INSERT INTO memberships (mxid, mx_room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM memberships WHERE mxid = $1 AND mx_room_id = $2"
        };
        let r = on!(self.db(), |p| sqlx::query(q)
            .bind(mxid.as_str())
            .bind(room.as_str())
            .execute(p)
            .await
            .map(|_| ()));
        self.noted(r)?;
        if member {
            self.cache.lock().expect("lock").members.insert(key);
        }
        Ok(())
    }

    // ---- devices ----

    /// The device of one of the bridge's users, once logged in. `owner` is the row's key: a user
    /// id, or another key per device of a user (`matrix::device::Purpose::key`), so not a
    /// [`UserId`].
    pub async fn e2ee_device(&self, owner: &str) -> Result<Option<E2eeDevice>> {
        let row: Option<(String, String)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT device_id, access_token FROM e2ee_devices WHERE user_id = $1"
        )
        .bind(owner)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(device_id, access_token)| E2eeDevice {
            device_id: device_id.into(),
            access_token,
        }))
    }

    /// Store the device of `owner` (see [`Store::e2ee_device`]), replacing an earlier one.
    pub async fn save_e2ee_device(&self, owner: &str, device_id: &DeviceId, access_token: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO e2ee_devices (user_id, device_id, access_token, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id,
             access_token = excluded.access_token, created_at = excluded.created_at",
        )
        .bind(owner)
        .bind(device_id.as_str())
        .bind(access_token)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    // ---- avatars ----

    /// The Telegram file (`unique_id`) of the puppet's avatar last set.
    pub async fn puppet_avatar(&self, tg_user_id: i64) -> Result<Option<String>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar::<_, Option<String>>(
            "SELECT avatar_id FROM puppets WHERE tg_user_id = $1"
        )
        .bind(tg_user_id)
        .fetch_optional(p)
        .await)?
        .flatten())
    }

    /// Record the Telegram file (`unique_id`) of the puppet's avatar just set.
    pub async fn set_puppet_avatar(&self, tg_user_id: i64, avatar_id: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "UPDATE puppets SET avatar_id = $1 WHERE tg_user_id = $2"
        )
        .bind(avatar_id)
        .bind(tg_user_id)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }
}
