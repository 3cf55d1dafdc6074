//! A bridged Telegram group becomes a supergroup (a new chat id): the portal follows the new id
//! by itself (recorded, the config file updated), nothing goes to the old id any more, and a
//! Matrix message whose send crossed the upgrade is delivered once, to the supergroup.

use std::time::Duration;

use crate::harness::{TestApp, eventually};

both!(
    an_upgraded_group_stays_bridged_both_ways_under_its_new_id,
    a_matrix_message_sent_across_the_upgrade_is_delivered_once,
    without_its_config_file_the_bridge_follows_and_names_the_line_to_change,
);

/// A bridge whose room is bridged to a basic group (started); (the old group id, the id of the
/// supergroup it will become).
async fn bridged_to_a_basic_group() -> (TestApp, i64, i64) {
    let (mut app, old, new) = with_a_basic_group().await;
    app.start().await;
    (app, old, new)
}

/// [`bridged_to_a_basic_group`], not started yet.
async fn with_a_basic_group() -> (TestApp, i64, i64) {
    let mut app = TestApp::prepare().await;
    let old = -4_000_000 - app.slot as i64;
    let new = -1_002_000_000_000 - app.slot as i64;
    app.tg.add_group(old, "fleet-ops");
    app.chat = old;
    app.write_config("");
    (app, old, new)
}

/// The requests to chat `chat` among the fake's requests after the first `from` (method names).
fn requests_to(app: &TestApp, chat: i64, from: usize) -> Vec<String> {
    app.tg.chats_addressed()[from..]
        .iter()
        .filter(|(_, c)| *c == chat)
        .map(|(m, _)| m.clone())
        .collect()
}

/// Wait until the config file names `new` as the room's chat, and no longer `old`.
async fn config_names(app: &TestApp, old: i64, new: i64) {
    let path = app.config_path();
    eventually(
        "the config file to name the supergroup",
        Duration::from_secs(30),
        async || {
            let text = std::fs::read_to_string(&path).unwrap();
            let ok = text.contains(&format!("telegram: {new}}}")) && !text.contains(&format!("telegram: {old}"));
            if ok { Ok(()) } else { Err(text) }
        },
    )
    .await
}

async fn an_upgraded_group_stays_bridged_both_ways_under_its_new_id() {
    let (mut app, old, new) = bridged_to_a_basic_group().await;
    let pat = app.tg.add_user(77, "Pat", None, None);
    app.sentinel_from_telegram(&pat).await;
    app.sentinel_from_matrix().await;
    let before = app.tg.chats_addressed().len();

    app.tg.upgrade_group(old, new, &pat);
    config_names(&app, old, new).await;
    assert!(
        app.log()
            .contains(&format!("`telegram: {old}` is now `telegram: {new}`")),
        "{}",
        app.log()
    );

    // Telegram -> Matrix: the supergroup's messages reach the same room.
    app.chat = new;
    app.tg.inject_text(new, &pat, "from the supergroup");
    let seen = app
        .ezra
        .wait_messages(&app.room, 1, Duration::from_secs(30), |e| {
            crate::harness::body(e) == "from the supergroup"
        })
        .await;
    assert_eq!(seen[0]["sender"], app.puppet(77).as_str());

    // Matrix -> Telegram: to the supergroup, never to the old group.
    app.ezra.send_text(&app.room, "to the supergroup").await;
    app.sentinel_from_matrix().await;
    assert!(
        app.tg
            .sent(new)
            .iter()
            .any(|s| s.text == "<b>Ezra</b>: to the supergroup"),
        "{:?}",
        app.tg.sent(new)
    );
    assert_eq!(requests_to(&app, old, before), Vec::<String>::new());

    // After a restart (the upgrade and the portal are stored; the config names the new id).
    app.stop();
    app.start().await;
    app.sentinel_from_telegram(&pat).await;
    app.sentinel_from_matrix().await;
    assert_eq!(requests_to(&app, old, before), Vec::<String>::new());
    // Both service messages told of it; it was recorded, and the file edited, once.
    let log = app.log();
    assert_eq!(log.matches("the portal follows the new chat id").count(), 1, "{log}");
    assert_eq!(log.matches("is now `telegram:").count(), 1, "{log}");
}

async fn a_matrix_message_sent_across_the_upgrade_is_delivered_once() {
    let (mut app, old, new) = bridged_to_a_basic_group().await;
    let pat = app.tg.add_user(77, "Pat", None, None);
    app.sentinel_from_matrix().await;
    let before = app.tg.chats_addressed().len();

    // The group is upgraded; the bridge has not read of it when it relays the next message.
    app.tg.upgrade_group_quietly(old, new);
    app.ezra.send_text(&app.room, "right across the upgrade").await;
    let text = "<b>Ezra</b>: right across the upgrade";
    app.tg
        .wait_until("the message to reach the supergroup", Duration::from_secs(60), |tg| {
            tg.sent(new).iter().any(|s| s.text == text)
        })
        .await;
    config_names(&app, old, new).await;

    // The service messages come late: they change nothing.
    app.tg.announce_upgrade(old, new, &pat);
    app.chat = new;
    app.sentinel_from_telegram(&pat).await;
    app.sentinel_from_matrix().await;
    let copies = app.tg.sent(new).iter().filter(|s| s.text == text).count();
    assert_eq!(copies, 1, "{:?}", app.tg.sent(new));
    // The one send that hit the upgrade (and the question that learnt the new id); no more.
    assert_eq!(requests_to(&app, old, before), ["sendmessage", "getchat"]);
    assert!(app.tg.sent(old).iter().all(|s| s.text != text));
}

async fn without_its_config_file_the_bridge_follows_and_names_the_line_to_change() {
    let (mut app, old, new) = with_a_basic_group().await;
    app.edit_config(|c| {
        c.replacen(
            "    enabled: true\n",
            &format!("    enabled: true\n    bot_token: \"{}\"\n", crate::harness::TG_TOKEN),
            1,
        )
    });
    let _log = log_to(&app);
    // As `tgmx run` with the built-in config: the bridge does not know a file to edit.
    app.start_in_process(Box::new(|config, stop| {
        Box::pin(async move {
            let cfg = tgmx::Config::load(&config).map_err(|e| e.to_string())?;
            let app = tgmx::App::build(cfg).await.map_err(|e| format!("cannot start: {e}"))?;
            app.run_until_stopped(stop).await.map_err(|e| e.to_string())
        })
    }))
    .await;
    let pat = app.tg.add_user(77, "Pat", None, None);
    app.sentinel_from_matrix().await;
    let before = app.tg.chats_addressed().len();
    let config_before = std::fs::read_to_string(app.config_path()).unwrap();

    app.tg.upgrade_group(old, new, &pat);
    let line = format!("change that line of `rooms` to `telegram: {new}`");
    eventually(
        "the warning naming the line to change",
        Duration::from_secs(30),
        async || app.log().contains(&line),
    )
    .await;
    app.chat = new;
    app.tg.inject_text(new, &pat, "from the supergroup");
    reaches_the_room(&app, "from the supergroup").await;
    app.sentinel_from_matrix().await;
    assert_eq!(requests_to(&app, old, before), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(app.config_path()).unwrap(), config_before);
    assert_eq!(app.log().matches(&line).count(), 1, "{}", app.log());
    app.stop_in_process().await;
}

/// Log what this test thread's tasks do (the in-process bridge) into the app's `daemon.log`,
/// until the guard drops.
fn log_to(app: &TestApp) -> tracing::subscriber::DefaultGuard {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app.log_path())
        .unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,tgmx=debug"))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(out))
        .finish();
    tracing::subscriber::set_default(subscriber)
}

/// Wait until a message with this body is in the room (on time-out: the end of the log).
async fn reaches_the_room(app: &TestApp, text: &str) {
    eventually(&format!("{text:?} in the room"), Duration::from_secs(60), async || {
        if app
            .ezra
            .messages(&app.room)
            .await
            .iter()
            .any(|e| crate::harness::body(e) == text)
        {
            return Ok(());
        }
        let log = app.log();
        let tail: Vec<&str> = log.lines().rev().take(200).collect();
        Err(tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    })
    .await
}
