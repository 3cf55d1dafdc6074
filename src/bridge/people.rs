//! People: the puppets of Telegram users (`@<prefix><id>:<server>`), the mapped identities
//! (double puppets, from `identities` in the config), and Matrix senders' display names as the
//! Telegram side shows them.

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use teloxide::types::User;

use super::Bridge;

/// What a bot's puppet has after its name on Matrix, so that people (and agents) can tell a bot
/// agent from a person.
pub const BOT_MARK: &str = " (bot)";

/// The display name of a Telegram user's puppet: their full name, with [`BOT_MARK`] for a bot.
pub fn puppet_name(user: &User) -> String {
    let name = user.full_name();
    if user.is_bot { format!("{name}{BOT_MARK}") } else { name }
}

/// What the core remembers about people in this run.
#[derive(Default)]
pub struct People {
    /// Display names of Matrix senders per room, from member events (asked once otherwise).
    names: Mutex<HashMap<(OwnedRoomId, OwnedUserId), String>>,
    /// When each Telegram user's avatar was last checked (at most once an hour).
    avatar_checked: Mutex<HashMap<i64, std::time::Instant>>,
}

impl People {
    /// Whether `tg_user`'s avatar is due for a check now (then it is not for another hour).
    pub fn avatar_check_due(&self, tg_user: i64) -> bool {
        let mut seen = self.avatar_checked.lock().expect("lock");
        if seen
            .get(&tg_user)
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(3600))
        {
            return false;
        }
        seen.insert(tg_user, std::time::Instant::now());
        true
    }

    /// Note a member's display name (`None`: forget it, they left or cleared it).
    pub fn remember_name(&self, room: &OwnedRoomId, user: &UserId, name: Option<&str>) {
        let mut names = self.names.lock().expect("lock");
        match name.filter(|n| !n.is_empty()) {
            Some(n) => names.insert((room.clone(), user.to_owned()), n.to_owned()),
            None => names.remove(&(room.clone(), user.to_owned())),
        };
    }
}

impl Bridge {
    /// The puppet of a Telegram user.
    pub fn puppet_mxid(&self, tg_user: i64) -> OwnedUserId {
        let cfg = self.cfg();
        OwnedUserId::try_from(format!(
            "@{}{}:{}",
            cfg.appservice.puppet_prefix, tg_user, cfg.homeserver.server_name
        ))
        .expect("valid puppet id")
    }

    /// The Telegram user a puppet stands for (`None`: not a puppet of this bridge).
    pub fn puppet_tg_id(&self, user: &UserId) -> Option<i64> {
        let cfg = self.cfg();
        if user.server_name().as_str() != cfg.homeserver.server_name.as_str() {
            return None;
        }
        let id = user.localpart().strip_prefix(cfg.appservice.puppet_prefix.as_str())?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse().ok()
    }

    /// A user the bridge acts as: the bot or a puppet. Their events are never relayed back.
    pub fn is_bridge_user(&self, user: &UserId) -> bool {
        user == self.bot_mxid || self.puppet_tg_id(user).is_some()
    }

    /// The Matrix account a mapped person (double puppet) uses, for a Telegram user id.
    pub fn identity_for_tg(&self, tg_user: i64) -> Option<OwnedUserId> {
        self.cfg()
            .identities
            .iter()
            .find(|i| i.telegram == tg_user)
            .map(|i| i.matrix.clone())
    }

    /// The Telegram user id of a mapped Matrix account.
    pub fn identity_for_mx(&self, user: &UserId) -> Option<i64> {
        self.cfg()
            .identities
            .iter()
            .find(|i| i.matrix == user)
            .map(|i| i.telegram)
    }

    /// Appservice user query: the bot and puppets of Telegram users we have seen exist.
    pub async fn user_exists(&self, user: &str) -> bool {
        let Ok(user) = UserId::parse(user) else {
            return false;
        };
        if user == self.bot_mxid {
            return true;
        }
        match self.puppet_tg_id(&user) {
            Some(id) => matches!(self.store.puppet(id).await, Ok(Some(_))),
            None => false,
        }
    }

    /// Display name of a Matrix user in a room, cached; falls back to the localpart.
    pub async fn matrix_name(&self, room: &OwnedRoomId, user: &UserId) -> String {
        let key = (room.clone(), user.to_owned());
        if let Some(n) = self.people.names.lock().expect("lock").get(&key) {
            return n.clone();
        }
        let name = match self.mx.member_displayname(room, user, &self.bot_mxid).await {
            Ok(Some(n)) => n,
            _ => user.localpart().to_owned(),
        };
        self.people.names.lock().expect("lock").insert(key, name.clone());
        name
    }
}
