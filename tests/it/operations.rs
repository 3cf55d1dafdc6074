//! Operator tooling: readiness check, metrics, readiness probe, online backup.

use std::time::Duration;

use crate::harness::{Proxy, Synapse, TestApp, http};

#[tokio::test]
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

#[tokio::test]
async fn check_fails_when_the_homeserver_is_down() {
    let proxy = Proxy::start(&Synapse::get().url).await;
    proxy.set_down(true);
    let mut app = TestApp::prepare().await;
    app.hs_url = proxy.url.clone();
    app.write_config("");
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL homeserver reachable"), "{out}");
}

#[tokio::test]
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
    let text = c
        .get(format!("{}/metrics", app.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "tgmx_messages_total{direction=\"tg_to_mx\",outcome=\"delivered\"} 1",
        "tgmx_messages_total{direction=\"mx_to_tg\",outcome=\"delivered\"} 1",
        "tgmx_bridge_latency_seconds_count{direction=\"tg_to_mx\"} 1",
        "tgmx_mode{mode=\"parallel\"} 1",
        "tgmx_queue_depth{source=\"matrix\"}",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

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
