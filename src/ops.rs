//! Runbook commands that act on the homeserver as the bridge bot: `bootstrap` (create and link
//! the fleet rooms, idempotently, with a dry run) and `rollcall` (ask the agents to answer).

use std::time::{Duration, Instant};

use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId};
use serde_json::json;

use crate::config::{Config, RoomMapping};
use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::Store;

/// The people a room should have: the operator and the agents.
fn expected(cfg: &Config) -> Vec<OwnedUserId> {
    cfg.fleet
        .operator
        .iter()
        .chain(cfg.fleet.agents.iter())
        .cloned()
        .collect()
}

/// Create missing rooms, invite missing people, join the bot, link portals. Returns the plan
/// (what was done, or with `dry_run` what would be done); running it twice changes nothing.
pub async fn bootstrap(cfg: &Config, mx: &MatrixClient, store: &Store, dry_run: bool) -> Result<Vec<String>> {
    let bot = cfg.bot_user_id();
    let verb = |s: &str| if dry_run { format!("would {s}") } else { s.to_owned() };
    let mut plan = Vec::new();
    if !dry_run {
        mx.register(&cfg.appservice.bot_localpart).await?;
    }
    for r in &cfg.rooms {
        let existing = if r.matrix.is_room_alias_id() {
            let alias = <&RoomAliasId>::try_from(&*r.matrix).map_err(|e| Error::Config(format!("rooms: {e}")))?;
            match mx.resolve_alias(alias).await {
                Ok(id) => Some(id),
                Err(Error::Matrix { status: 404, .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            Some(OwnedRoomId::try_from(r.matrix.as_str()).map_err(|e| Error::Config(format!("rooms: {e}")))?)
        };
        let room = match existing {
            Some(id) => id,
            None => {
                plan.push(verb(&format!(
                    "create room {} ({})",
                    r.matrix,
                    describe(r, r.wants_encryption(&cfg.encryption))
                )));
                if dry_run {
                    for u in expected(cfg) {
                        plan.push(verb(&format!("invite {u} to {}", r.matrix)));
                    }
                    plan.push(verb(&format!("link {} to telegram chat {}", r.matrix, r.telegram)));
                    continue;
                }
                create_room(cfg, mx, &bot, r).await?
            }
        };
        if mx.membership(&room, &bot, &bot).await.as_deref() != Some("join") {
            plan.push(verb(&format!("join {bot} to {}", r.matrix)));
            if !dry_run {
                mx.join((&*room).into(), &bot).await?;
            }
        }
        for u in expected(cfg) {
            let m = mx.membership(&room, &u, &bot).await;
            if !matches!(m.as_deref(), Some("join" | "invite")) {
                plan.push(verb(&format!("invite {u} to {}", r.matrix)));
                if !dry_run {
                    mx.invite(&room, &bot, &u).await?;
                }
            }
        }
        if store.portal_room(r.place()).await?.as_ref() != Some(&room) {
            plan.push(verb(&format!("link {} to telegram chat {}", r.matrix, r.telegram)));
            if !dry_run {
                let alias = <&RoomAliasId>::try_from(r.matrix.as_str()).ok();
                store.upsert_portal(r.place(), &room, alias).await?;
            }
        }
    }
    Ok(plan)
}

fn describe(r: &RoomMapping, encrypted: bool) -> String {
    format!(
        "name {:?}, topic {:?}, {}",
        r.name.as_deref().unwrap_or(""),
        r.topic.as_deref().unwrap_or(""),
        if encrypted { "encrypted" } else { "not encrypted" }
    )
}

async fn create_room(cfg: &Config, mx: &MatrixClient, bot: &OwnedUserId, r: &RoomMapping) -> Result<OwnedRoomId> {
    // From room version 12 the creator (the bot) holds power by the rules and must not be
    // listed; before it, overriding `users` would drop the creator's 100, so it is listed.
    let version: u32 = mx
        .default_room_version(bot)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut users = serde_json::Map::new();
    if version < 12 {
        users.insert(bot.to_string(), json!(100));
    }
    if let Some(op) = &cfg.fleet.operator {
        users.insert(op.to_string(), json!(100));
    }
    let mut body = json!({
        "preset": "private_chat",
        "invite": expected(cfg),
        "power_level_content_override": {"users": users},
    });
    if let Some(local) = r.matrix.as_str().strip_prefix('#').and_then(|a| a.split(':').next()) {
        body["room_alias_name"] = json!(local);
    }
    if let Some(n) = &r.name {
        body["name"] = json!(n);
    }
    if let Some(t) = &r.topic {
        body["topic"] = json!(t);
    }
    if r.wants_encryption(&cfg.encryption) {
        body["initial_state"] =
            json!([{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]);
    }
    match mx.create_room(bot, &body).await {
        Err(Error::Matrix { errcode, .. }) if errcode == "M_EXCLUSIVE" => Err(Error::Config(format!(
            "the homeserver will not let the bridge create {}: add the alias to the registration's alias \
             namespace (`tgmx generate-registration --force` includes configured aliases) and reload the homeserver",
            r.matrix
        ))),
        other => other,
    }
}

/// Post "Acknowledge, fleet." in `room` and, while Telegram is mirrored, in its Telegram chat
/// too, and wait for each agent's first message after it. An agent answers on Matrix as itself,
/// or on Telegram: its post reaches the room through the bridge as the agent (an `identities`
/// entry maps its Telegram account to its Matrix id) or as its puppet. The outcome is kept in
/// the database (`tgmx status` judges the last one). Returns (agent, seconds to answer or None).
pub async fn rollcall(
    cfg: &Config,
    mx: &MatrixClient,
    reader: &crate::matrix::device::TimelineReader,
    room: &str,
    timeout: Duration,
) -> Result<Vec<(OwnedUserId, Option<f64>)>> {
    let bot = cfg.bot_user_id();
    let store = reader.store();
    let room_id = if room.starts_with('#') {
        mx.resolve_alias(<&RoomAliasId>::try_from(room).map_err(|e| Error::Config(e.to_string()))?)
            .await?
    } else {
        OwnedRoomId::try_from(room).map_err(|e| Error::Config(e.to_string()))?
    };
    let at = crate::storage::now_ms();
    let start = Instant::now();
    let txn = crate::matrix::txn::rollcall(at);
    let sent = mx
        .send(
            &room_id,
            &bot,
            "m.room.message",
            &txn,
            &json!({"msgtype": "m.text", "body": ROLLCALL}),
        )
        .await?;
    // The bot's own Matrix post is never relayed: Telegram gets the question from the bot itself.
    let tg_chat_id = ask_on_telegram(cfg, store, room, &room_id).await;
    // Each agent, its puppet (if its Telegram account is known), and when it answered.
    let puppet_of = |agent: &OwnedUserId| {
        cfg.identities.iter().find(|i| i.matrix == *agent).and_then(|i| {
            OwnedUserId::try_from(format!(
                "@{}{}:{}",
                cfg.appservice.puppet_prefix, i.telegram, cfg.homeserver.server_name
            ))
            .ok()
        })
    };
    let mut answers: Vec<Called> = cfg
        .fleet
        .agents
        .iter()
        .map(|a| Called {
            agent: a.clone(),
            puppet: puppet_of(a),
            answer: None,
        })
        .collect();
    while start.elapsed() < timeout && answers.iter().any(|c| c.answer.is_none()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // As the bot's device: Conduit answers an appservice `/messages` with a 500.
        let (events, _) = reader.messages_back(&room_id, None, 200).await?;
        // Newest first: everything before our message in this list came after it. Oldest first
        // from here, so that an agent's first answer is the one counted.
        let mut after: Vec<&serde_json::Value> = events.iter().take_while(|e| e["event_id"] != sent.as_str()).collect();
        after.reverse();
        for ev in after {
            // In an encrypted room the sender is still plain.
            if ev["type"] != "m.room.message" && ev["type"] != "m.room.encrypted" {
                continue;
            }
            for Called { agent, puppet, answer } in answers.iter_mut() {
                let as_puppet = puppet.as_ref().is_some_and(|p| ev["sender"] == p.as_str());
                if answer.is_some() || !(ev["sender"] == agent.as_str() || as_puppet) {
                    continue;
                }
                let on_telegram = as_puppet
                    || ev["content"].get(crate::bridge::SOURCE_KEY).is_some()
                    || came_from_telegram(store, ev).await;
                *answer = Some((start.elapsed().as_secs_f64(), on_telegram));
            }
        }
    }
    let record = crate::storage::audit::Rollcall {
        at,
        room: room.to_owned(),
        tg_chat_id,
        agents: answers.len() as i64,
        timeout_secs: timeout.as_secs() as i64,
        answers: answers
            .iter()
            .filter_map(|c| {
                c.answer
                    .map(|(secs, on_telegram)| crate::storage::audit::RollcallAnswer {
                        agent: c.agent.clone(),
                        on_telegram,
                        after_ms: (secs * 1000.0) as i64,
                    })
            })
            .collect(),
    };
    store.record_rollcall(&record).await?;
    Ok(answers
        .into_iter()
        .map(|c| (c.agent, c.answer.map(|(secs, _)| secs)))
        .collect())
}

/// An agent called by a rollcall.
struct Called {
    agent: OwnedUserId,
    /// Its puppet, when an `identities` entry gives its Telegram account.
    puppet: Option<OwnedUserId>,
    /// Seconds to its answer, and whether it answered on Telegram.
    answer: Option<(f64, bool)>,
}

/// The rollcall's question, on both sides.
pub const ROLLCALL: &str = "Acknowledge, fleet.";

/// Post the question in the Telegram chat bridged to `room`, unless Telegram is in standby (or
/// off) or the room is not bridged. Returns the chat when it was asked there.
async fn ask_on_telegram(cfg: &Config, store: &Store, room: &str, room_id: &OwnedRoomId) -> Option<i64> {
    // The mode in force (a standby after the fallback window is not in the config).
    let mode = match store.current_mode().await.ok().flatten() {
        Some(m) => crate::bridge::cutover::Mode::parse(&m).unwrap_or(crate::bridge::cutover::Mode::of(cfg)),
        None => crate::bridge::cutover::Mode::of(cfg),
    };
    if !mode.telegram_live() || !cfg.gateway.telegram.enabled {
        return None;
    }
    let mut place = None;
    for r in &cfg.rooms {
        if r.matrix.as_str() == room || store.portal_room(r.place()).await.ok().flatten().as_ref() == Some(room_id) {
            place = Some(r.place());
            break;
        }
    }
    let place = place?;
    let token = cfg.telegram_token().ok()?.to_owned();
    let api = url::Url::parse(&cfg.gateway.telegram.api_url).ok()?;
    let tg = crate::telegram::TelegramSender::new(
        token,
        api,
        cfg.gateway.telegram.poll_timeout,
        0,
        cfg.gateway.telegram.per_bot_per_second,
    );
    let turn = tg.turn_at(place).await;
    match tg.send_plain(turn, ROLLCALL.to_owned()).await {
        Ok(_) => Some(place.chat),
        Err(e) => {
            tracing::warn!(chat = place.chat, "rollcall not asked on Telegram: {e}");
            None
        }
    }
}

/// Whether a Matrix event is the bridged copy of a Telegram message (its link says so).
async fn came_from_telegram(store: &Store, ev: &serde_json::Value) -> bool {
    let Some(id) = ev["event_id"].as_str().and_then(|e| <&ruma::EventId>::try_from(e).ok()) else {
        return false;
    };
    matches!(
        store.link_by_event(id).await,
        Ok(Some(link)) if link.direction == crate::storage::Direction::TgToMx
    )
}
