//! Standby without blind spots (issue 18, points 1 to 3): a standby longer than Telegram's 24-hour
//! retention loses nothing (the bot keeps reading into the durable inbox and relays nothing);
//! a rollback bridges both backlogs in order, with their original times, or what Matrix said as
//! one digest above `rollback_digest_over`; the fallback window ends in standby by itself.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{TestApp, body, eventually};

both!(
    a_standby_longer_than_telegrams_retention_loses_nothing_and_rollback_bridges_both_sides_in_order,
    a_long_matrix_backlog_reaches_telegram_as_one_digest_on_rollback,
    the_fallback_window_ends_in_standby_by_itself_and_stays_so_across_a_restart,
    with_telegram_disabled_check_and_the_log_tell_how_long_telegram_keeps_unread_updates,
);

const T: Duration = Duration::from_secs(60);

/// `tgmx primary matrix --standby`, and wait until Telegram has the standby notice.
async fn into_standby(app: &TestApp) -> crate::fake_telegram::SentMessage {
    let (ok, out) = app.cli(&["primary", "matrix", "--standby"]).await;
    assert!(ok, "{out}");
    let notice = app
        .wait_sent_containing("Fallback mode only. Active surface is Matrix.")
        .await;
    app.bot_notices("standby", 1).await;
    notice
}

/// How many Matrix events `tgmx status` says wait for the rollback.
fn matrix_waiting(status: &str) -> Option<usize> {
    let line = status.lines().find(|l| l.starts_with("waiting for the rollback:"))?;
    let before = line.split(" Matrix events").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The position of the event whose body is `text` in the room's timeline (`None`: not there).
fn position(timeline: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    timeline.iter().position(pred)
}

async fn a_standby_longer_than_telegrams_retention_loses_nothing_and_rollback_bridges_both_sides_in_order() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let standby_notice = into_standby(&app).await;

    // Said on both sides during the standby.
    let birch = app.tg.add_user(2002, "Birch", None, None);
    for i in 0..5 {
        app.tg.inject_text(app.chat, &birch, &format!("backlog {i}"));
    }
    for i in 0..3 {
        app.ezra.send_text(&app.room, &format!("while away {i}")).await;
    }
    // The bot reads Telegram in standby: the updates are confirmed (so safe in its inbox)...
    app.tg
        .wait_until("the bot to confirm the standby's updates", T, |tg| {
            tg.pending_updates() == 0
        })
        .await;
    // ...so 30 hours of Telegram's clock, past its 24-hour retention, lose nothing.
    app.tg.advance_clock(Duration::from_secs(30 * 3600));
    assert_eq!(app.tg.expired_updates(), 0, "updates left unread on Telegram expired");
    // Status counts what waits for the rollback.
    eventually("status to count what waits in standby", T, async || {
        let (_, status) = app.cli(&["status"]).await;
        // The room's member events from before the standby wait too.
        match matrix_waiting(&status) {
            Some(n) if n >= 3 && status.contains("waiting for the rollback: 5 Telegram updates") => Ok(()),
            _ => Err(status),
        }
    })
    .await;

    let (_, audit) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(
        audit.contains("(standby: held, bridged in order on rollback)"),
        "{audit}"
    );

    // Rollback: Telegram's backlog reaches Matrix in order, with the time it was sent; Matrix's
    // reaches Telegram in order, with its time, after the rollback notice.
    let (ok, out) = app.cli(&["primary", "telegram"]).await;
    assert!(ok, "{out}");
    let rollback = app.wait_sent_containing("PRIMARY SURFACE CHANGE (rollback)").await;
    let msgs = app.wait_from(&app.puppet(2002), 5).await;
    for (i, m) in msgs.iter().enumerate() {
        let b = body(m);
        assert!(
            b.starts_with("[sent ") && b.contains(" UTC] ") && b.ends_with(&format!("backlog {i}")),
            "{b}"
        );
    }
    let mut relayed = Vec::new();
    for i in 0..3 {
        relayed.push(app.wait_sent_containing(&format!("<b>Ezra</b>: while away {i}")).await);
    }
    let ids: Vec<i32> = relayed.iter().map(|s| s.message_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > rollback.message_id,
        "order {ids:?}, rollback {}",
        rollback.message_id
    );
    assert!(
        relayed[0].text.starts_with("<i>") && relayed[0].text.contains(" UTC</i> "),
        "{}",
        relayed[0].text
    );
    // Nothing crossed during the standby: on Matrix, the backlog comes after the bot's rollback
    // notice; on Telegram, after the standby notice only the rollback notice came first.
    let timeline = app.ezra.messages(&app.room).await;
    let notice_at = position(&timeline, |e| {
        e["sender"] == app.bot.as_str() && body(e).contains("rollback")
    });
    let first_backlog = position(&timeline, |e| body(e).ends_with("backlog 0"));
    assert!(notice_at.is_some() && first_backlog > notice_at, "{timeline:#?}");
    let between: Vec<String> = app
        .tg
        .sent(app.chat)
        .into_iter()
        .filter(|s| s.message_id > standby_notice.message_id && s.message_id < rollback.message_id)
        .map(|s| s.text)
        .collect();
    assert!(between.is_empty(), "posted on Telegram during the standby: {between:?}");
    let (ok, audit) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(ok, "{audit}");
}

async fn a_long_matrix_backlog_reaches_telegram_as_one_digest_on_rollback() {
    let mut app = TestApp::prepare().await;
    app.write_config("  rollback_digest_over: 2");
    app.start().await;
    app.wait_ready().await;
    into_standby(&app).await;
    for i in 0..4 {
        app.ezra.send_text(&app.room, &format!("while away {i}")).await;
    }
    eventually("status to count the matrix backlog", T, async || {
        let (_, status) = app.cli(&["status"]).await;
        if matrix_waiting(&status).is_some_and(|n| n >= 4) {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;

    let (ok, out) = app.cli(&["primary", "telegram"]).await;
    assert!(ok, "{out}");
    let rollback = app.wait_sent_containing("PRIMARY SURFACE CHANGE (rollback)").await;
    let digest = app
        .wait_sent_containing("While Telegram was in standby, 4 messages were posted on Matrix")
        .await;
    assert!(digest.message_id > rollback.message_id);
    for i in 0..4 {
        assert!(
            digest.text.contains(&format!("<b>Ezra</b>: while away {i}")),
            "{}",
            digest.text
        );
    }
    assert!(
        digest.text.contains(&format!("https://matrix.to/#/{}", app.room)),
        "{}",
        digest.text
    );
    // After the digest, Matrix -> Telegram goes on as usual; no message of the backlog was
    // posted on its own.
    let sentinel = app.sentinel_from_matrix().await;
    assert!(sentinel.message_id > digest.message_id);
    let alone: Vec<String> = app
        .tg
        .sent(app.chat)
        .into_iter()
        .filter(|s| s.text.starts_with("<b>Ezra</b>: while away") || s.text.contains("</i> <b>Ezra</b>: while away"))
        .map(|s| s.text)
        .collect();
    assert!(alone.is_empty(), "{alone:?}");
}

async fn the_fallback_window_ends_in_standby_by_itself_and_stays_so_across_a_restart() {
    let mut app = TestApp::prepare().await;
    // 18 seconds of fallback.
    app.write_config("  fallback_hours: 0.005");
    app.start().await;
    app.wait_ready().await;
    app.edit_config(|c| {
        c.replace("primary_platform: telegram", "primary_platform: matrix")
            .replace("fallback_platform: matrix", "fallback_platform: telegram")
    });
    app.hup();
    app.wait_sent_containing("PRIMARY SURFACE CHANGE: Matrix is now the command channel")
        .await;
    let (_, status) = app.cli(&["status"]).await;
    assert!(status.contains("mode: cutover"), "{status}");
    assert!(status.contains("telegram goes to standby at"), "{status}");

    // The window ends: standby, announced and pinned, recorded with its reason.
    let notice = app
        .wait_sent_containing("Fallback mode only. Active surface is Matrix.")
        .await;
    assert!(app.tg.pinned(app.chat).contains(&notice.message_id));
    app.bot_notices("standby", 1).await;
    let (_, status) = app.cli(&["status"]).await;
    assert!(
        status.contains("mode: standby") && status.contains("cutover -> standby  (the fallback window ended)"),
        "{status}"
    );
    // A restart (the config still says cutover) keeps the standby: the daemon starts in it,
    // records no switch, owes no announcement.
    app.stop();
    app.start().await;
    app.wait_log(r#"bridge mode mode="standby""#).await;
    let (_, status) = app.cli(&["status"]).await;
    assert_eq!(status.matches("cutover -> standby").count(), 1, "{status}");
    assert!(status.contains("announcements pending: 0"), "{status}");
    assert_eq!(app.sent_containing("Fallback mode only").len(), 1);
    assert_eq!(app.sent_containing("PRIMARY SURFACE CHANGE").len(), 1);
}

async fn with_telegram_disabled_check_and_the_log_tell_how_long_telegram_keeps_unread_updates() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    // The operator wants the bot truly silent: standby with Telegram disabled.
    app.edit_config(|c| {
        c.replace("primary_platform: telegram", "primary_platform: matrix")
            .replace("fallback_platform: matrix", "fallback_platform: telegram")
            .replace("    enabled: true\n", "    enabled: false\n")
    });
    app.hup();
    app.wait_log("its unread updates are kept until").await;
    assert!(app.log().contains("left); set it true"), "{}", app.log());
    let (_, check) = app.cli(&["check"]).await;
    let line = check
        .lines()
        .find(|l| l.contains("telegram is not read (gateway.telegram.enabled: false)"))
        .unwrap_or_else(|| panic!("{check}"));
    assert!(
        line.contains("ok") && line.contains(" h ") && line.contains(" min left"),
        "{line}"
    );
    let (_, status) = app.cli(&["status"]).await;
    assert!(
        status.contains("mode: standby") && status.contains("min left"),
        "{status}"
    );
}
