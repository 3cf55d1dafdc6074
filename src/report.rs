//! What `tgmx status` and `tgmx audit` report, read from the database (and, for what the
//! homeserver holds back, from the homeserver). The binary only prints a [`Report`] and turns
//! its verdict into the exit status.
//!
//! Neither report gives an all-clear it cannot back: a database that refuses writes, a stuck
//! queue, events the homeserver holds, anything recorded as not delivered, carried in part or
//! maybe shown twice, and a database with no traffic at all each block "nothing lost" and
//! "ready for cutover".

use crate::config::{Config, Registration};
use crate::error::Result;
use crate::storage::{Direction, Shortfall, Store, now_ms};

/// A queue whose oldest item waited this long is stuck.
const STUCK_AFTER_MS: i64 = 300_000;

/// A report: the lines to print, then the verdict.
#[derive(Debug, Default)]
pub struct Report {
    /// What was found, one line each, in order.
    pub lines: Vec<String>,
    /// What stands against the all-clear; empty when there is nothing.
    pub problems: Vec<String>,
    /// `tgmx status`: the readiness gates of the cutover plan, each with its evidence (also in
    /// `lines`; a failing one also in `problems`).
    pub gates: Vec<Gate>,
}

/// One readiness gate of `tgmx status`: passed or not, and what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// What the gate asks (`every room linked`, ...).
    pub name: &'static str,
    pub ok: bool,
    /// What was found: the evidence for a pass, what is missing (and what to do) for a fail.
    pub evidence: String,
}

impl Report {
    fn line(&mut self, l: impl Into<String>) {
        self.lines.push(l.into());
    }

    /// Whether the all-clear holds.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as `tgmx status` or `tgmx audit` prints it (and the management room
    /// answers): its lines, then the verdict line.
    pub fn text(&self, verdict: Verdict) -> String {
        let last = match (verdict, self.ok()) {
            (Verdict::Ready, true) => "ready for cutover: yes".to_owned(),
            (Verdict::Ready, false) => format!("ready for cutover: no ({})", self.problems.join("; ")),
            (Verdict::NothingLost, true) => "verdict: nothing lost".to_owned(),
            (Verdict::NothingLost, false) => format!("verdict: {}", self.problems.join(", ")),
        };
        let mut out = self.lines.clone();
        out.push(last);
        out.join("\n")
    }
}

/// Which verdict ends a report's [`Report::text`]: readiness for cutover (`tgmx status`) or
/// "nothing lost" (`tgmx audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    NothingLost,
}

/// `tgmx audit`: what was bridged since `since_ms`, everything not carried in full, what waits
/// and what the homeserver holds. The verdict is "nothing lost" only when no problem was found
/// and traffic was recorded at all.
pub async fn audit(cfg: &Config, store: &Store, since_ms: i64, daemon_running: bool) -> Result<Report> {
    let mut r = Report::default();
    r.line(format!("audit since {}", fmt_ms(since_ms)));
    for d in [Direction::TgToMx, Direction::MxToTg] {
        let mut lat = store.latencies_since(d, since_ms).await?;
        lat.sort_unstable();
        let q = |p| crate::cli::quantile(&lat, p).map_or("-".to_owned(), |v| format!("{v} ms"));
        r.line(format!(
            "{}: {} delivered, latency p50 {} p99 {}",
            d.as_str(),
            lat.len(),
            q(0.5),
            q(0.99)
        ));
    }
    let (mut lost, mut repeated, mut in_part) = (0, 0, 0);
    for f in store.failures_since(since_ms).await? {
        let kind = Shortfall::of(&f.source_ref);
        let what = f.source_ref.strip_prefix("possible-repeat:").unwrap_or(&f.source_ref);
        r.line(format!(
            "{} {} {} {what}: {}",
            kind.label(),
            fmt_ms(f.at),
            f.direction.as_str(),
            f.reason
        ));
        match kind {
            Shortfall::NotDelivered => lost += 1,
            Shortfall::InPart => in_part += 1,
            Shortfall::MayRepeat => repeated += 1,
            Shortfall::Ignored => {}
        }
    }
    let writes = store.probe_write().await;
    if let Err(e) = &writes {
        r.line(format!(
            "DATABASE REFUSES WRITES: {e} (the daemon takes in nothing until it works again)"
        ));
    }
    let pending = store.pending().await?;
    let stuck = stuck(cfg, store).await?;
    let paused = matrix_paused(cfg, &pending);
    if let Some(p) = &paused {
        r.line(format!("HELD {p}"));
    }
    let standby = store.current_mode().await?.as_deref() == Some("standby");
    r.line(format!(
        "waiting: {} from telegram, {} from matrix{}",
        pending.tg,
        pending.mx,
        if stuck {
            " (stuck for over 5 minutes)"
        } else if standby {
            " (standby: held, bridged in order on rollback)"
        } else {
            ""
        }
    ));
    let held = held_by_homeserver(cfg, store, daemon_running, &mut r).await;
    if lost > 0 {
        r.problems.push(format!("{lost} message(s) not delivered"));
    }
    if in_part > 0 {
        r.problems.push(format!("{in_part} message(s) carried in part"));
    }
    if repeated > 0 {
        r.problems.push(format!("{repeated} message(s) may show twice"));
    }
    if writes.is_err() {
        r.problems.push("database refuses writes".to_owned());
    }
    if stuck {
        r.problems.push("queue stuck".to_owned());
    }
    if let Some(p) = paused {
        r.problems.push(p);
    }
    match held {
        Ok(0) => {}
        Ok(n) => r.problems.push(format!("{n} held by the homeserver")),
        Err(e) => r.problems.push(format!("cannot tell what the homeserver holds ({e})")),
    }
    if r.problems.is_empty() && !store.has_traffic().await? {
        r.problems
            .push("no traffic recorded yet: nothing to audit (is this the daemon's database?)".to_owned());
    }
    Ok(r)
}

/// The instances on this database (an active/standby pair on PostgreSQL, see `app`): which one
/// is active since when, when each was last seen, and the failovers of the last 7 days.
async fn instance_lines(r: &mut Report, store: &Store) -> Result<()> {
    if store.backend() != crate::storage::Backend::Postgres {
        return Ok(());
    }
    let now = now_ms();
    let stale = 3 * Store::HEARTBEAT_MS;
    let ago = |ms: i64| format!("{} s ago", (now - ms).max(0) / 1000);
    for i in store.instances().await? {
        let seen = if now - i.seen_at > stale {
            format!("NOT SEEN since {} ({})", fmt_ms(i.seen_at), ago(i.seen_at))
        } else {
            format!("seen {}", ago(i.seen_at))
        };
        match i.role.as_str() {
            "active" => r.line(format!(
                "instance {}: active since {} (pid {}), {seen}",
                i.name,
                fmt_ms(i.since),
                i.pid
            )),
            _ => r.line(format!("instance {}: standby, {seen}", i.name)),
        }
    }
    let failovers: Vec<_> = store
        .leases_since(now - 7 * 86_400_000)
        .await?
        .into_iter()
        .filter(|l| l.previous.as_ref().is_some_and(|p| *p != l.instance))
        .collect();
    if !failovers.is_empty() {
        r.line("failovers (7 days):");
        for l in failovers {
            r.line(format!(
                "  {}  {} -> {}",
                fmt_ms(l.at),
                l.previous.as_deref().unwrap_or("-"),
                l.instance
            ));
        }
    }
    Ok(())
}

/// `tgmx status`: the mode, switch history, each room's traffic in 24 h, latencies, what was
/// not carried in full, and whether the bridge is ready for cutover (no problem found).
pub async fn status(cfg: &Config, store: &Store, daemon_running: bool) -> Result<Report> {
    let mut r = Report::default();
    let configured = crate::bridge::cutover::Mode::of(cfg).as_str();
    let current = store.current_mode().await?.unwrap_or_else(|| "never started".into());
    let day_ago = now_ms() - 86_400_000;
    r.line(format!("mode: {current} (config says {configured})"));
    // A write the daemon would need too: a full disk or a read-only file shows here.
    let mut ruin = Vec::new();
    match store.probe_write().await {
        Ok(()) => r.line("database writes: ok"),
        Err(e) => {
            ruin.push("database writes fail".to_owned());
            r.line(format!("database writes: FAIL ({e})"));
            r.problems
                .push("the database refuses writes: the daemon takes in nothing meanwhile".into());
        }
    }
    instance_lines(&mut r, store).await?;
    r.line("switch history:");
    for s in store.switches().await? {
        r.line(format!(
            "  {}  {} -> {}  ({})",
            fmt_ms(s.at),
            s.from_mode.as_deref().unwrap_or("-"),
            s.to_mode,
            s.reason
        ));
    }
    r.line(format!(
        "announcements pending: {}",
        store.pending_announcements().await?.len()
    ));
    for line in crate::bridge::standby::status_lines(cfg, store).await? {
        r.line(line);
    }
    r.line("rooms (last 24 h):");
    let mut unlinked = Vec::new();
    for room in &cfg.rooms {
        let linked = store.portal_room(room.place()).await?;
        let t2m = store
            .count_chat_since(room.telegram, Direction::TgToMx, day_ago)
            .await?;
        let m2t = store
            .count_chat_since(room.telegram, Direction::MxToTg, day_ago)
            .await?;
        r.line(format!(
            "  {} <-> {}: {}, telegram->matrix {t2m}, matrix->telegram {m2t}",
            room.matrix,
            room.telegram,
            linked
                .as_ref()
                .map_or("NOT LINKED".to_owned(), |id| format!("linked ({id})"))
        ));
        if linked.is_none() {
            r.problems.push(format!("{} not linked", room.matrix));
            unlinked.push(room.matrix.to_string());
        }
    }
    r.line("members (Telegram lists only its administrators and a count):");
    for l in crate::bridge::room_details::member_report(cfg, store).await {
        r.line(l);
    }
    for d in [Direction::TgToMx, Direction::MxToTg] {
        let mut lat = store.latencies_since(d, day_ago).await?;
        lat.sort_unstable();
        let q = |p| crate::cli::quantile(&lat, p).map_or("-".to_owned(), |v| format!("{v} ms"));
        r.line(format!("latency {}: p50 {} p99 {}", d.as_str(), q(0.5), q(0.99)));
    }
    let (mut failures, mut in_part, mut repeats) = (0, 0, 0);
    for f in store.failures_since(day_ago).await? {
        match Shortfall::of(&f.source_ref) {
            Shortfall::NotDelivered => failures += 1,
            Shortfall::InPart => in_part += 1,
            Shortfall::MayRepeat => repeats += 1,
            Shortfall::Ignored => {}
        }
    }
    let pending = store.pending().await?;
    r.line(format!(
        "undelivered (24 h): {failures}; carried in part: {in_part}; may show twice: {repeats}; \
         waiting: {} from telegram, {} from matrix",
        pending.tg, pending.mx
    ));
    if in_part > 0 {
        r.problems
            .push(format!("{in_part} carried in part in 24 h (see `tgmx audit`)"));
        ruin.push(format!("{in_part} carried in part in 24 h"));
    }
    if failures > 0 {
        r.problems
            .push(format!("{failures} undelivered in 24 h (see `tgmx audit`)"));
        ruin.push(format!("{failures} undelivered in 24 h"));
    }
    if repeats > 0 {
        r.problems
            .push(format!("{repeats} may show twice on Telegram (see `tgmx audit`)"));
        ruin.push(format!("{repeats} may show twice in 24 h"));
    }
    if let Some(paused) = matrix_paused(cfg, &pending) {
        r.line(&paused);
        r.problems.push(paused);
    }
    if stuck(cfg, store).await? {
        r.problems.push("a queue is stuck".into());
        ruin.push("a queue is stuck".into());
    }
    match held_by_homeserver(cfg, store, daemon_running, &mut r).await {
        Ok(0) => r.line("held by the homeserver: 0"),
        Ok(n) => {
            r.problems
                .push(format!("{n} held by the homeserver (see `tgmx audit`)"));
            ruin.push(format!("{n} held by the homeserver"));
        }
        Err(e) => {
            r.problems.push(format!("cannot tell what the homeserver holds ({e})"));
            ruin.push("cannot tell what the homeserver holds".into());
        }
    }
    if !cfg.fleet.agents.is_empty() {
        r.line("agents, last message bridged:");
        for a in &cfg.fleet.agents {
            let last = store.last_message_by(a).await?;
            r.line(format!("  {a}: {}", last.map_or("never".to_owned(), fmt_ms)));
        }
    }
    gates(cfg, store, &mut r, &unlinked, &ruin).await?;
    if !store.has_traffic().await? {
        r.problems.push("no traffic bridged yet: nothing to judge".into());
    }
    Ok(r)
}

/// How far back the voice-or-file gate looks.
const FILES_WITHIN_MS: i64 = 7 * 86_400_000;

/// How many of the operator's bridged messages the encrypted-room gate looks at, newest first.
const OPERATOR_MESSAGES_LOOKED_AT: i64 = 50;

/// Whether a queue is stuck: its oldest item waited over 5 minutes. Telegram updates held on
/// purpose (`gateway.matrix.enabled: false`) are not stuck; [`matrix_paused`] says so instead.
async fn stuck(cfg: &Config, store: &Store) -> Result<bool> {
    // In standby both inboxes wait on purpose, for the rollback (`bridge::standby`).
    if store.current_mode().await?.as_deref() == Some("standby") {
        return Ok(false);
    }
    let old = now_ms() - STUCK_AFTER_MS;
    let mut queues = vec![Direction::MxToTg];
    if cfg.gateway.matrix.enabled {
        queues.push(Direction::TgToMx);
    }
    for d in queues {
        if store.oldest_waiting(d).await?.is_some_and(|o| o < old) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// With `gateway.matrix.enabled: false` nothing is relayed to Matrix: what waits for it is said,
/// never silent.
fn matrix_paused(cfg: &Config, pending: &crate::storage::Pending) -> Option<String> {
    (!cfg.gateway.matrix.enabled).then(|| {
        format!(
            "telegram->matrix paused (gateway.matrix.enabled: false): {} update(s) from telegram wait in the inbox, \
             bridged in order once it is true again",
            pending.tg
        )
    })
}

/// The readiness gates of the cutover plan (`tgmx status`), a line each with its evidence; a
/// failing one is a problem. `unlinked` and `ruin` are what the status found above: rooms not
/// linked, and everything stuck or failed.
async fn gates(cfg: &Config, store: &Store, r: &mut Report, unlinked: &[String], ruin: &[String]) -> Result<()> {
    let mut gates = Vec::new();
    let total = cfg.rooms.len();
    gates.push(Gate {
        name: "every room linked",
        ok: unlinked.is_empty(),
        evidence: if unlinked.is_empty() {
            format!("{total} of {total} linked")
        } else {
            format!(
                "{} of {total} linked; not linked: {} (start the daemon and invite the bot, or `tgmx bootstrap`)",
                total - unlinked.len(),
                unlinked.join(", ")
            )
        },
    });
    gates.push(Gate {
        name: "nothing stuck or failed",
        ok: ruin.is_empty(),
        evidence: if ruin.is_empty() {
            "nothing undelivered, carried in part or maybe twice in 24 h; no queue stuck; nothing held by the \
             homeserver; database writes ok"
                .to_owned()
        } else {
            format!("{} (see `tgmx audit`)", ruin.join("; "))
        },
    });
    gates.push(rollcall_gate(cfg, store).await?);
    gates.push(operator_gate(cfg, store).await);
    let mut ways = Vec::new();
    let mut both = true;
    for d in [Direction::TgToMx, Direction::MxToTg] {
        match store.last_voice_or_file(d, now_ms() - FILES_WITHIN_MS).await? {
            Some(f) => ways.push(format!(
                "{}: {} {} (chat {}, room {})",
                way(d),
                f.kind,
                fmt_ms(f.bridged_at),
                f.tg_chat_id,
                f.mx_room_id
            )),
            None => {
                both = false;
                ways.push(format!("{}: none (send a voice message or a file)", way(d)));
            }
        }
    }
    gates.push(Gate {
        name: "a voice message or file crossed each way in 7 days",
        ok: both,
        evidence: ways.join("; "),
    });
    r.line("readiness gates:");
    for g in &gates {
        r.line(format!(
            "  {} {}: {}",
            if g.ok { "ok  " } else { "FAIL" },
            g.name,
            g.evidence
        ));
        if !g.ok && !matches!(g.name, "every room linked" | "nothing stuck or failed") {
            // (Those two are named problem by problem above.)
            r.problems.push(format!("gate failed: {}", g.name));
        }
    }
    r.gates = gates;
    Ok(())
}

/// `telegram->matrix` / `matrix->telegram`.
fn way(d: Direction) -> &'static str {
    match d {
        Direction::TgToMx => "telegram->matrix",
        Direction::MxToTg => "matrix->telegram",
    }
}

/// At least `fleet.min_agents` agents answered the last rollcall, on either side.
async fn rollcall_gate(cfg: &Config, store: &Store) -> Result<Gate> {
    const NAME: &str = "the last rollcall answered by fleet.min_agents agents";
    let need = cfg.fleet.min_agents;
    if need == 0 {
        return Ok(Gate {
            name: NAME,
            ok: true,
            evidence: "none needed (fleet.min_agents is 0)".to_owned(),
        });
    }
    let Some(last) = store.last_rollcall().await? else {
        return Ok(Gate {
            name: NAME,
            ok: false,
            evidence: format!("no rollcall yet (need {need}): run `tgmx rollcall`"),
        });
    };
    // Agents still listed; one removed from the fleet since does not count.
    let answered: Vec<_> = last
        .answers
        .iter()
        .filter(|a| cfg.fleet.agents.contains(&a.agent))
        .collect();
    let who: Vec<String> = answered
        .iter()
        .map(|a| {
            format!(
                "{} on {} in {:.1} s",
                a.agent,
                if a.on_telegram { "telegram" } else { "matrix" },
                a.after_ms as f64 / 1000.0
            )
        })
        .collect();
    let asked = match last.tg_chat_id {
        Some(chat) => format!("in {} and telegram chat {chat}", last.room),
        None => format!("in {} (matrix only)", last.room),
    };
    Ok(Gate {
        name: NAME,
        ok: answered.len() >= need,
        evidence: format!(
            "{} of {} answered the rollcall of {} {asked}{}; need {need}",
            answered.len(),
            last.agents,
            fmt_ms(last.at),
            if who.is_empty() {
                String::new()
            } else {
                format!(" ({})", who.join(", "))
            }
        ),
    })
}

/// The operator sent a message in an encrypted room from Matrix, and it crossed to Telegram: one
/// of the operator's bridged messages is encrypted on the homeserver (read as the bot's device).
async fn operator_gate(cfg: &Config, store: &Store) -> Gate {
    const NAME: &str = "the operator wrote in an encrypted room from Matrix";
    let fail = |evidence: String| Gate {
        name: NAME,
        ok: false,
        evidence,
    };
    let Some(op) = &cfg.fleet.operator else {
        return fail("fleet.operator is not set: the gate needs to know who the operator is".to_owned());
    };
    match operator_encrypted_message(cfg, store, op).await {
        Ok(Some((room, event, at))) => Gate {
            name: NAME,
            ok: true,
            evidence: format!("{op} in {room} at {} ({event}), crossed to telegram", fmt_ms(at)),
        },
        Ok(None) => fail(format!(
            "no message of {op} from an encrypted room has crossed to telegram yet: send one in an encrypted \
             bridged room"
        )),
        Err(e) => fail(format!("cannot tell ({e})")),
    }
}

/// The newest of the operator's messages that crossed to Telegram from an encrypted room:
/// (room, event, when bridged).
async fn operator_encrypted_message(
    cfg: &Config,
    store: &Store,
    op: &ruma::UserId,
) -> Result<Option<(String, String, i64)>> {
    let crossed = store.crossed_to_telegram_by(op, OPERATOR_MESSAGES_LOOKED_AT).await?;
    if crossed.is_empty() {
        return Ok(None);
    }
    let reg = Registration::load(&cfg.appservice.registration)?;
    let bot = cfg.bot_user_id();
    let mx = crate::matrix::client::MatrixClient::new(&cfg.homeserver.url, &reg.as_token).acting_as(bot.clone());
    let reader = crate::matrix::device::TimelineReader::new(mx.clone(), store.clone(), bot.clone());
    let mut plain_rooms = std::collections::HashSet::new();
    for (room, event, at) in crossed {
        let (Ok(room_id), Ok(event_id)) = (
            ruma::OwnedRoomId::try_from(room.as_str()),
            ruma::OwnedEventId::try_from(event.as_str()),
        ) else {
            continue;
        };
        // A room that is not encrypted now never was (encryption cannot be turned off).
        if plain_rooms.contains(&room) {
            continue;
        }
        if !mx.room_encrypted(&room_id, &bot).await? {
            plain_rooms.insert(room);
            continue;
        }
        if reader.event(&room_id, &event_id).await?["type"] == "m.room.encrypted" {
            return Ok(Some((room, event, at)));
        }
    }
    Ok(None)
}

/// Matrix events the homeserver has not delivered to the bridge, per portal (a line each) and in
/// all. While the daemon runs, events younger than a few seconds are in flight and not counted.
async fn held_by_homeserver(cfg: &Config, store: &Store, daemon_running: bool, r: &mut Report) -> Result<usize> {
    let reg = Registration::load(&cfg.appservice.registration)?;
    let mx = crate::matrix::client::MatrixClient::new(&cfg.homeserver.url, &reg.as_token).acting_as(cfg.bot_user_id());
    let bridge = crate::bridge::Bridge::new(
        cfg.clone(),
        store.clone(),
        mx,
        crate::telegram::TelegramSender::offline(),
    );
    bridge.load_portals().await?;
    let min_age = if daemon_running {
        crate::bridge::catch_up::HELD_AFTER_MS
    } else {
        0
    };
    let mut total = 0;
    for (room, n, oldest) in bridge.held_by_homeserver(min_age).await? {
        if n > 0 {
            r.line(format!(
                "HELD BY THE HOMESERVER {room}: {n} event(s) not delivered to tgmx, oldest sent {}",
                oldest.map_or("-".to_owned(), fmt_ms)
            ));
        }
        total += n;
    }
    Ok(total)
}

/// A unix time in ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn fmt_ms(ms: i64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(super::fmt_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::fmt_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::fmt_ms(1_796_137_199_000), "2026-12-01 14:59:59 UTC");
    }
}
