//! Encrypted rooms. The "Element" side is a real matrix-sdk client with encryption (Ezra's own
//! device); the bridge's bot and puppets have devices of their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};

use crate::harness::{MxUser, TestApp, eventually};

const T: Duration = Duration::from_secs(60);

/// Ezra's own encrypting client, with every decrypted message it sees.
pub(crate) struct Element {
    pub(crate) client: Client,
    pub(crate) room: Room,
    /// (sender, content) of every decrypted message the client saw.
    pub(crate) seen: Arc<Mutex<Vec<(String, MessageType)>>>,
    _store: tempfile::TempDir,
}

/// A real encrypting client (matrix-sdk, its own crypto store) logged in as `user` (a test
/// account, password `testpass-123`) with a device named `device`; the store lives as long as
/// the returned directory.
pub(crate) async fn client_login(app: &TestApp, user: &str, device: &str) -> (Client, tempfile::TempDir) {
    let store = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .homeserver_url(&app.hs_url)
        .sqlite_store(store.path(), None)
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(user, "testpass-123")
        .initial_device_display_name(device)
        .send()
        .await
        .unwrap();
    (client, store)
}

impl Element {
    pub(crate) async fn login(app: &TestApp) -> Element {
        let (client, store) = client_login(app, &app.ezra.user_id, "element stand-in").await;
        let seen: Arc<Mutex<Vec<(String, MessageType)>>> = Arc::default();
        let s = seen.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((ev.sender.to_string(), ev.content.msgtype));
            }
        });
        client.sync_once(SyncSettings::default()).await.unwrap();
        let c = client.clone();
        tokio::spawn(async move { c.sync(SyncSettings::default().timeout(Duration::from_secs(5))).await });
        let room_id: OwnedRoomId = app.room.parse().unwrap();
        let room = client.get_room(&room_id).expect("ezra's client knows the room");
        assert!(room.latest_encryption_state().await.unwrap().is_encrypted());
        Element {
            client,
            room,
            seen,
            _store: store,
        }
    }

    /// Wait for a decrypted message from `sender` matching `f`.
    async fn wait_for(&self, sender: &str, f: impl Fn(&MessageType) -> bool) -> MessageType {
        eventually(&format!("a matching decrypted message from {sender}"), T, async || {
            let seen = self.seen.lock().unwrap();
            match seen.iter().find(|(s, m)| s == sender && f(m)) {
                Some((_, m)) => Ok(m.clone()),
                None => Err(format!("{seen:?}")),
            }
        })
        .await
    }
}

/// The device ids `user` has, as Ezra's homeserver reports them.
pub(crate) async fn devices(ezra: &MxUser, user: &str) -> Vec<String> {
    let v = ezra
        .call(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(json!({"device_keys": {user: []}})),
        )
        .await
        .unwrap();
    v["device_keys"][user]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

async fn wait_device(ezra: &MxUser, user: &str) -> Vec<String> {
    eventually(&format!("{user} to get a device"), T, async || {
        let d = devices(ezra, user).await;
        (!d.is_empty()).then_some(d)
    })
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

async fn an_encrypted_room_carries_text_and_files_both_ways_and_survives_a_restart() {
    let mut app = TestApp::prepare().await;
    app.encrypt_room().await;
    app.start().await;
    let bot_devices = wait_device(&app.ezra, &app.bot).await;
    let element = Element::login(&app).await;

    // Matrix -> Telegram: decrypted by the bot's device.
    element
        .room
        .send(RoomMessageEventContent::text_plain("secret plan"))
        .await
        .unwrap();
    let sent = app.tg.wait_sent(app.chat, 1, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: secret plan");

    // Telegram -> Matrix: encrypted by the puppet's own device.
    let user = app.tg.add_user(7001, "Vault", None, None);
    app.tg.inject_text(app.chat, &user, "copy that");
    let puppet = app.puppet(7001);
    let m = element
        .wait_for(&puppet, |m| matches!(m, MessageType::Text(t) if t.body == "copy that"))
        .await;
    assert!(matches!(m, MessageType::Text(_)));
    let raw = raw_from(&app, &puppet).await;
    assert!(
        raw.iter().all(|e| e["type"] != "m.room.message"),
        "a puppet message went out in the clear"
    );
    let last = raw
        .iter()
        .rfind(|e| e["type"] == "m.room.encrypted")
        .expect("an encrypted puppet event");
    assert_eq!(
        last["content"]["device_id"].as_str().map(str::to_owned),
        devices(&app.ezra, &puppet).await.first().cloned(),
        "encrypted by another user's device"
    );

    // A file from Telegram: an encrypted attachment that Ezra's client decrypts byte for byte.
    let doc: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    app.tg
        .inject_document(app.chat, &user, doc.clone(), "orders.pdf", "application/pdf", None);
    let m = element.wait_for(&puppet, |m| matches!(m, MessageType::File(_))).await;
    let MessageType::File(f) = m else { unreachable!() };
    assert!(
        matches!(f.source, matrix_sdk::ruma::events::room::MediaSource::Encrypted(_)),
        "file not encrypted"
    );
    let got = element
        .client
        .media()
        .get_media_content(
            &MediaRequestParameters {
                source: f.source.clone(),
                format: MediaFormat::File,
            },
            false,
        )
        .await
        .unwrap();
    assert!(got == doc, "decrypted file differs");

    // A file from Matrix: Ezra's client encrypts it, the bridge decrypts it for Telegram.
    let notes: Vec<u8> = b"line one\nline two\n".repeat(500);
    element
        .room
        .send_attachment("notes.txt", &mime::TEXT_PLAIN, notes.clone(), Default::default())
        .await
        .unwrap();
    let sent = app.tg.wait_sent(app.chat, 2, T).await;
    let file = sent[1].file.as_ref().expect("a file was sent to Telegram");
    assert!(file.bytes == notes, "file bytes differ after decryption");

    // Restart: the same devices, no verification again, both directions still work.
    app.stop();
    app.start().await;
    element
        .room
        .send(RoomMessageEventContent::text_plain("after restart"))
        .await
        .unwrap();
    let sent = app.tg.wait_sent(app.chat, 3, T).await;
    assert_eq!(sent[2].text, "<b>Ezra</b>: after restart");
    app.tg.inject_text(app.chat, &user, "still here");
    element
        .wait_for(&puppet, |m| matches!(m, MessageType::Text(t) if t.body == "still here"))
        .await;
    assert_eq!(
        devices(&app.ezra, &app.bot).await,
        bot_devices,
        "the bot got a new device"
    );
    assert_eq!(
        devices(&app.ezra, &puppet).await.len(),
        1,
        "the puppet got a new device"
    );

    // The readiness check sees the encrypted room and that the bridge can take part.
    let (_, out) = app.cli(&["check"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("is encrypted and the bridge can take part")),
        "{out}"
    );
    // The crypto stores are in the backup.
    let backup = app.dir.join("backup.db");
    let (ok, out) = app.cli(&["backup", backup.to_str().unwrap()]).await;
    assert!(ok && out.contains("crypto store(s) copied"), "{out}");
    assert!(backup.with_extension("crypto").is_dir());
}

async fn a_room_that_turns_encryption_on_keeps_working() {
    let app = TestApp::spawn().await;
    let user = app.tg.add_user(7101, "Relay", None, None);
    app.tg.inject_text(app.chat, &user, "in the clear");
    app.wait_from(&app.puppet(7101), 1).await;
    app.encrypt_room().await;
    wait_device(&app.ezra, &app.bot).await;
    let element = Element::login(&app).await;
    element
        .room
        .send(RoomMessageEventContent::text_plain("now encrypted"))
        .await
        .unwrap();
    let sent = app.tg.wait_sent(app.chat, 1, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: now encrypted");
    app.tg.inject_text(app.chat, &user, "encrypted reply");
    let puppet = app.puppet(7101);
    element
        .wait_for(
            &puppet,
            |m| matches!(m, MessageType::Text(t) if t.body == "encrypted reply"),
        )
        .await;
    let raw = raw_from(&app, &puppet).await;
    assert_eq!(raw.last().unwrap()["type"], "m.room.encrypted");
}

async fn a_message_the_bridge_cannot_decrypt_gets_a_notice_not_silence() {
    let mut app = TestApp::prepare().await;
    app.encrypt_room().await;
    app.start().await;
    wait_device(&app.ezra, &app.bot).await;
    // Encrypted with a session the bridge never got (as a client with a broken key share would).
    app.ezra
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.encrypted/utd1", app.room),
            Some(json!({
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q",
                "session_id": "bm9zdWNoc2Vzc2lvbg",
                "device_id": "NOSUCHDEVICE",
                "ciphertext": "AwgAEnB0aGlzIGlzIG5vdCBhIHJlYWwgbWVnb2xtIG1lc3NhZ2U"
            })),
        )
        .await
        .unwrap();
    let sent = app.tg.wait_sent(app.chat, 1, Duration::from_secs(90)).await;
    assert!(
        sent[0].text.contains("could not decrypt") && sent[0].text.contains("Ezra"),
        "{}",
        sent[0].text
    );
    let (ok, out) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(
        !ok && out.contains("cannot decrypt"),
        "the failure is not in the audit:\n{out}"
    );
}

async fn a_room_encrypted_while_the_bridge_was_down_gets_no_cleartext() {
    let mut app = TestApp::spawn().await;
    let user = app.tg.add_user(7102, "Late", None, None);
    let puppet = app.puppet(7102);
    app.tg.inject_text(app.chat, &user, "before, in the clear");
    app.wait_from(&puppet, 1).await;
    app.stop();
    // While the bridge is down the room turns encryption on and Telegram gets a message. After
    // the restart that message can be bridged before the homeserver re-delivers the encryption
    // event: the bridge must read the room's state before its first send, not wait for it.
    app.encrypt_room().await;
    app.tg.inject_text(app.chat, &user, "after, encrypted");
    app.start().await;
    let element = Element::login(&app).await;
    element
        .wait_for(
            &puppet,
            |m| matches!(m, MessageType::Text(t) if t.body == "after, encrypted"),
        )
        .await;
    let raw = raw_from(&app, &puppet).await;
    let kinds: Vec<&str> = raw
        .iter()
        .filter(|e| e["type"] != "m.room.member")
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["m.room.message", "m.room.encrypted"], "{raw:#?}");
}

both!(
    an_encrypted_room_carries_text_and_files_both_ways_and_survives_a_restart,
    a_room_that_turns_encryption_on_keeps_working,
    a_message_the_bridge_cannot_decrypt_gets_a_notice_not_silence,
    a_room_encrypted_while_the_bridge_was_down_gets_no_cleartext,
);
