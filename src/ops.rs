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
        if store.portal_room(r.telegram).await?.as_ref() != Some(&room) {
            plan.push(verb(&format!("link {} to telegram chat {}", r.matrix, r.telegram)));
            if !dry_run {
                let alias = <&RoomAliasId>::try_from(r.matrix.as_str()).ok();
                store.upsert_portal(r.telegram, &room, alias).await?;
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

/// Post "Acknowledge, fleet." and wait for each agent's first message after it.
/// Returns (agent, seconds to answer or None).
pub async fn rollcall(
    cfg: &Config,
    mx: &MatrixClient,
    reader: &crate::matrix::device::TimelineReader,
    room: &str,
    timeout: Duration,
) -> Result<Vec<(OwnedUserId, Option<f64>)>> {
    let bot = cfg.bot_user_id();
    let room_id = if room.starts_with('#') {
        mx.resolve_alias(<&RoomAliasId>::try_from(room).map_err(|e| Error::Config(e.to_string()))?)
            .await?
    } else {
        OwnedRoomId::try_from(room).map_err(|e| Error::Config(e.to_string()))?
    };
    let start = Instant::now();
    let txn = crate::matrix::txn::rollcall(crate::storage::now_ms());
    let sent = mx
        .send(
            &room_id,
            &bot,
            "m.room.message",
            &txn,
            &json!({"msgtype": "m.text", "body": "Acknowledge, fleet."}),
        )
        .await?;
    let mut answers: Vec<(OwnedUserId, Option<f64>)> = cfg.fleet.agents.iter().map(|a| (a.clone(), None)).collect();
    while start.elapsed() < timeout && answers.iter().any(|(_, t)| t.is_none()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // As the bot's device: Conduit answers an appservice `/messages` with a 500.
        let (events, _) = reader.messages_back(&room_id, None, 200).await?;
        // Newest first: everything before our message in this list came after it.
        for ev in events.iter().take_while(|e| e["event_id"] != sent.as_str()) {
            if ev["type"] != "m.room.message" {
                continue;
            }
            for (agent, t) in answers.iter_mut() {
                if t.is_none() && ev["sender"] == agent.as_str() {
                    *t = Some(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    Ok(answers)
}
