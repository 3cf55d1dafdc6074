//! Portals: which Matrix room each configured Telegram chat or forum topic is bridged to, and
//! setting them up (the bot registered, each configured room joined, invites to configured rooms
//! accepted).
//!
//! [`Portals`] owns the place <-> room map and the setup state (`/ready` reports it); the
//! configuration says which pairs there should be, the database (`storage::portals`) which
//! were linked in earlier runs.
//!
//! Forum topics: a room configured with `telegram_topic` bridges that topic; a room configured
//! for the chat alone bridges the chat's General topic and every topic without a room of its own
//! (its messages name their topic, see [`Routed::shows_topic`]). A forum with topic rooms only
//! bridges nothing else ([`Portals::route`] is `None`; the caller audits what it ignores).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use ruma::{OwnedRoomId, RoomId, UserId};
use tokio::sync::Notify;

use super::Bridge;
use crate::config::Config;
use crate::error::Result;
use crate::telegram::Place;

/// Where a Telegram message of a place goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The room.
    pub room: OwnedRoomId,
    /// The topic the message is from when the room shows several (the chat's room, for a topic
    /// without a room of its own): its messages name it.
    pub shows_topic: Option<i32>,
    /// The portal the room bridges (the chat as a whole, or the topic).
    pub portal: Place,
}

/// The portals resolved in this run, and whether setup is done.
#[derive(Default)]
pub struct Portals {
    /// Telegram chat or topic -> Matrix room id, filled as configured rooms are resolved and
    /// joined.
    map: RwLock<HashMap<Place, OwnedRoomId>>,
    /// Setup finished: the bot exists and every configured room is joined (for `/ready`).
    ready: AtomicBool,
    /// Wakes the setup loop after the room list changed or an invite was accepted.
    setup_wake: Notify,
    /// Groups that became supergroups: old chat id -> new (see `bridge::upgrade`).
    upgraded: RwLock<HashMap<i64, i64>>,
    /// The config file the daemon runs with, when it has one (updated when a chat is upgraded).
    config_file: RwLock<Option<PathBuf>>,
    /// Held while an upgrade is recorded: its two service messages come in two lanes at once.
    upgrading: tokio::sync::Mutex<()>,
}

impl Portals {
    /// The room bridged to `chat` as a whole, once resolved. A group that became a supergroup is
    /// bridged where its supergroup is (its last messages may still be bridged after the upgrade).
    pub fn room_for_chat(&self, chat: i64) -> Option<OwnedRoomId> {
        self.room_for(Place::chat(chat))
    }

    /// The room bridged to exactly `place` (a chat as a whole, or one topic), once resolved.
    pub fn room_for(&self, place: Place) -> Option<OwnedRoomId> {
        let place = Place::topic(self.current_chat(place.chat), place.topic);
        self.map.read().expect("lock").get(&place).cloned()
    }

    /// Where a message posted in `place` goes: its topic's room, else the chat's room (which
    /// then shows the topic), else nowhere.
    pub fn route(&self, place: Place) -> Option<Routed> {
        let chat = self.current_chat(place.chat);
        let map = self.map.read().expect("lock");
        if let Some(topic) = place.topic
            && let Some(room) = map.get(&Place::topic(chat, Some(topic)))
        {
            return Some(Routed {
                room: room.clone(),
                shows_topic: None,
                portal: Place::topic(chat, Some(topic)),
            });
        }
        map.get(&Place::chat(chat)).map(|room| Routed {
            room: room.clone(),
            shows_topic: place.topic,
            portal: Place::chat(chat),
        })
    }

    /// Every resolved room of `chat` (the chat's and its topics').
    pub fn rooms_of_chat(&self, chat: i64) -> Vec<OwnedRoomId> {
        let chat = self.current_chat(chat);
        let map = self.map.read().expect("lock");
        let mut places: Vec<(&Place, &OwnedRoomId)> = map.iter().filter(|(p, _)| p.chat == chat).collect();
        places.sort();
        places.into_iter().map(|(_, r)| r.clone()).collect()
    }

    /// The chat `chat` is now: the supergroup it became, or itself.
    pub fn current_chat(&self, chat: i64) -> i64 {
        let upgraded = self.upgraded.read().expect("lock");
        let mut at = chat;
        // Chains are resolved when recorded; the bound only guards against a cycle.
        for _ in 0..8 {
            match upgraded.get(&at) {
                Some(&next) if next != at => at = next,
                _ => break,
            }
        }
        at
    }

    /// Note that group `old` became supergroup `new`: its portal (if any) is `new`'s from now
    /// on. `false` when this was known already.
    pub fn note_upgrade(&self, old: i64, new: i64) -> bool {
        let mut map = self.map.write().expect("lock");
        let mut upgraded = self.upgraded.write().expect("lock");
        if upgraded.get(&old) == Some(&new) {
            return false;
        }
        for to in upgraded.values_mut() {
            if *to == old {
                *to = new;
            }
        }
        upgraded.insert(old, new);
        let moved: Vec<Place> = map.keys().filter(|p| p.chat == old).copied().collect();
        for place in moved {
            if let Some(room) = map.remove(&place) {
                map.insert(Place::topic(new, place.topic), room);
            }
        }
        true
    }

    /// `cfg` with each room's `telegram` chat replaced by the supergroup it became, if it did.
    pub fn follow_upgrades(&self, mut cfg: Config) -> Config {
        for r in &mut cfg.rooms {
            r.telegram = self.current_chat(r.telegram);
        }
        cfg
    }

    /// Until no other upgrade is being recorded (held by the caller while it records one).
    pub async fn one_upgrade_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.upgrading.lock().await
    }

    /// The config file the daemon runs with (`tgmx run -c`), to update when a chat is upgraded.
    pub fn set_config_file(&self, path: PathBuf) {
        *self.config_file.write().expect("lock") = Some(path);
    }

    /// The config file the daemon runs with, if it knows it.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.config_file.read().expect("lock").clone()
    }

    /// The chat bridged to `room`, if it is a portal (of the chat or of one of its topics).
    pub fn chat_for_room(&self, room: &RoomId) -> Option<i64> {
        self.place_for_room(room).map(|p| p.chat)
    }

    /// The chat or topic bridged to `room`, if it is a portal.
    pub fn place_for_room(&self, room: &RoomId) -> Option<Place> {
        self.map
            .read()
            .expect("lock")
            .iter()
            .find(|(_, r)| r.as_str() == room.as_str())
            .map(|(p, _)| *p)
    }

    /// Whether some room is bridged (resolved and joined) already.
    pub fn any(&self) -> bool {
        !self.map.read().expect("lock").is_empty()
    }

    /// Every portal room.
    pub fn rooms(&self) -> Vec<OwnedRoomId> {
        self.map.read().expect("lock").values().cloned().collect()
    }

    /// Whether some room configured in `cfg` is not resolved (joined) yet.
    pub fn unresolved_in(&self, cfg: &Config) -> bool {
        let map = self.map.read().expect("lock");
        cfg.rooms.iter().any(|r| !map.contains_key(&r.place()))
    }

    /// Link `place` (in the supergroup its chat became, if it did) to `room`.
    fn insert(&self, place: Place, room: OwnedRoomId) {
        // The map's lock first, then the upgrades' (as everywhere): an upgrade noted meanwhile
        // cannot slip between reading where the chat is now and linking it.
        let mut map = self.map.write().expect("lock");
        // A room bridges one place (a reload may move a room to another topic).
        map.retain(|_, r| *r != room);
        map.insert(Place::topic(self.current_chat(place.chat), place.topic), room);
    }

    /// Forget portals whose place is no longer configured in `cfg` (after a reload).
    pub fn retain_configured(&self, cfg: &Config) {
        self.map.write().expect("lock").retain(|place, room| {
            cfg.rooms
                .iter()
                .any(|r| r.place() == *place && (r.matrix.is_room_alias_id() || r.matrix.as_str() == room.as_str()))
        });
    }

    /// Whether setup is done (every configured room joined).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Record whether setup is done.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Run the setup loop again now.
    pub fn wake_setup(&self) {
        self.setup_wake.notify_one();
    }

    /// Until [`Portals::wake_setup`] is called (a call made before is kept).
    pub async fn setup_woken(&self) {
        self.setup_wake.notified().await;
    }
}

impl Bridge {
    /// Whether some configured room is not resolved (joined) yet.
    pub fn has_unresolved_rooms(&self) -> bool {
        self.portals.unresolved_in(&self.cfg())
    }

    /// Portals known from an earlier run, so bridging starts before the homeserver answers.
    pub async fn load_portals(&self) -> Result<()> {
        self.load_upgrades().await?;
        let cfg = self.cfg();
        for r in &cfg.rooms {
            let Some(portal) = self.store.portal(r.place()).await? else {
                continue;
            };
            let same = if r.matrix.is_room_alias_id() {
                portal.mx_alias.as_ref().map(|a| a.as_str()) == Some(r.matrix.as_str())
            } else {
                portal.mx_room_id.as_str() == r.matrix.as_str()
            };
            if same {
                self.portals.insert(r.place(), portal.mx_room_id);
            }
        }
        Ok(())
    }

    /// Ensure the bot exists and every configured room is resolved and joined. Rooms that fail
    /// are retried by the caller.
    pub async fn setup(&self) -> Result<Vec<String>> {
        let cfg = self.cfg();
        self.mx.register(&cfg.appservice.bot_localpart).await?;
        if self.mx.displayname(&self.bot_mxid).await?.as_deref() != Some(&cfg.appservice.bot_displayname) {
            self.mx
                .set_displayname(&self.bot_mxid, &cfg.appservice.bot_displayname)
                .await?;
            tracing::info!(bot = %self.bot_mxid, name = %cfg.appservice.bot_displayname, "bridge bot registered on the homeserver");
        }
        let mut pending = Vec::new();
        for r in &cfg.rooms {
            if self.portals.room_for(r.place()).is_some() {
                continue;
            }
            match self.mx.join(&r.matrix, &self.bot_mxid).await {
                Ok(room_id) => {
                    let alias = <&ruma::RoomAliasId>::try_from(&*r.matrix).ok();
                    self.store.upsert_portal(r.place(), &room_id, alias).await?;
                    tracing::info!(room = %r.matrix, %room_id, telegram = %r.place(), "portal ready");
                    self.portals.insert(r.place(), room_id);
                }
                Err(e) => {
                    tracing::warn!(room = %r.matrix, "cannot join bridged room yet (invite the bot {}): {e}", self.bot_mxid);
                    pending.push(r.matrix.to_string());
                }
            }
        }
        Ok(pending)
    }

    /// An invite for the bot to a configured room arrived: join and link it.
    pub async fn accept_invite(&self, room: &ruma::RoomId) -> Result<bool> {
        let cfg = self.cfg();
        for r in &cfg.rooms {
            let matches = match <&ruma::RoomAliasId>::try_from(&*r.matrix) {
                Err(_) => r.matrix.as_str() == room.as_str(),
                Ok(alias) => self.mx.resolve_alias(alias).await.ok().is_some_and(|id| id == room),
            };
            if matches {
                let room_id = self.mx.join(room.into(), &self.bot_mxid).await?;
                let alias = <&ruma::RoomAliasId>::try_from(&*r.matrix).ok();
                self.store.upsert_portal(r.place(), &room_id, alias).await?;
                self.portals.insert(r.place(), room_id);
                tracing::info!(%room, telegram = %r.place(), "joined bridged room after invite");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The bot was invited to `room` by `sender` (unknown when only `/sync` told): a configured
    /// room is joined. An invite to a room not configured (yet) stays pending when it comes from
    /// someone the bridge knows (a mapped identity, or a member of a bridged room), so the room
    /// is joined on the reload that adds it; anyone else's is declined.
    pub async fn bot_invited(&self, room: &ruma::RoomId, sender: Option<&UserId>) -> Result<()> {
        if self.portals.chat_for_room(room).is_some() {
            return Ok(());
        }
        if self.management_invite(room, sender).await? {
            return Ok(());
        }
        if self.accept_invite(room).await? {
            self.portals.wake_setup(); // readiness may change
            return Ok(());
        }
        let known = match sender {
            Some(s) => self.identity_for_mx(s).is_some() || self.shares_a_portal(s).await,
            None => return Ok(()), // the appservice transaction names the sender
        };
        if known {
            tracing::info!(
                %room, sender = ?sender,
                "invited to a room that is not in `rooms`: the invite stays pending; add the room and reload to bridge it"
            );
        } else {
            tracing::info!(%room, sender = ?sender, "declining an invite from a stranger to a room that is not configured");
            let _ = self.mx.leave(room, &self.bot_mxid).await;
        }
        Ok(())
    }

    /// Whether `user` is joined to some bridged room.
    async fn shares_a_portal(&self, user: &UserId) -> bool {
        let rooms = self.portals.rooms();
        for room in rooms {
            if self.mx.membership(&room, user, &self.bot_mxid).await.as_deref() == Some("join") {
                return true;
            }
        }
        false
    }

    /// Make `user` (puppet or double puppet) a member of `room`: invite by the bot, then join.
    pub async fn ensure_joined(&self, user: &UserId, room: &OwnedRoomId) -> Result<()> {
        if self.store.is_member(user, room).await? {
            return Ok(());
        }
        if let Err(first) = self.mx.join((&**room).into(), user).await {
            tracing::debug!(%user, %room, "join failed ({first}), inviting first");
            if let Err(e) = self.mx.invite(room, &self.bot_mxid, user).await {
                tracing::debug!(%user, %room, "invite failed: {e}");
            }
            self.mx.join((&**room).into(), user).await?;
        }
        self.store.set_member(user, room, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgraded_group_is_bridged_where_its_supergroup_is() {
        let text = "homeserver: {url: \"http://h\", server_name: hs}\nappservice: {}\ngateway:\n  telegram: {bot_token: \"1:a\"}\nrooms:\n  - {matrix: \"!r:hs\", telegram: -5}\n";
        let cfg = Config::parse(text, std::path::Path::new(".")).unwrap();
        let portals = Portals::default();
        let room = OwnedRoomId::try_from("!r:hs").unwrap();
        portals.insert(Place::chat(-5), room.clone());
        assert!(portals.note_upgrade(-5, -1005));
        assert!(!portals.note_upgrade(-5, -1005));
        assert_eq!(portals.current_chat(-5), -1005);
        assert_eq!(portals.current_chat(-6), -6);
        // Its last messages, and the supergroup's, go to the same room; the room is the new id's.
        assert_eq!(portals.room_for_chat(-5), Some(room.clone()));
        assert_eq!(portals.room_for_chat(-1005), Some(room.clone()));
        assert_eq!(portals.chat_for_room(&room), Some(-1005));
        // Linked under the old id after the upgrade was noted (setup was under way): the new id's.
        let other = OwnedRoomId::try_from("!s:hs").unwrap();
        portals.insert(Place::chat(-5), other.clone());
        assert_eq!(portals.room_for_chat(-1005), Some(other));
        let followed = portals.follow_upgrades(cfg);
        assert_eq!(followed.rooms[0].telegram, -1005);
        assert!(!portals.unresolved_in(&followed));
    }

    #[test]
    fn a_topic_goes_to_its_room_else_to_the_chats_room_else_nowhere() {
        let portals = Portals::default();
        let (whole, deploys) = (
            OwnedRoomId::try_from("!whole:hs").unwrap(),
            OwnedRoomId::try_from("!deploys:hs").unwrap(),
        );
        // Topic rooms only: the General topic and other topics go nowhere.
        portals.insert(Place::topic(-100, Some(7)), deploys.clone());
        assert_eq!(portals.route(Place::topic(-100, Some(7))).unwrap().room, deploys);
        assert_eq!(portals.route(Place::topic(-100, Some(8))), None);
        assert_eq!(portals.route(Place::chat(-100)), None);
        // With the chat's room: everything else goes there, naming its topic.
        portals.insert(Place::chat(-100), whole.clone());
        let other = portals.route(Place::topic(-100, Some(8))).unwrap();
        assert_eq!(
            (other.room, other.shows_topic, other.portal),
            (whole.clone(), Some(8), Place::chat(-100))
        );
        let general = portals.route(Place::chat(-100)).unwrap();
        assert_eq!((general.room, general.shows_topic), (whole.clone(), None));
        let own = portals.route(Place::topic(-100, Some(7))).unwrap();
        assert_eq!((own.room, own.shows_topic), (deploys.clone(), None));
        assert_eq!(portals.place_for_room(&deploys), Some(Place::topic(-100, Some(7))));
        assert_eq!(portals.chat_for_room(&deploys), Some(-100));
        assert_eq!(portals.rooms_of_chat(-100), vec![whole.clone(), deploys.clone()]);
        // The forum was a group once: its rooms follow.
        assert!(portals.note_upgrade(-100, -1100));
        assert_eq!(portals.route(Place::topic(-100, Some(7))).unwrap().room, deploys);
        assert_eq!(portals.place_for_room(&deploys), Some(Place::topic(-1100, Some(7))));
        // A room moved to another topic leaves the first.
        portals.insert(Place::topic(-1100, Some(9)), deploys.clone());
        assert_eq!(portals.room_for(Place::topic(-1100, Some(7))), None);
    }
}
