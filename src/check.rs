//! `tgmx check`: the readiness check of the cutover plan's phase 0. One line per condition,
//! `ok` or `FAIL` with a hint; the caller exits non-zero on any FAIL.

use ruma::{OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId};
use teloxide::types::ChatId;

use crate::config::{Config, Registration};
use crate::error::Error;
use crate::matrix::client::MatrixClient;

/// One checked condition.
pub struct Line {
    pub ok: bool,
    pub what: String,
    pub hint: String,
}

fn line(ok: bool, what: impl Into<String>, hint: impl Into<String>) -> Line {
    Line {
        ok,
        what: what.into(),
        hint: hint.into(),
    }
}

/// The id of a configured room: an alias resolved (`None` when that fails), or the id itself.
async fn room_id(mx: &MatrixClient, room: &RoomOrAliasId) -> Option<OwnedRoomId> {
    match <&RoomAliasId>::try_from(room) {
        Ok(alias) => mx.resolve_alias(alias).await.ok(),
        Err(_) => <&RoomId>::try_from(room).ok().map(ToOwned::to_owned),
    }
}

/// Whether the bot sees other bots' (agents') messages in `chat`. Telegram shows a bot another
/// bot's group messages when it has Bot-to-Bot Communication Mode on, is an admin and has privacy
/// mode off (<https://core.telegram.org/api/bots/bot-to-bot>). The Bot API reports the last two
/// (`getChatMember`, `getMe`'s `can_read_all_group_messages`) but not the mode: the line says so.
fn bot_agents_line(chat: i64, bot: &str, admin: bool, reads_all: bool) -> Line {
    let mut todo = Vec::new();
    if !admin {
        todo.push(format!("make @{bot} an admin of the group"));
    }
    if !reads_all {
        todo.push(format!(
            "turn privacy mode off: @BotFather, /setprivacy, @{bot}, Disable (then remove the bot from the \
             group and add it again: Telegram applies it to groups joined afterwards)"
        ));
    }
    todo.push(format!(
        "make sure Bot-to-Bot Communication Mode is on: @BotFather, /mybots, @{bot}, Bot Settings, \
         Bot-to-Bot Communication"
    ));
    line(
        admin && reads_all,
        format!(
            "bot sees bot agents' messages in {chat} (admin: {}, privacy mode: {}; Bot-to-Bot Communication \
             Mode cannot be read through the Bot API: it must be on in @BotFather)",
            if admin { "yes" } else { "no" },
            if reads_all { "off" } else { "on" },
        ),
        todo.join("; "),
    )
}

/// With Telegram disabled nothing reads it, and Telegram keeps unread updates for 24 hours:
/// the time left since the standby began; FAIL once under 6 hours are left.
async fn unread_window(cfg: &Config) -> Line {
    let hint = "set gateway.telegram.enabled: true: in standby the bot then reads Telegram into its inbox and \
                relays nothing, so a later rollback loses nothing";
    let since = match crate::storage::Store::open(&cfg.database).await {
        Ok(store) => store.standby_since().await.ok().flatten(),
        Err(_) => None,
    };
    let now = crate::storage::now_ms();
    match since {
        Some(since) => line(
            since + 18 * 3_600_000 > now,
            crate::bridge::standby::unread_window_line(since, now),
            hint,
        ),
        None => line(
            false,
            "telegram is not read (gateway.telegram.enabled: false) and the database does not say since when",
            hint,
        ),
    }
}

/// Run every check. `daemon_running` skips the second-poller probe (the daemon is the poller).
pub async fn run(cfg: &Config, daemon_running: bool) -> Vec<Line> {
    let mut out = vec![line(true, "config valid", "")];
    let reg = match Registration::load(&cfg.appservice.registration) {
        Ok(r) => {
            out.push(line(true, "registration readable", ""));
            Some(r)
        }
        Err(e) => {
            out.push(line(false, "registration readable", format!("{e}")));
            None
        }
    };
    let mx = MatrixClient::new(&cfg.homeserver.url, reg.as_ref().map_or("", |r| r.as_token.as_str()));
    let hs_up = mx.versions().await.is_ok();
    out.push(line(
        hs_up,
        format!("homeserver reachable ({})", cfg.homeserver.url),
        "is it running? is homeserver.url right?",
    ));
    if hs_up && reg.is_some() {
        let ping = mx
            .appservice_ping(
                &cfg.appservice.id,
                &crate::matrix::txn::check_ping(crate::storage::now_ms()),
            )
            .await;
        let hint = match &ping {
            Err(Error::Matrix { errcode, message, .. }) => {
                format!("{errcode}: {message} (registered with the homeserver? is `tgmx run` up?)")
            }
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        out.push(line(ping.is_ok(), "appservice registered and reachable (ping)", hint));
        let bot = cfg.bot_user_id();
        let exists = mx.profile(&bot).await.is_ok();
        out.push(line(
            exists,
            format!("bot user {bot} exists"),
            "start the daemon once: it registers the bot",
        ));
        for r in &cfg.rooms {
            let joined = match mx.join(&r.matrix, &bot).await {
                Ok(room) => mx
                    .joined_members(&room, &bot)
                    .await
                    .is_ok_and(|members| members.contains(&bot)),
                Err(_) => false,
            };
            out.push(line(
                joined,
                format!("room {} exists and the bot is in it", r.matrix),
                format!("invite {bot} to it"),
            ));
            let encrypted = match room_id(&mx, &r.matrix).await {
                Some(room) => matches!(mx.room_encrypted(&room, &bot).await, Ok(true)),
                None => false,
            };
            if encrypted {
                let sender_ok = reg
                    .as_ref()
                    .is_some_and(|r| r.sender_localpart != cfg.appservice.bot_localpart);
                let built = crate::matrix::crypto::Crypto::AVAILABLE;
                let ok = built && cfg.encryption.allow && cfg.encryption.pickle_key.is_some() && sender_ok;
                out.push(line(
                    ok,
                    format!("room {} is encrypted and the bridge can take part", r.matrix),
                    if !built {
                        "this tgmx was built without the `e2ee` cargo feature: build it with default features"
                            .to_owned()
                    } else if !cfg.encryption.allow {
                        "`encryption.allow` is off".to_owned()
                    } else if cfg.encryption.pickle_key.is_none() {
                        "set TGMX_PICKLE_KEY (or `encryption.pickle_key`)".to_owned()
                    } else {
                        "the registration's sender is the bot: regenerate and re-register it".to_owned()
                    },
                ));
            } else if cfg.encryption.require {
                out.push(line(
                    false,
                    format!("room {} is encrypted (`encryption.require` is on)", r.matrix),
                    "turn encryption on in the room, or `encryption.require: false`",
                ));
            }
        }
        if !cfg.fleet.agents.is_empty() || cfg.fleet.min_agents > 0 {
            let mut present = 0;
            for agent in &cfg.fleet.agents {
                let mut everywhere = true;
                for r in &cfg.rooms {
                    everywhere &= match room_id(&mx, &r.matrix).await {
                        Some(room) => mx.membership(&room, agent, &bot).await.as_deref() == Some("join"),
                        None => false,
                    };
                }
                present += usize::from(everywhere);
            }
            out.push(line(
                present >= cfg.fleet.min_agents,
                format!(
                    "{present} of {} agents joined to every room (need {})",
                    cfg.fleet.agents.len(),
                    cfg.fleet.min_agents
                ),
                "run `tgmx bootstrap` to invite them, and have them accept",
            ));
        }
    }
    if !cfg.gateway.telegram.enabled {
        out.push(unread_window(cfg).await);
    }
    let Ok(token) = cfg.telegram_token() else {
        out.push(line(
            !cfg.gateway.telegram.enabled,
            "telegram bot token set",
            "set TGMX_TELEGRAM_TOKEN",
        ));
        return out;
    };
    let Ok(api) = url::Url::parse(&cfg.gateway.telegram.api_url) else {
        return out;
    };
    let tg = crate::telegram::TelegramSender::new(
        token.to_owned(),
        api,
        cfg.gateway.telegram.poll_timeout,
        0,
        cfg.gateway.telegram.per_bot_per_second,
    );
    match tg.get_me().await {
        Ok(me) => {
            out.push(line(true, format!("telegram token valid (@{})", me.username()), ""));
            let reads_all = me.can_read_all_group_messages;
            for r in &cfg.rooms {
                let chat = tg.chat_reachable(ChatId(r.telegram)).await;
                out.push(line(
                    chat.is_ok(),
                    format!("telegram chat {} reachable", r.telegram),
                    "add the bot to the group",
                ));
                let admin = tg.is_privileged(ChatId(r.telegram), me.id).await.unwrap_or(false);
                out.push(line(
                    reads_all || admin,
                    format!("bot sees every message in {}", r.telegram),
                    "turn privacy mode off (@BotFather /setprivacy) or make the bot an admin",
                ));
                out.push(bot_agents_line(r.telegram, me.username(), admin, reads_all));
                // The cutover and standby notices are pinned there.
                let pin = tg.can_pin(ChatId(r.telegram), me.id).await;
                out.push(line(
                    matches!(pin, Ok(true)),
                    format!("bot may pin messages in {} (the cutover notice is pinned)", r.telegram),
                    match pin {
                        Ok(_) => format!(
                            "make @{} an admin of the group with the right to pin messages",
                            me.username()
                        ),
                        Err(e) => format!("cannot tell: {e}"),
                    },
                ));
            }
            if daemon_running {
                out.push(line(
                    true,
                    "no second poller on this token (skipped: the daemon is the poller)",
                    "",
                ));
            } else {
                let conflict = tg.other_poller().await;
                out.push(line(
                    !conflict,
                    "no other poller uses this token",
                    "stop the other bot instance (409 Conflict)",
                ));
            }
        }
        Err(e) => out.push(line(false, "telegram token valid", format!("telegram: {e}"))),
    }
    out
}
