//! The management room: operators command the bridge from a Matrix client (a phone, often),
//! with `!tgmx status`, `!tgmx audit 24h`, `!tgmx primary matrix|telegram [--standby]` and
//! `!tgmx rollcall #room`. The bot answers each command with an `m.notice` in reply to it.
//!
//! The room is `gateway.management_room`; it is no portal: nothing in it is bridged, and the
//! Matrix -> Telegram path hands every event of it here ([`Bridge::is_management_room`]).
//! Commands are taken from `gateway.operators` and `fleet.operator` only; anyone else gets a
//! refusal, and a warning naming them is logged. The room may be encrypted: events reach this
//! module decrypted by the bot's device, and replies are encrypted by it (through the intent),
//! whatever `encryption.allow` / `encryption.require` say, since they are about bridged rooms.
//!
//! `!tgmx primary` makes the same edit of the config file as `tgmx primary`
//! ([`crate::config_edit::set_primary`]) and applies it at once ([`Bridge::reload`]), so the file
//! and the running mode never disagree. A rollcall waits for answers, so it runs in a task of
//! its own ([`Bridge::run_management`]), not in the room's lane.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedRoomOrAliasId, RoomAliasId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, watch};

use super::Bridge;
use crate::error::{Error, Result};
use crate::report::Verdict;

/// The command prefix.
const PREFIX: &str = "!tgmx";

/// How long an encrypted command without keys is retried before the operator is told.
const UTD_WAIT_MS: i64 = 20_000;

/// How long a rollcall waits for answers unless the command says (as `tgmx rollcall`).
const ROLLCALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the bot answers to `!tgmx`, `!tgmx help` and anything it does not understand.
pub const USAGE: &str = "tgmx commands (operators only):\n\
    !tgmx status — mode, switch history, rooms, and whether the cutover is ready\n\
    !tgmx audit [24h] — what was not carried in full, with its unit (s, m, h or d)\n\
    !tgmx primary matrix|telegram [--standby] — switch the primary surface (edits the config file)\n\
    !tgmx rollcall [#room] [60s] — ask the agents to answer, and report who did";

/// A rollcall to run: where it was asked, and what.
struct Rollcall {
    room: OwnedRoomId,
    command: OwnedEventId,
    target: String,
    timeout: Duration,
}

/// The management room's state: its room id, once known, and the rollcalls to run.
pub struct Management {
    /// The configured room, and its room id (resolved or joined).
    resolved: RwLock<Option<(OwnedRoomOrAliasId, OwnedRoomId)>>,
    /// The configured room the bot has joined in this run, and when (unix ms).
    joined: RwLock<Option<(OwnedRoomOrAliasId, i64)>>,
    rollcalls: mpsc::UnboundedSender<Rollcall>,
    /// Taken by [`Bridge::run_management`] (again after a restart of that task).
    queue: Mutex<mpsc::UnboundedReceiver<Rollcall>>,
}

impl Default for Management {
    fn default() -> Self {
        let (rollcalls, queue) = mpsc::unbounded_channel();
        Management {
            resolved: RwLock::default(),
            joined: RwLock::default(),
            rollcalls,
            queue: Mutex::new(queue),
        }
    }
}

/// A command as the operator typed it.
#[derive(Debug, PartialEq)]
enum Command {
    Status,
    Audit(Duration),
    Primary {
        platform: String,
        standby: bool,
    },
    Rollcall {
        target: Option<String>,
        timeout: Duration,
    },
    /// Not understood: why, for the answer (with the usage).
    Usage(Option<String>),
}

/// The command in a message body, if it is one (`!tgmx ...`).
fn parse(body: &str) -> Option<Command> {
    let mut words = body.split_whitespace();
    if words.next()? != PREFIX {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let bad = |why: String| Some(Command::Usage(Some(why)));
    Some(match words.as_slice() {
        [] | ["help"] => Command::Usage(None),
        ["status"] => Command::Status,
        ["audit"] => Command::Audit(Duration::from_secs(86_400)),
        ["audit", since] => match crate::cli::parse_duration(since) {
            Ok(d) => Command::Audit(d),
            Err(e) => return bad(format!("audit: {e}")),
        },
        ["primary", rest @ ..] => {
            let standby = rest.contains(&"--standby");
            let platforms: Vec<&&str> = rest.iter().filter(|w| **w != "--standby").collect();
            match platforms.as_slice() {
                [p] if matches!(**p, "matrix" | "telegram") => {
                    if standby && **p != "matrix" {
                        return bad("primary: --standby only goes with `matrix`".into());
                    }
                    Command::Primary {
                        platform: (**p).to_owned(),
                        standby,
                    }
                }
                _ => return bad("primary: say `matrix` or `telegram`".into()),
            }
        }
        ["rollcall", rest @ ..] => {
            let mut target = None;
            let mut timeout = ROLLCALL_TIMEOUT;
            for w in rest {
                if w.starts_with(['#', '!']) && target.is_none() {
                    target = Some((*w).to_owned());
                } else {
                    match crate::cli::parse_duration(w) {
                        Ok(d) => timeout = d,
                        Err(_) => return bad(format!("rollcall: {w:?} is neither a room (#alias or !id) nor a time")),
                    }
                }
            }
            Command::Rollcall { target, timeout }
        }
        [other, ..] => return bad(format!("unknown command {other:?}")),
    })
}

/// A notice in reply to `to`: one line as it is, several as preformatted text.
fn reply_content(to: &EventId, text: &str) -> Value {
    let mut content = json!({
        "msgtype": "m.notice",
        "body": text,
        "m.relates_to": {"m.in_reply_to": {"event_id": to}},
    });
    if text.contains('\n') {
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(format!(
            "<pre><code>{}</code></pre>",
            crate::telegram::format::escape_html(text)
        ));
    }
    content
}

impl Bridge {
    /// Whether `room` is the management room (`gateway.management_room`, an alias resolved once
    /// and remembered). An alias the homeserver does not know is not the room; one it cannot be
    /// asked about now is retried (the caller's lane waits).
    pub async fn is_management_room(&self, room: &RoomId) -> Result<bool> {
        let Some(configured) = self.cfg().gateway.management_room.clone() else {
            return Ok(false);
        };
        if let Some((c, id)) = &*self.management.resolved.read().expect("lock")
            && *c == configured
        {
            return Ok(id == room);
        }
        // Not resolved yet: a portal's events do not wait for the directory.
        if self.portals.chat_for_room(room).is_some() {
            return Ok(false);
        }
        Ok(self.management_room_id(&configured).await?.as_deref() == Some(room))
    }

    /// The management room, once the bot has joined it (the catch-up and the `/sync` follower
    /// read it like a portal: a homeserver that holds back pushes holds commands too).
    pub fn joined_management_room(&self) -> Option<OwnedRoomId> {
        self.management_joined_at().map(|(room, _)| room)
    }

    /// The joined management room and when the bot joined it in this run (where the catch-up
    /// starts reading it, until it has read it once).
    pub fn management_joined_at(&self) -> Option<(OwnedRoomId, i64)> {
        let configured = self.cfg().gateway.management_room.clone()?;
        let at = match &*self.management.joined.read().expect("lock") {
            Some((c, at)) if *c == configured => *at,
            _ => return None,
        };
        match &*self.management.resolved.read().expect("lock") {
            Some((c, id)) if *c == configured => Some((id.clone(), at)),
            _ => None,
        }
    }

    /// The room id of the configured management room, resolving an alias if needed.
    async fn management_room_id(&self, configured: &OwnedRoomOrAliasId) -> Result<Option<OwnedRoomId>> {
        if let Some((c, id)) = &*self.management.resolved.read().expect("lock")
            && c == configured
        {
            return Ok(Some(id.clone()));
        }
        let id = match <&RoomAliasId>::try_from(&**configured) {
            Err(_) => OwnedRoomId::try_from(configured.as_str())
                .map_err(|e| Error::Config(format!("`gateway.management_room`: {e}")))?,
            Ok(alias) => match self.mx.resolve_alias(alias).await {
                Ok(id) => id,
                Err(Error::Matrix { status: 404, .. }) => return Ok(None),
                Err(e) => return Err(Error::NotReady(format!("cannot resolve {alias}: {e}"))),
            },
        };
        *self.management.resolved.write().expect("lock") = Some((configured.clone(), id.clone()));
        Ok(Some(id))
    }

    /// At setup: join the management room, if one is configured and not joined yet. `false`
    /// while it cannot be joined (the bot not invited yet; the setup loop tries again).
    pub async fn join_management_room(&self) -> bool {
        let Some(configured) = self.cfg().gateway.management_room.clone() else {
            return true;
        };
        if self
            .management
            .joined
            .read()
            .expect("lock")
            .as_ref()
            .is_some_and(|(c, _)| *c == configured)
        {
            return true;
        }
        match self.mx.join(&configured, &self.bot_mxid).await {
            Ok(room) => {
                self.management_joined(&configured, room).await;
                true
            }
            Err(e) => {
                tracing::warn!(
                    room = %configured,
                    "cannot join the management room yet (invite the bot {}): {e}",
                    self.bot_mxid
                );
                false
            }
        }
    }

    /// The bot was invited to `room`: the management room is joined (whoever invited: the
    /// config names it). `false` when `room` is not the management room.
    pub async fn management_invite(&self, room: &RoomId, sender: Option<&UserId>) -> Result<bool> {
        let Some(configured) = self.cfg().gateway.management_room.clone() else {
            return Ok(false);
        };
        if self.management_room_id(&configured).await?.as_deref() != Some(room) {
            return Ok(false);
        }
        let room = self.mx.join(room.into(), &self.bot_mxid).await?;
        tracing::info!(%room, inviter = ?sender, "joined the management room after an invite");
        self.management_joined(&configured, room).await;
        Ok(true)
    }

    async fn management_joined(&self, configured: &OwnedRoomOrAliasId, room: OwnedRoomId) {
        if self.portals.chat_for_room(&room).is_some() {
            tracing::error!(
                %room,
                "`gateway.management_room` is a bridged room: its `!tgmx` commands are answered and \
                 nothing in it is bridged any more; give the management room a room of its own"
            );
        }
        *self.management.resolved.write().expect("lock") = Some((configured.clone(), room.clone()));
        *self.management.joined.write().expect("lock") = Some((configured.clone(), crate::storage::now_ms()));
        tracing::info!(%room, configured = %configured, "management room ready: operators may send `!tgmx help`");
        // In an encrypted room the bot's device must exist before the operator's client shares
        // its room keys.
        if let Err(e) = self.management_encryption(&room).await {
            tracing::warn!(%room, "cannot read the management room's encryption state yet: {e}");
        }
    }

    /// Learn whether the management room is encrypted; if it is, start the bot's device.
    async fn management_encryption(&self, room: &RoomId) -> Result<()> {
        self.intents.learn_encryption(room).await?;
        if self.intents.is_encrypted(room) {
            self.intents.ensure_bot_device().await?;
        }
        Ok(())
    }

    /// An event of the management room (never bridged): a command is answered, anything else
    /// ignored.
    pub async fn management_event(&self, ev: &Value, room: &RoomId, sender: &UserId) -> Result<()> {
        let kind = ev["type"].as_str().unwrap_or_default();
        if kind == "m.room.encryption" && ev["state_key"] == "" {
            self.intents.set_encrypted(room);
            return self.intents.ensure_bot_device().await;
        }
        if self.is_bridge_user(sender) || ev.get("state_key").is_some() {
            return Ok(());
        }
        match kind {
            "m.room.encrypted" => self.management_encrypted(ev, room, sender).await,
            "m.room.message" => self.management_message(ev, room, sender).await,
            _ => Ok(()),
        }
    }

    /// An encrypted event: decrypted with the bot's device and handled like a plain one. Keys
    /// that have not arrived are waited for (the lane retries) for [`UTD_WAIT_MS`]; after that
    /// an operator is told that the bot could not read their message.
    async fn management_encrypted(&self, ev: &Value, room: &RoomId, sender: &UserId) -> Result<()> {
        use crate::matrix::crypto::Decrypted;
        self.intents.set_encrypted(room);
        self.intents.ensure_bot_device().await?;
        match self.intents.decrypt(room, ev).await? {
            Decrypted::Event(clear) => {
                if clear["type"] == "m.room.encrypted" {
                    return Err(Error::Internal("decrypted event is still encrypted".into()));
                }
                Box::pin(self.management_event(&clear, room, sender)).await
            }
            Decrypted::Undecryptable(reason) => {
                let age = crate::storage::now_ms() - ev["origin_server_ts"].as_i64().unwrap_or(0);
                if age < UTD_WAIT_MS {
                    return Err(Error::NotReady(format!(
                        "no keys yet for an encrypted event ({reason})"
                    )));
                }
                tracing::warn!(%room, %sender, "cannot decrypt a message in the management room: {reason}");
                let cfg = self.cfg();
                if let Some(event) = event_id(ev)
                    && cfg.gateway.is_operator(&cfg.fleet, sender)
                {
                    let text = "The bridge could not decrypt your message; if it was a command, send it again.";
                    self.management_reply(room, &event, 0, text).await?;
                }
                Ok(())
            }
        }
    }

    async fn management_message(&self, ev: &Value, room: &RoomId, sender: &UserId) -> Result<()> {
        let content = &ev["content"];
        // An edit is not a new command.
        if content["m.relates_to"]["rel_type"] == "m.replace" {
            return Ok(());
        }
        let (Some(event), Some(body)) = (event_id(ev), content["body"].as_str()) else {
            return Ok(());
        };
        let Some(command) = parse(body) else {
            return Ok(());
        };
        let line = body.trim();
        let cfg = self.cfg();
        if !cfg.gateway.is_operator(&cfg.fleet, sender) {
            tracing::warn!(%sender, %room, command = line, "management command refused: the sender is not an operator");
            let text = format!(
                "Not allowed: {sender} is not an operator of this bridge (gateway.operators). Nothing was done."
            );
            return self.management_reply(room, &event, 0, &text).await;
        }
        tracing::info!(%sender, command = line, "management command");
        let answer = match command {
            Command::Usage(None) => USAGE.to_owned(),
            Command::Usage(Some(why)) => format!("{why}\n\n{USAGE}"),
            Command::Status => match crate::report::status(&cfg, &self.store, true).await {
                Ok(r) => r.text(Verdict::Ready),
                Err(e) => format!("status failed: {e}"),
            },
            Command::Audit(since) => {
                let since_ms = crate::storage::now_ms() - since.as_millis() as i64;
                match crate::report::audit(&cfg, &self.store, since_ms, true).await {
                    Ok(r) => r.text(Verdict::NothingLost),
                    Err(e) => format!("audit failed: {e}"),
                }
            }
            Command::Primary { platform, standby } => self.management_primary(&platform, standby).await,
            Command::Rollcall { target, timeout } => {
                let Some(target) = target.or_else(|| cfg.rooms.first().map(|r| r.matrix.to_string())) else {
                    return self
                        .management_reply(room, &event, 0, "rollcall: no room configured; name one (#alias)")
                        .await;
                };
                let text = format!(
                    "Rollcall in {target}: waiting up to {} s for {} agent(s).",
                    timeout.as_secs(),
                    cfg.fleet.agents.len()
                );
                self.management_reply(room, &event, 0, &text).await?;
                let job = Rollcall {
                    room: room.to_owned(),
                    command: event,
                    target,
                    timeout,
                };
                if self.management.rollcalls.send(job).is_err() {
                    tracing::error!("the rollcall runner is gone; rollcall not run");
                }
                return Ok(());
            }
        };
        self.management_reply(room, &event, 0, &answer).await
    }

    /// `!tgmx primary`: the file edited as `tgmx primary` edits it, then reloaded at once (the
    /// file watcher finds nothing new afterwards). The answer names the mode now in force.
    async fn management_primary(&self, platform: &str, standby: bool) -> String {
        let Some(path) = self.portals.config_file() else {
            return "Cannot switch from here: the daemon runs without a config file (-c); nothing changed.".into();
        };
        let before = self.mode();
        let edit = {
            let (path, platform) = (path.clone(), platform.to_owned());
            tokio::task::spawn_blocking(move || crate::config_edit::set_primary(&path, &platform, standby)).await
        };
        let switch = match edit {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return format!("Not switched: {e}"),
            Err(e) => return format!("Not switched: {e}"),
        };
        tracing::info!(
            path = %path.display(),
            primary = switch.primary,
            fallback = switch.fallback,
            "config file edited from the management room"
        );
        if let Err(e) = self.reload(switch.config).await {
            return format!(
                "{} was edited (primary_platform {}, fallback_platform {}) but the reload failed: {e}",
                path.display(),
                switch.primary,
                switch.fallback
            );
        }
        let now = self.mode();
        let change = if now == before {
            format!("mode {} (unchanged)", now.as_str())
        } else {
            format!("mode {} (was {})", now.as_str(), before.as_str())
        };
        format!(
            "Now {change}: primary_platform {}, fallback_platform {}, written to {}.",
            switch.primary,
            switch.fallback,
            path.display()
        )
    }

    /// Answer the command `to` (`n`: which answer to it, for its transaction id).
    async fn management_reply(&self, room: &RoomId, to: &EventId, n: u32, text: &str) -> Result<()> {
        let txn = crate::matrix::txn::management_reply(to.as_str(), n);
        self.intents
            .bot()
            .send(room, "m.room.message", &txn, &reply_content(to, text))
            .await?;
        Ok(())
    }

    /// Run the rollcalls asked for in the management room, each in a task of its own, until the
    /// daemon stops.
    pub async fn run_management(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut queue = self.management.queue.lock().await;
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                job = queue.recv() => match job {
                    Some(job) => {
                        let b = self.clone();
                        running.spawn(async move { b.rollcall_job(job).await });
                    }
                    None => return,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {},
                _ = stop.wait_for(|s| *s) => {
                    running.abort_all();
                    return;
                }
            }
        }
    }

    async fn rollcall_job(&self, job: Rollcall) {
        let cfg = self.cfg();
        let text = match crate::ops::rollcall(&cfg, &self.mx, &self.reader, &job.target, job.timeout).await {
            Ok(answers) => {
                let missing = answers.iter().filter(|(_, t)| t.is_none()).count();
                let mut lines: Vec<String> = answers
                    .iter()
                    .map(|(agent, t)| match t {
                        Some(s) => format!("ok   {agent} answered in {s:.1} s"),
                        None => format!("FAIL {agent} did not answer within {} s", job.timeout.as_secs()),
                    })
                    .collect();
                lines.push(format!(
                    "rollcall in {}: {} of {} agents answered",
                    job.target,
                    answers.len() - missing,
                    answers.len()
                ));
                lines.join("\n")
            }
            Err(e) => format!("rollcall in {} failed: {e}", job.target),
        };
        if let Err(e) = self.management_reply(&job.room, &job.command, 1, &text).await {
            tracing::warn!(room = %job.room, "cannot post the rollcall's result: {e}");
        }
    }
}

fn event_id(ev: &Value) -> Option<OwnedEventId> {
    ev["event_id"].as_str().and_then(|e| OwnedEventId::try_from(e).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_and_anything_else_gets_the_usage() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("!tgmxstatus"), None);
        assert_eq!(parse("!tgmx"), Some(Command::Usage(None)));
        assert_eq!(parse("  !tgmx   status "), Some(Command::Status));
        assert_eq!(parse("!tgmx audit"), Some(Command::Audit(Duration::from_secs(86_400))));
        assert_eq!(
            parse("!tgmx audit 90m"),
            Some(Command::Audit(Duration::from_secs(5_400)))
        );
        assert!(matches!(parse("!tgmx audit 24"), Some(Command::Usage(Some(w))) if w.contains("has no unit")));
        assert_eq!(
            parse("!tgmx primary matrix --standby"),
            Some(Command::Primary {
                platform: "matrix".into(),
                standby: true
            })
        );
        assert_eq!(
            parse("!tgmx primary telegram"),
            Some(Command::Primary {
                platform: "telegram".into(),
                standby: false
            })
        );
        assert!(matches!(
            parse("!tgmx primary telegram --standby"),
            Some(Command::Usage(Some(_)))
        ));
        assert!(matches!(parse("!tgmx primary signal"), Some(Command::Usage(Some(_)))));
        assert_eq!(
            parse("!tgmx rollcall #fleet:hs 2m"),
            Some(Command::Rollcall {
                target: Some("#fleet:hs".into()),
                timeout: Duration::from_secs(120)
            })
        );
        assert_eq!(
            parse("!tgmx rollcall"),
            Some(Command::Rollcall {
                target: None,
                timeout: ROLLCALL_TIMEOUT
            })
        );
        assert!(matches!(parse("!tgmx rollcall soon"), Some(Command::Usage(Some(_)))));
        assert!(matches!(parse("!tgmx reboot"), Some(Command::Usage(Some(w))) if w.contains("reboot")));
    }

    #[test]
    fn replies_are_notices_in_reply_to_the_command() {
        let to = <&EventId>::try_from("$cmd:hs").unwrap();
        let one = reply_content(to, "done");
        assert_eq!(one["msgtype"], "m.notice");
        assert_eq!(one["m.relates_to"]["m.in_reply_to"]["event_id"], "$cmd:hs");
        assert!(one.get("formatted_body").is_none());
        let many = reply_content(to, "a <b>\nc");
        assert_eq!(many["body"], "a <b>\nc");
        assert_eq!(many["formatted_body"], "<pre><code>a &lt;b&gt;\nc</code></pre>");
    }
}
