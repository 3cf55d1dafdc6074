//! Groups that became supergroups. Telegram gives the supergroup a new chat id: the old group
//! gets a service message with `migrate_to_chat_id`, the new supergroup one with
//! `migrate_from_chat_id`, and any request to the old id is refused (400 "group chat was upgraded
//! to a supergroup chat", `parameters.migrate_to_chat_id`: `TgError::ChatGone { migrated_to }`).
//!
//! Whichever of these the bridge meets first, the portal follows the new id: the upgrade is
//! recorded (`chat_upgrades`, and the portal row moves to the new id in the same transaction),
//! the config in force is resolved through it (at start and on every reload, so a config that
//! still names the old id keeps working), and the config file is updated in place when the
//! daemon knows it (`tgmx run -c`); otherwise, or when the file cannot be edited, one warning
//! names the line to change. A Matrix message whose send was refused is sent again to the new id
//! (its lane retries it), so nothing is lost across the switch; messages of the old group that
//! were still queued are bridged to the same room (see `Portals::room_for_chat`).

use teloxide::types::ChatId;

use super::Bridge;
use crate::error::{Error, Result};
use crate::telegram::TgError;

impl Bridge {
    /// At start: the upgrades recorded in earlier runs, and the config resolved through them. A
    /// config file that still names an old id is updated (or the operator told) again.
    pub(super) async fn load_upgrades(&self) -> Result<()> {
        for (old, new) in self.store.chat_upgrades().await? {
            self.portals.note_upgrade(old, new);
        }
        let cfg = self.cfg();
        let followed = self.portals.follow_upgrades((*cfg).clone());
        if followed != *cfg {
            for (r, f) in cfg.rooms.iter().zip(&followed.rooms) {
                if r.telegram != f.telegram {
                    self.update_config_file(r.telegram, f.telegram);
                }
            }
            self.set_cfg(followed);
        }
        Ok(())
    }

    /// Group `old` became supergroup `new` (`how`: what told the bridge). A bridged group's
    /// portal follows the new id from now on; anything else is ignored. Recorded once: the
    /// second service message, or a refused send after one, changes nothing.
    pub async fn chat_upgraded(&self, old: i64, new: i64, how: &str) -> Result<()> {
        let _one = self.portals.one_upgrade_at_a_time().await;
        if old == new || self.portals.current_chat(old) == new {
            return Ok(());
        }
        if !self.chat_is_configured(old) {
            tracing::debug!(old, new, "a chat that is not bridged became a supergroup ({how})");
            return Ok(());
        }
        self.store.record_chat_upgrade(old, new).await?;
        self.portals.note_upgrade(old, new);
        self.set_cfg(self.portals.follow_upgrades((*self.cfg()).clone()));
        let room = self.portals.room_for_chat(new).map(|r| r.to_string());
        tracing::info!(
            old,
            new,
            room,
            "the Telegram group became a supergroup ({how}); the portal follows the new chat id"
        );
        self.update_config_file(old, new);
        self.portals.wake_setup();
        Ok(())
    }

    /// A Bot API answer for `chat`: a refusal because the group became a supergroup is recorded
    /// (the portal follows it) and comes back as a transient error, so the caller's lane sends
    /// the same message again, now to the new id. Other errors are returned as they are.
    pub async fn follow_upgrade<T>(&self, chat: i64, answer: Result<T, TgError>) -> Result<T> {
        match answer {
            Ok(v) => Ok(v),
            Err(
                e @ TgError::ChatGone {
                    migrated_to: Some(ChatId(new)),
                    ..
                },
            ) => {
                self.chat_upgraded(chat, new, "Telegram refused a send to the old id")
                    .await?;
                if self.portals.current_chat(chat) != new {
                    return Err(e.into()); // not a bridged chat: nothing to send again
                }
                Err(Error::NotReady(format!(
                    "chat {chat} became supergroup {new}: sending there instead"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A Matrix -> Telegram send to `chat` failed with `e` (after the error lost its Telegram
    /// details, as for a file): if Telegram refuses the chat because it became a supergroup, the
    /// portal follows it and the send is retried there (a transient error); else `e`.
    pub async fn upgraded_since(&self, chat: i64, e: Error) -> Error {
        if !matches!(e, Error::Telegram { transient: false, .. }) {
            return e;
        }
        match self.tg.chat_reachable(ChatId(chat)).await {
            Err(
                gone @ TgError::ChatGone {
                    migrated_to: Some(_), ..
                },
            ) => match self.follow_upgrade::<()>(chat, Err(gone)).await {
                Err(followed) => followed,
                Ok(()) => e,
            },
            _ => e,
        }
    }

    /// Make the config file name `new` where it names `old` (layout kept), or tell the operator
    /// the line to change when there is no file to edit or it cannot be edited.
    fn update_config_file(&self, old: i64, new: i64) {
        let Some(path) = self.portals.config_file() else {
            tracing::warn!(
                old,
                new,
                "Telegram chat {old} became supergroup {new}: the bridge follows it, but its config still says \
                 `telegram: {old}`; change that line of `rooms` to `telegram: {new}`"
            );
            return;
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        let edit = || -> Result<bool> {
            let text = std::fs::read_to_string(&path)?;
            if let Ok(cfg) = crate::config::Config::parse(&text, &base)
                && !cfg.rooms.iter().any(|r| r.telegram == old)
            {
                return Ok(false); // changed already (by the operator, or an earlier run)
            }
            let edited = crate::config_edit::set_room_chat(&text, old, new)?;
            crate::config::Config::parse(&edited, &base)?;
            crate::config_edit::write_in_place(&path, &edited)?;
            Ok(true)
        };
        match edit() {
            Ok(true) => tracing::info!(
                path = %path.display(),
                "config file updated: `telegram: {old}` is now `telegram: {new}` (the group became a supergroup)"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                old,
                new,
                path = %path.display(),
                "Telegram chat {old} became supergroup {new}: the bridge follows it, but cannot update the config \
                 file ({e}); change `telegram: {old}` to `telegram: {new}` in `rooms` of {}",
                path.display()
            ),
        }
    }
}
