//! Matrix events the homeserver never delivers. Synapse can leave an appservice transaction
//! unsent after a failed send (src/bridge/catch_up.rs); the bridge finds such events in the room
//! timeline and bridges them in their place, and once only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::harness::{TestApp, http};

const T: Duration = Duration::from_secs(60);

/// Sits at the appservice URL Synapse was given and forwards everything to the daemon, except
/// events whose body contains "[lost]": those are dropped as if Synapse never sent them.
/// Returns how many were dropped.
async fn lossy_link(app: &mut TestApp, gateway_extra: &str) -> Arc<AtomicUsize> {
    app.release_stand_in().await;
    let daemon_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    app.write_config(gateway_extra);
    let registered = format!("127.0.0.1:{}", app.port);
    app.edit_config(|c| c.replace(&registered, &format!("127.0.0.1:{daemon_port}")));
    let dropped = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(&registered).await.unwrap();
    let router = axum::Router::new()
        .fallback(forward)
        .with_state((format!("http://127.0.0.1:{daemon_port}"), dropped.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await });
    dropped
}

async fn forward(State((daemon, dropped)): State<(String, Arc<AtomicUsize>)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if parts.uri.path().contains("/transactions/") {
        let mut txn: Value = serde_json::from_slice(&body).unwrap();
        if let Some(events) = txn["events"].as_array_mut() {
            let before = events.len();
            events.retain(|e| !e["content"]["body"].as_str().is_some_and(|b| b.contains("[lost]")));
            dropped.fetch_add(before - events.len(), Ordering::SeqCst);
        }
        body = serde_json::to_vec(&txn).unwrap().into();
    }
    let mut out = http()
        .request(parts.method, format!("{daemon}{}", parts.uri))
        .body(body);
    if let Some(auth) = parts.headers.get("authorization") {
        out = out.header("authorization", auth);
    }
    match out.send().await {
        Ok(r) => (r.status(), r.bytes().await.unwrap_or_default()).into_response(),
        Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn texts(app: &TestApp) -> Vec<String> {
    app.tg.sent(app.chat).into_iter().map(|s| s.text).collect()
}

async fn caught_up(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("tgmx_matrix_events_caught_up_total "))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

async fn an_event_the_homeserver_skipped_is_bridged_in_its_place_and_once() {
    let mut app = TestApp::prepare().await;
    let dropped = lossy_link(&mut app, "").await;
    app.start().await;
    for text in ["one", "two [lost]", "three", "four [lost]", "five [lost]", "six"] {
        app.ezra.send_text(&app.room, text).await;
    }
    let sent = app.tg.wait_sent(app.chat, 6, T).await;
    let got: Vec<&str> = sent.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        got,
        ["one", "two [lost]", "three", "four [lost]", "five [lost]", "six"].map(|t| format!("<b>Ezra</b>: {t}"))
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "the link did not drop what it should"
    );
    assert_eq!(caught_up(&app).await, 3);
    // A sentinel: once it is bridged, any second copy of a caught-up event would be too.
    app.ezra.send_text(&app.room, "seven").await;
    app.tg.wait_sent(app.chat, 7, T).await;
    assert_eq!(app.tg.sent(app.chat).len(), 7, "a caught-up event was bridged twice");
    assert_eq!(texts(&app)[6], "<b>Ezra</b>: seven");
}

/// A skipped event with nothing after it in its room is bridged without waiting for a later
/// event (Conduit sends nothing until one comes), and once even when the homeserver sends it at
/// last.
async fn a_skipped_event_at_the_end_of_a_room_is_bridged_without_a_later_event() {
    let mut app = TestApp::prepare().await;
    let dropped = lossy_link(&mut app, "  matrix: {catch_up_secs: 1}").await;
    app.start().await;
    app.ezra.send_text(&app.room, "alpha").await;
    let lost = app.ezra.send_text(&app.room, "beta [lost]").await;
    let sent = app.tg.wait_sent(app.chat, 2, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: alpha");
    assert_eq!(sent[1].text, "<b>Ezra</b>: beta [lost]");
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(caught_up(&app).await, 1);
    // The homeserver sends it at last (here: the test, as Synapse would, in a new transaction).
    let r = http()
        .put(format!("{}/_matrix/app/v1/transactions/late-1", app.url()))
        .bearer_auth(&app.hs_token)
        .json(&json!({"events": [{
            "type": "m.room.message", "sender": app.ezra.user_id, "room_id": app.room,
            "event_id": lost, "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "beta [lost]"}
        }]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A sentinel after it: when it arrives, the late delivery has been handled.
    app.ezra.send_text(&app.room, "gamma").await;
    app.tg.wait_sent(app.chat, 3, T).await;
    assert_eq!(
        texts(&app),
        ["alpha", "beta [lost]", "gamma"].map(|t| format!("<b>Ezra</b>: {t}")),
        "the late delivery was bridged again"
    );
}

both!(
    an_event_the_homeserver_skipped_is_bridged_in_its_place_and_once,
    a_skipped_event_at_the_end_of_a_room_is_bridged_without_a_later_event,
);
