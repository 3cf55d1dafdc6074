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
}

impl Report {
    fn line(&mut self, l: impl Into<String>) {
        self.lines.push(l.into());
    }

    /// Whether the all-clear holds.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
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
        }
    }
    let writes = store.probe_write().await;
    if let Err(e) = &writes {
        r.line(format!(
            "DATABASE REFUSES WRITES: {e} (the daemon takes in nothing until it works again)"
        ));
    }
    let pending = store.pending().await?;
    let stuck = pending.oldest.is_some_and(|o| now_ms() - o > STUCK_AFTER_MS);
    r.line(format!(
        "waiting: {} from telegram, {} from matrix{}",
        pending.tg,
        pending.mx,
        if stuck { " (stuck for over 5 minutes)" } else { "" }
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

/// `tgmx status`: the mode, switch history, each room's traffic in 24 h, latencies, what was
/// not carried in full, and whether the bridge is ready for cutover (no problem found).
pub async fn status(cfg: &Config, store: &Store, daemon_running: bool) -> Result<Report> {
    let mut r = Report::default();
    let configured = crate::bridge::cutover::Mode::of(cfg).as_str();
    let current = store.current_mode().await?.unwrap_or_else(|| "never started".into());
    let day_ago = now_ms() - 86_400_000;
    r.line(format!("mode: {current} (config says {configured})"));
    // A write the daemon would need too: a full disk or a read-only file shows here.
    match store.probe_write().await {
        Ok(()) => r.line("database writes: ok"),
        Err(e) => {
            r.line(format!("database writes: FAIL ({e})"));
            r.problems
                .push("the database refuses writes: the daemon takes in nothing meanwhile".into());
        }
    }
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
    r.line("rooms (last 24 h):");
    for room in &cfg.rooms {
        let linked = store.portal_room(room.telegram).await?;
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
    }
    if failures > 0 {
        r.problems
            .push(format!("{failures} undelivered in 24 h (see `tgmx audit`)"));
    }
    if repeats > 0 {
        r.problems
            .push(format!("{repeats} may show twice on Telegram (see `tgmx audit`)"));
    }
    if pending.oldest.is_some_and(|o| now_ms() - o > STUCK_AFTER_MS) {
        r.problems.push("a queue is stuck".into());
    }
    match held_by_homeserver(cfg, store, daemon_running, &mut r).await {
        Ok(0) => r.line("held by the homeserver: 0"),
        Ok(n) => r
            .problems
            .push(format!("{n} held by the homeserver (see `tgmx audit`)")),
        Err(e) => r.problems.push(format!("cannot tell what the homeserver holds ({e})")),
    }
    if !cfg.fleet.agents.is_empty() {
        r.line("agents, last message bridged:");
        for a in &cfg.fleet.agents {
            let last = store.last_message_by(a).await?;
            r.line(format!("  {a}: {}", last.map_or("never".to_owned(), fmt_ms)));
        }
    }
    if !store.has_traffic().await? {
        r.problems.push("no traffic bridged yet: nothing to judge".into());
    }
    Ok(r)
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
