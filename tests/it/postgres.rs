//! The bridge on PostgreSQL (`database: postgres://…`, see README "PostgreSQL"): text both ways,
//! with the state (message map, puppets) in a fresh database of the test cluster
//! (`tests/rig/postgres.sh`). Any other test runs on PostgreSQL too with `TGMX_TEST_DB=postgres`.

use std::time::Duration;

use crate::harness::{TestApp, body, eventually};
use crate::in_process;

async fn text_crosses_both_ways_on_postgres() {
    let mut app = TestApp::prepare().await;
    app.use_postgres();
    in_process::start(&mut app).await;
    assert!(app.log().contains("backend=\"PostgreSQL\""), "{}", app.log());

    let user = app.tg.add_user(1001, "Rook", None, Some("rook"));
    app.tg.inject_text(app.chat, &user, "status green");
    let puppet = app.puppet(1001);
    let msgs = app.wait_from(&puppet, 1).await;
    assert_eq!(body(&msgs[0]), "status green");

    app.ezra.send_text(&app.room, "ack, holding").await;
    let sent = app.tg.wait_sent(app.chat, 1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: ack, holding");

    // Both are in the PostgreSQL message map, one each way (the Matrix -> Telegram link is
    // written once Telegram answered), and the puppet is registered there.
    eventually(
        "both messages in the PostgreSQL message map",
        Duration::from_secs(10),
        async || match app.psql("SELECT direction FROM messages ORDER BY bridged_at") {
            m if m == "tg_to_mx\nmx_to_tg" => Ok(()),
            m => Err(m),
        },
    )
    .await;
    assert_eq!(
        app.psql("SELECT displayname FROM puppets WHERE tg_user_id = 1001"),
        "Rook"
    );
    // Nothing was echoed back: a sentinel sent after is the next and last Telegram message.
    let sentinel = app.sentinel_from_matrix().await;
    assert_eq!(app.tg.sent(app.chat).last(), Some(&sentinel));
    assert_eq!(app.tg.sent(app.chat).len(), 2);
}

both!(text_crosses_both_ways_on_postgres);
