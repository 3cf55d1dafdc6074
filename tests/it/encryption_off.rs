//! A build without the `e2ee` feature (`cargo test --no-default-features`): plain rooms bridge,
//! an encrypted room gets no cleartext, and the operator is told.

use std::time::Duration;

use crate::harness::{TestApp, eventually};

async fn without_encryption_built_in_an_encrypted_room_gets_no_cleartext_and_a_clear_reason() {
    let mut app = TestApp::prepare().await;
    app.encrypt_room().await;
    app.start().await;
    let user = app.tg.add_user(7201, "Plain", None, None);
    app.tg.inject_text(app.chat, &user, "must not leak");
    // The audit names the message as not carried, with the reason: the bridge handled it.
    eventually("the reason in the audit", Duration::from_secs(30), async || {
        let out = app.cli(&["audit", "--since", "1h"]).await.1;
        if out.contains("without end-to-end encryption") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    let leaked: Vec<_> = app
        .ezra
        .events(&app.room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert!(leaked.is_empty(), "cleartext in an encrypted room: {leaked:#?}");
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok && out.contains("built without the `e2ee` cargo feature"), "{out}");
}

both!(without_encryption_built_in_an_encrypted_room_gets_no_cleartext_and_a_clear_reason,);
