//! An encrypted room across a failover of an active/standby pair (README "Two hosts"): each
//! instance has its own encryption devices, and the standby starts its own while it waits, so that
//! a sender shares its room keys with the standby's device too. After the active one is killed,
//! the new active instance decrypts what the room sends in the megolm session the sender started
//! before the failover, and its puppets encrypt what Telegram sends. Needs PostgreSQL (like
//! `pair.rs`) and encryption (like `encryption.rs`).

use std::time::{Duration, Instant};

use matrix_sdk::ruma::events::room::message::{MessageType, RoomMessageEventContent};
use serde_json::Value;

use crate::encryption::Element;
use crate::harness::{TestApp, eventually};
use crate::pair::{T, TAKEOVER, a_active, lease_taken};
use tgmx_testkit::pair::Instance;

both!(an_encrypted_room_is_bridged_after_a_failover);

/// Ezra's own encrypting client (`encryption.rs`), with what this test needs of it.
impl Element {
    async fn send(&self, text: &str) {
        self.room.send(RoomMessageEventContent::text_plain(text)).await.unwrap();
    }

    /// Wait for a decrypted text `text` from `sender`; on a timeout, `log` (an instance's log)
    /// is shown too.
    async fn wait_text(&self, sender: &str, text: &str, log: impl Fn() -> String) {
        eventually(&format!("the decrypted text {text:?} from {sender}"), T, async || {
            let seen = self.seen.lock().unwrap();
            if seen
                .iter()
                .any(|(s, m)| s == sender && matches!(m, MessageType::Text(t) if t.body == text))
            {
                return Ok(());
            }
            Err(format!("{seen:?}\nthe log:\n{}", log()))
        })
        .await
    }
}

/// The device id stored for `key` in `e2ee_devices` (e.g. `@bot:localhost@B`), if any.
fn stored_device(app: &TestApp, key: &str) -> Option<String> {
    let out = app.psql(&format!(
        "SELECT device_id FROM e2ee_devices WHERE user_id = '{}'",
        key.replace('\'', "''")
    ));
    (!out.is_empty()).then_some(out)
}

/// Wait until instance `name`'s encryption device of `user` is stored and has keys on the
/// homeserver; its device id.
async fn wait_instance_device(app: &TestApp, inst: &mut Instance, user: &str) -> String {
    let key = format!("{user}@{}", inst.name);
    eventually(
        &format!("instance {}'s device of {user} to have keys", inst.name),
        Duration::from_secs(90),
        async || {
            if let Some(status) = inst.exited() {
                panic!("instance {} {status}:\n{}", inst.name, inst.log());
            }
            let Some(device) = stored_device(app, &key) else {
                return Err(format!("no row {key:?} in e2ee_devices\nthe log:\n{}", inst.log()));
            };
            let keys = crate::encryption::devices(&app.ezra, user).await;
            if keys.contains(&device) {
                Ok(device)
            } else {
                Err(format!(
                    "device {device} stored, the homeserver has keys for {keys:?}\nthe log:\n{}",
                    inst.log()
                ))
            }
        },
    )
    .await
}

/// The raw (as stored by the homeserver) timeline events from `sender`, newest last.
async fn raw_from(app: &TestApp, sender: &str) -> Vec<Value> {
    app.ezra
        .events(&app.room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == sender)
        .collect()
}

/// The raw encrypted event from `sender` whose session and device are those of the newest
/// message `sender` sent so far; (session id, device id).
async fn last_encrypted(app: &TestApp, sender: &str) -> (String, String) {
    let raw = raw_from(app, sender).await;
    assert!(
        raw.iter().all(|e| e["type"] != "m.room.message"),
        "{sender} sent a message in the clear: {raw:#?}"
    );
    let last = raw
        .iter()
        .rfind(|e| e["type"] == "m.room.encrypted")
        .unwrap_or_else(|| panic!("no encrypted event from {sender}: {raw:#?}"));
    let field = |f: &str| last["content"][f].as_str().unwrap_or_default().to_owned();
    (field("session_id"), field("device_id"))
}

/// Wait until Telegram got `text` from Ezra; on a timeout, `inst`'s log is shown too.
async fn wait_on_telegram(app: &TestApp, inst: &Instance, text: &str) {
    let want = format!("<b>Ezra</b>: {text}");
    eventually(&format!("Telegram to get {want:?}"), T, async || {
        let sent = app.tg.sent(app.chat);
        if sent.iter().any(|s| s.text == want) {
            return Ok(());
        }
        Err(format!(
            "{:#?}\ninstance {}'s log:\n{}",
            sent.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
            inst.name,
            inst.log()
        ))
    })
    .await
}

async fn an_encrypted_room_is_bridged_after_a_failover() {
    let mut app = TestApp::prepare().await;
    let mut pair = a_active(&mut app).await;
    // The room turns encryption on once A runs: turned on before, the event's push could meet the
    // Conduit stand-in just as `Pair::new` stops it, and Conduit would not push again for 30 s (the
    // whole test would then run on the bridge's fallback, /sync, instead of pushes).
    app.encrypt_room().await;
    let bot = app.bot.clone();
    let a_device = wait_instance_device(&app, &mut pair.a, &bot).await;
    pair.b.launch();
    pair.b.wait_log("standby: waiting for the lease").await;
    let b_device = wait_instance_device(&app, &mut pair.b, &bot).await;
    assert_ne!(a_device, b_device, "A and B share a device of the bot");
    assert!(!pair.b.log().contains("lease taken"), "{}", pair.b.log());

    // Ezra's client logs in once both of the bot's devices have keys: its first message in the
    // room starts a megolm session and shares it with both (A's and B's).
    let element = Element::login(&app).await;
    element.send("before the failover").await;
    wait_on_telegram(&app, &pair.a, "before the failover").await;
    let (session_before, ezra_device) = last_encrypted(&app, &app.ezra.user_id).await;

    // Telegram -> Matrix through A: encrypted by A's device of the puppet.
    let user = app.tg.add_user(7201, "Keeper", None, None);
    let puppet = app.puppet(7201);
    app.tg.inject_text(app.chat, &user, "through A");
    element.wait_text(&puppet, "through A", || pair.a.log()).await;
    let (_, puppet_device_a) = last_encrypted(&app, &puppet).await;

    // SIGKILL A: B takes over.
    let killed = Instant::now();
    pair.a.kill();
    pair.b.wait_log_for(&lease_taken("B"), TAKEOVER).await;
    let lease_after = killed.elapsed();
    pair.b.wait_ready_status(200, T).await;

    // Matrix -> Telegram through B, in the session Ezra's client started before the failover
    // (decrypted with the key it shared with B's device of the bot then).
    element.send("after the failover").await;
    wait_on_telegram(&app, &pair.b, "after the failover").await;
    let mx_after = killed.elapsed();
    let (session_after, ezra_device_after) = last_encrypted(&app, &app.ezra.user_id).await;
    assert_eq!(ezra_device_after, ezra_device);
    assert_eq!(
        session_after, session_before,
        "Ezra's client started another megolm session: the test does not test what it says"
    );

    // Telegram -> Matrix through B: encrypted by B's device of the puppet, which Ezra's client
    // decrypts.
    app.tg.inject_text(app.chat, &user, "through B");
    element.wait_text(&puppet, "through B", || pair.b.log()).await;
    let tg_after = killed.elapsed();
    let (_, puppet_device_b) = last_encrypted(&app, &puppet).await;
    assert_eq!(
        stored_device(&app, &format!("{puppet}@B")).as_deref(),
        Some(puppet_device_b.as_str()),
        "the puppet's message after the failover was not encrypted by B's device of it"
    );
    assert_ne!(puppet_device_b, puppet_device_a);

    // Everything once, nothing undecryptable.
    let texts: Vec<String> = app.tg.sent(app.chat).into_iter().map(|s| s.text).collect();
    assert!(
        !texts.iter().any(|t| t.contains("could not decrypt")),
        "{texts:#?}\nB's log:\n{}",
        pair.b.log()
    );
    let from_ezra: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("<b>Ezra</b>"))
        .collect();
    assert_eq!(
        from_ezra,
        ["<b>Ezra</b>: before the failover", "<b>Ezra</b>: after the failover"],
        "matrix -> telegram"
    );
    let from_puppet: usize = element
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == puppet)
        .count();
    assert_eq!(from_puppet, 2, "telegram -> matrix");
    let missed = |log: String| {
        log.lines()
            .filter(|l| l.contains("the homeserver did not deliver"))
            .count()
    };
    println!(
        "pair e2ee figures ({}): B took the lease {} ms after the kill; the first encrypted message \
         after it reached Telegram at {} ms, the first Telegram message was decrypted in the room at {} ms \
         (events the homeserver did not push, bridged from /sync: {} by A, {} by B)",
        crate::harness::hs_kind().name(),
        lease_after.as_millis(),
        mx_after.as_millis(),
        tg_after.as_millis(),
        missed(pair.a.log()),
        missed(pair.b.log()),
    );
}
