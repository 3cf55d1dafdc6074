//! The appservice HTTP surface as the homeserver (or an attacker) sees it.

use serde_json::{Value, json};

use crate::harness::{TG_TOKEN, TestApp, http};

async fn auth_transactions_and_queries() {
    let app = TestApp::spawn().await;
    let c = http();
    let url = app.url();
    let txn = json!({"events": [{"type": "m.room.message", "sender": "@ezra0:localhost", "room_id": "!unbridged:localhost",
        "event_id": "$x", "content": {"msgtype": "m.text", "body": "hi"}}]});

    let r = c
        .put(format!("{url}/_matrix/app/v1/transactions/t1"))
        .json(&txn)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_MISSING_TOKEN");
    let r = c
        .put(format!("{url}/_matrix/app/v1/transactions/t1"))
        .bearer_auth("wrong")
        .json(&txn)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_FORBIDDEN");
    // Bearer (Synapse) and the legacy query parameter (Conduit sends both).
    let r = c
        .put(format!("{url}/_matrix/app/v1/transactions/t1"))
        .bearer_auth(&app.hs_token)
        .json(&txn)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(format!(
            "{url}/_matrix/app/v1/transactions/t1?access_token={}",
            app.hs_token
        ))
        .json(&txn)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "duplicate transaction is accepted as a no-op");
    let r = c
        .put(format!("{url}/_matrix/app/v1/transactions/t2"))
        .bearer_auth(&app.hs_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");

    let r = c
        .post(format!("{url}/_matrix/app/v1/ping"))
        .bearer_auth(&app.hs_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{url}/_matrix/app/v1/users/{}", app.bot))
        .bearer_auth(&app.hs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{url}/_matrix/app/v1/users/@tg{}_999:localhost", app.slot))
        .bearer_auth(&app.hs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "unknown puppet");
    let r = c
        .get(format!("{url}/_matrix/app/v1/rooms/%23nope:localhost"))
        .bearer_auth(&app.hs_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The duplicate did not double the stored event; the event from an unbridged room was ignored
    // and the daemon still bridges.
    let inbox: i64 = sqlite_count(&app, "SELECT COUNT(*) FROM mx_transactions WHERE txn_id = 't1'").await;
    assert_eq!(inbox, 1);
    app.ezra.send_text(&app.room, "still alive").await;
    let sent = app.tg.wait_sent(app.chat, 1, std::time::Duration::from_secs(30)).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: still alive");
    // Database and registration are private to the owner.
    use std::os::unix::fs::PermissionsExt;
    for f in [app.db_path(), app.dir.join("registration.yaml")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", f.display());
    }
    // No token in the logs.
    let log = app.log();
    assert!(
        !log.contains(TG_TOKEN) && !log.contains(&app.hs_token),
        "a token leaked into the log"
    );
}

async fn sqlite_count(app: &TestApp, sql: &'static str) -> i64 {
    let url = format!("sqlite://{}", app.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

both!(auth_transactions_and_queries,);
