//! Operator tooling: readiness check, metrics, readiness probe, online backup.

use std::time::Duration;

use crate::harness::{Homeserver, Proxy, TestApp, eventually, http};

async fn check_passes_on_a_ready_bridge_and_names_a_wrong_token() {
    let app = TestApp::spawn().await;
    let (ok, out) = app.cli(&["check"]).await;
    assert!(ok, "{out}");
    for want in [
        "ok   homeserver reachable",
        "ok   appservice registered and reachable (ping)",
        "ok   telegram token valid",
        "ok   bot sees every message",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    let (ok, text) = app.cli_env(&["check"], "999:wrong-token").await;
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL telegram token valid"), "{text}");
    assert!(!text.contains("999:wrong-token"), "token printed: {text}");
}

async fn check_fails_when_the_homeserver_is_down() {
    let proxy = Proxy::start(&Homeserver::get().url).await;
    proxy.set_down(true);
    let mut app = TestApp::prepare().await;
    app.hs_url = proxy.url.clone();
    app.write_config("");
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL homeserver reachable"), "{out}");
}

async fn metrics_ready_and_backup_reflect_the_traffic() {
    let app = TestApp::spawn().await;
    let user = app.tg.add_user(6001, "Wren", None, None);
    app.tg.inject_text(app.chat, &user, "to matrix");
    app.wait_from(&app.puppet(6001), 1).await;
    app.ezra.send_text(&app.room, "to telegram").await;
    app.tg.wait_sent(app.chat, 1, Duration::from_secs(30)).await;

    let c = http();
    let r = c.get(format!("{}/ready", app.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let wants = [
        "tgmx_messages_total{direction=\"tg_to_mx\",outcome=\"delivered\"} 1",
        "tgmx_messages_total{direction=\"mx_to_tg\",outcome=\"delivered\"} 1",
        "tgmx_bridge_latency_seconds_count{direction=\"tg_to_mx\"} 1",
        "tgmx_mode{mode=\"parallel\"} 1",
        "tgmx_queue_depth{source=\"matrix\"}",
    ];
    // The counters move just after the delivery the test saw: poll briefly.
    eventually("the counters in /metrics", Duration::from_secs(10), async || {
        let text = app.metrics().await;
        let missing: Vec<&&str> = wants.iter().filter(|w| !text.contains(**w)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?} in:\n{text}"))
        }
    })
    .await;

    let copy = app.dir.join("backup.db");
    let (ok, out) = app.cli(&["backup", copy.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", copy.display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

fn with_fleet(app: &TestApp, extra_room: Option<(&str, i64)>) -> impl FnOnce(String) -> String {
    let fleet = format!(
        "fleet:\n  operator: \"{}\"\n  agents: [\"{}\", \"{}\"]\n  min_agents: 2\n",
        app.alex.user_id, app.ezra.user_id, app.alex.user_id
    );
    let room = extra_room.map(|(alias, chat)| {
        format!("  - {{matrix: \"{alias}\", telegram: {chat}, name: \"Fleet intel\", topic: \"Signals\"}}\n")
    });
    move |c: String| {
        let c = match room {
            Some(r) => c.replace("rooms:\n", &format!("rooms:\n{r}")),
            None => c,
        };
        c.replace("logging:", &format!("{fleet}logging:"))
    }
}

async fn bootstrap_dry_run_changes_nothing_and_a_second_run_nothing_more() {
    let app = TestApp::prepare().await;
    // Inside the slot's alias namespace (`^#tg<slot>_.+:localhost$`), as a registration
    // generated with the room in the config would have it.
    let alias = format!("#tg{}_fleet-intel:localhost", app.slot);
    let chat = app.chat - 700;
    app.tg.add_chat(chat, "fleet-intel");
    app.edit_config(with_fleet(&app, Some((&alias, chat))));
    let resolve = format!(
        "/_matrix/client/v3/directory/room/{}",
        url::form_urlencoded::byte_serialize(alias.as_bytes()).collect::<String>()
    );

    let (ok, plan) = app.cli(&["bootstrap", "--dry-run"]).await;
    assert!(ok, "{plan}");
    assert!(
        plan.contains(&format!(
            "would create room {alias} (name \"Fleet intel\", topic \"Signals\", not encrypted)"
        )),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would invite {} to {alias}", app.ezra.user_id)),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would link {alias} to telegram chat {chat}")),
        "{plan}"
    );
    assert!(
        app.ezra.call("GET", &resolve, None).await.is_err(),
        "dry run created the room"
    );
    let (_, again) = app.cli(&["bootstrap", "--dry-run"]).await;
    assert_eq!(again, plan, "a dry run changed something");

    let (ok, done) = app.cli(&["bootstrap"]).await;
    assert!(ok, "{done}");
    assert!(
        done.contains(&format!("create room {alias}")) && !done.contains("would"),
        "{done}"
    );
    let room = app.ezra.call("GET", &resolve, None).await.unwrap()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = app
        .ezra
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                app.ezra.user_id
            ),
            None,
        )
        .await;
    assert!(member.is_err() || member.unwrap()["membership"] == "invite");
    app.alex.join(&room).await;
    let power = app
        .alex
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(power["users"][app.alex.user_id.as_str()], 100, "{power}");

    let (ok, second) = app.cli(&["bootstrap"]).await;
    assert!(ok, "{second}");
    assert!(second.contains("nothing to do"), "second run changed things:\n{second}");
    let (_, dry) = app.cli(&["bootstrap", "--dry-run"]).await;
    assert!(dry.contains("nothing to do"), "{dry}");
}

async fn rollcall_reports_who_answered_and_status_counts_match() {
    let app = TestApp::prepare().await;
    app.edit_config(with_fleet(&app, None));
    let mut app = app;
    app.start().await;
    let user = app.tg.add_user(6002, "Finch", None, None);
    app.tg.inject_text(app.chat, &user, "one");
    app.tg.inject_text(app.chat, &user, "two");
    app.wait_from(&app.puppet(6002), 2).await;
    app.ezra.send_text(&app.room, "three").await;
    app.tg.wait_sent(app.chat, 1, Duration::from_secs(30)).await;

    // The link of the relayed message is written just after the send the test saw: poll briefly.
    let status = eventually(
        "`tgmx status` to count the links",
        Duration::from_secs(10),
        async || {
            let (ok, status) = app.cli(&["status"]).await;
            assert!(ok, "{status}");
            if status.contains("telegram->matrix 2, matrix->telegram 1") {
                Ok(status)
            } else {
                Err(status)
            }
        },
    )
    .await;
    // The gates this traffic can pass (the rest: `readiness.rs`).
    assert!(status.contains("ok   every room linked: 1 of 1 linked"), "{status}");
    assert!(status.contains("ok   nothing stuck or failed"), "{status}");
    let (ok, check) = app.cli(&["check"]).await;
    assert!(
        ok && check.contains("ok   2 of 2 agents joined to every room"),
        "{check}"
    );

    let config = app.config_path();
    let roll = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::tgmx_bin())
            .args(["rollcall", "--timeout", "15s", "-c"])
            .arg(config)
            .env("TGMX_TELEGRAM_TOKEN", crate::harness::TG_TOKEN)
            .output()
            .unwrap()
    });
    let bot = app.bot.clone();
    app.ezra
        .wait_messages(&app.room, 1, Duration::from_secs(30), move |e| {
            e["sender"] == bot.as_str() && crate::harness::body(e) == "Acknowledge, fleet."
        })
        .await;
    app.ezra.send_text(&app.room, "Ezra here").await;
    let out = roll.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "alex never answered, yet: {text}");
    assert!(
        text.contains(&format!("ok   {} answered in", app.ezra.user_id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("FAIL {} did not answer", app.alex.user_id)),
        "{text}"
    );
    assert!(text.contains("1 of 2 agents answered"), "{text}");
}

/// A refused bot token stops `tgmx run` at once with an error naming the setting; it does not
/// start a daemon that polls in vain.
async fn a_refused_bot_token_stops_the_start_with_a_clear_error() {
    let app = TestApp::prepare().await;
    let run = app.cli_env(&["run"], "123456:not-the-token");
    let (ok, out) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("tgmx run kept running with a refused token");
    assert!(!ok, "{out}");
    assert!(
        out.contains("Telegram refused the bot token") && out.contains("TGMX_TELEGRAM_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("not-the-token"), "the token was printed: {out}");
}

/// When the Bot API cannot be reached, the log says so in one line naming the host and the cause,
/// and `/ready` answers 503 with the same reason.
async fn an_unreachable_bot_api_is_named_in_the_log_and_in_ready() {
    let mut app = TestApp::prepare().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    app.edit_config(|c| c.replace(&app.tg.api_url(), &format!("http://127.0.0.1:{dead_port}")));
    app.launch().await;
    eventually(
        "/ready to name the unreachable Bot API",
        Duration::from_secs(60),
        async || {
            let (status, body) = app.ready().await;
            let telegram = body["telegram"].as_str().unwrap_or_default().to_owned();
            if telegram.contains("cannot reach") {
                assert_eq!(status, 503, "{body}");
                assert!(
                    telegram.contains("127.0.0.1") && telegram.contains("connection was refused"),
                    "{body}"
                );
                Ok(())
            } else {
                Err(format!("/ready: {status} {body}\n{}", app.log()))
            }
        },
    )
    .await;
    app.wait_log("cannot reach the Telegram Bot API at 127.0.0.1: the connection was refused")
        .await;
}

/// Forgetting `-c` in a directory without a config: the commands that read the bridge's state
/// refuse to work on a database they would create, and say which config and database they
/// looked at; none of them leaves a database behind.
async fn state_commands_without_a_config_refuse_instead_of_reporting_all_clear() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["audit"], &["backup", "copy.db"]] {
        let out = std::process::Command::new(crate::harness::tgmx_bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("TGMX_CONFIG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("no database at") && text.contains("built-in default"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains("ready for cutover: yes") && !text.contains("nothing lost"),
            "{text}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// A bridge that has carried nothing yet is not "ready for cutover" and its audit does not say
/// "nothing lost": there is nothing to judge.
async fn a_bridge_without_traffic_is_not_called_ready_or_lossless() {
    let app = TestApp::spawn().await;
    let (_, status) = app.cli(&["status"]).await;
    assert!(
        status.contains("ready for cutover: no") && status.contains("no traffic bridged yet"),
        "{status}"
    );
    assert!(
        status.contains("config: ") && status.contains("; database: "),
        "{status}"
    );
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "{audit}");
    assert!(audit.contains("no traffic recorded yet"), "{audit}");
}

both!(
    state_commands_without_a_config_refuse_instead_of_reporting_all_clear,
    a_bridge_without_traffic_is_not_called_ready_or_lossless,
    a_refused_bot_token_stops_the_start_with_a_clear_error,
    an_unreachable_bot_api_is_named_in_the_log_and_in_ready,
    check_passes_on_a_ready_bridge_and_names_a_wrong_token,
    check_fails_when_the_homeserver_is_down,
    metrics_ready_and_backup_reflect_the_traffic,
    bootstrap_dry_run_changes_nothing_and_a_second_run_nothing_more,
    rollcall_reports_who_answered_and_status_counts_match,
);
