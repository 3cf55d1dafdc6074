//! Long outputs are never lost: a Matrix message over Telegram's 4096 characters (counted as
//! Telegram counts, UTF-16 after entity parsing) crosses in parts cut at paragraph, line or word
//! boundaries, and its edits and redaction follow every part; a caption over 1024 goes with the
//! file and the rest as text; a Telegram message too large for one Matrix event crosses in parts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestApp, body, eventually};

const T: Duration = Duration::from_secs(60);

/// The words of a text (whitespace differs: Telegram trims each part).
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// A paragraph of `n` words, each with an emoji (two UTF-16 units) and an escaped character.
fn paragraph(tag: &str, n: usize) -> String {
    (0..n).map(|i| format!("{tag}{i}😀<&>")).collect::<Vec<_>>().join(" ")
}

async fn a_long_matrix_message_arrives_in_parts_and_its_edit_and_redaction_follow() {
    let app = TestApp::spawn().await;
    let text = [
        paragraph("alpha", 200),
        paragraph("beta", 200),
        paragraph("gamma", 200),
        paragraph("omega", 200),
    ]
    .join("\n\n");
    assert!(text.encode_utf16().count() > 2 * 4096);
    let event = app
        .ezra
        .send(&app.room, json!({"msgtype": "m.text", "body": text}))
        .await;
    let sentinel = app.sentinel_from_matrix().await;
    let sent = app.sent_before(&sentinel);
    assert!(sent.len() >= 3, "{} parts", sent.len());
    // Each part is within Telegram's limit (the fake refuses longer ones) and nothing is lost:
    // the parts' text, in order, is the message.
    let joined = sent
        .iter()
        .map(|s| s.rendered_text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(words(&joined), words(&format!("Ezra: {text}")));
    // Cut at the paragraph breaks, not inside a word.
    assert!(sent[0].rendered_text.ends_with("alpha199😀<&>"), "{}", sent[0].text);
    assert!(sent[0].text.starts_with("<b>Ezra</b>: alpha0"), "{}", sent[0].text);

    // An edit to a shorter text edits the first part and deletes the others.
    let event_id = event.clone();
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "* short now",
                "m.new_content": {"msgtype": "m.text", "body": "short now"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}}),
        )
        .await;
    let first = sent[0].message_id;
    let rest: Vec<i32> = sent[1..].iter().map(|s| s.message_id).collect();
    let tg = app.tg.clone();
    eventually("the edit and the deletion of the other parts", T, async || {
        let edited = tg
            .edits(app.chat)
            .iter()
            .any(|(m, t)| *m == first && t == "<b>Ezra</b>: short now");
        let deleted = tg.deleted(app.chat);
        edited && rest.iter().all(|m| deleted.contains(m))
    })
    .await;

    // A long message redacted: every part is deleted.
    let long = app
        .ezra
        .send(&app.room, json!({"msgtype": "m.text", "body": paragraph("delta", 900)}))
        .await;
    let sentinel2 = app.sentinel_from_matrix().await;
    let parts = app.sent_between(&sentinel, &sentinel2);
    assert!(parts.len() >= 2, "{parts:?}");
    app.ezra.redact(&app.room, &long).await;
    eventually("every part deleted", T, async || {
        let deleted = tg.deleted(app.chat);
        parts.iter().all(|m| deleted.contains(m))
    })
    .await;
}

/// A short message edited into a long one: the first message is edited, the rest sent as new
/// parts, and a later redaction deletes them all.
async fn a_short_message_edited_into_a_long_one_grows_parts() {
    let app = TestApp::spawn().await;
    let event = app.ezra.send_text(&app.room, "short at first").await;
    let first = app.sentinel_from_matrix().await;
    let original = app.sent_before(&first);
    assert_eq!(original.len(), 1);
    let long = [paragraph("grow", 200), paragraph("more", 200)].join("\n\n");
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": format!("* {long}"),
                "m.new_content": {"msgtype": "m.text", "body": long},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event}}),
        )
        .await;
    let second = app.sentinel_from_matrix().await;
    let added = app.sent_between(&first, &second);
    assert!(!added.is_empty(), "the rest went as new parts");
    let edits = app.tg.edits(app.chat);
    let edited = edits
        .iter()
        .find(|(m, _)| *m == original[0].message_id)
        .expect("first part edited");
    assert!(edited.1.starts_with("<b>Ezra</b>: grow0"), "{}", edited.1);
    app.ezra.redact(&app.room, &event).await;
    let tg = app.tg.clone();
    let all: Vec<i32> = std::iter::once(original[0].message_id).chain(added).collect();
    eventually("every part deleted", T, async || {
        let deleted = tg.deleted(app.chat);
        all.iter().all(|m| deleted.contains(m))
    })
    .await;
    // The parts the edit added left no send intent behind: nothing to report.
    let (ok, audit) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(ok && !audit.contains("MAY SHOW TWICE"), "{audit}");
}

async fn a_caption_over_1024_goes_with_the_file_and_the_rest_as_text() {
    let app = TestApp::spawn().await;
    let img = vec![7u8; 20_000];
    let url = app.ezra.upload(img.clone(), "image/png", "chart.png").await;
    let caption = paragraph("cap", 250);
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.image", "body": caption, "filename": "chart.png", "url": url,
                "info": {"mimetype": "image/png", "size": img.len()}}),
        )
        .await;
    let sentinel = app.sentinel_from_matrix().await;
    let sent = app.sent_before(&sentinel);
    assert_eq!(sent[0].method, "sendPhoto");
    assert!(sent[0].file.as_ref().is_some_and(|f| f.bytes == img));
    assert!(
        sent.len() >= 2 && sent[1..].iter().all(|s| s.method == "sendMessage"),
        "{sent:?}"
    );
    assert!(sent[0].rendered_text.encode_utf16().count() <= 1024);
    let joined = sent
        .iter()
        .map(|s| s.rendered_text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(words(&joined), words(&format!("Ezra: {caption}")));
}

/// Telegram user `user` posts a message too large for one Matrix event: 4000 one-character
/// links, about 250 KB of Matrix HTML for 4000 characters of text. Returns its author, its text,
/// its Telegram id, and the Matrix events it arrived as (waited for with a sentinel).
async fn post_too_large(app: &TestApp, user: i64) -> (crate::fake_telegram::TgUser, String, i32, Vec<Value>) {
    let from = app.tg.add_user(user, "Quill", None, None);
    let text: String = (0..4000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let entities: Vec<_> = (0..4000)
        .map(|i| json!({"type": "text_link", "offset": i, "length": 1, "url": format!("https://example.org/docs/section/{i}")}))
        .collect();
    let msg = app.tg.inject_message(app.chat, &from, &text, json!(entities), None);
    let sentinel = app.sentinel_from_telegram(&from).await;
    let puppet = app.puppet(user);
    let got = app
        .ezra
        .messages(&app.room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == puppet.as_str() && e["event_id"] != sentinel["event_id"])
        .collect();
    (from, text, msg, got)
}

async fn a_telegram_message_too_large_for_one_matrix_event_arrives_in_parts() {
    let app = TestApp::spawn().await;
    let (_, text, _, got) = post_too_large(&app, 1701).await;
    assert!(got.len() >= 5, "{} parts", got.len());
    let joined: String = got.iter().map(body).collect();
    assert_eq!(joined, text);
    for e in &got {
        let html = e["content"]["formatted_body"].as_str().unwrap_or_default();
        assert!(
            html.starts_with("<a href=\"https://example.org/docs/section/"),
            "{html:.80}"
        );
        assert!(e.to_string().len() < 65_536);
    }
}

/// A Telegram edit of a message carried to Matrix in parts edits the parts (here: the first, with
/// the whole new text) and redacts those it no longer needs.
async fn a_telegram_edit_of_a_message_in_parts_edits_and_drops_parts() {
    let app = TestApp::spawn().await;
    let (user, _, msg, got) = post_too_large(&app, 1702).await;
    let parts: Vec<String> = got.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());

    app.tg.inject_edit(app.chat, msg, "short now");
    app.sentinel_from_telegram(&user).await;
    let events = app.ezra.events(&app.room).await;
    let edits: Vec<&Value> = events
        .iter()
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .collect();
    assert_eq!(edits.len(), 1, "{edits:#?}");
    assert_eq!(edits[0]["content"]["m.relates_to"]["event_id"], parts[0].as_str());
    assert_eq!(edits[0]["content"]["m.new_content"]["body"], "short now");
    let redacted: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.redaction")
        .filter_map(|e| e["redacts"].as_str().or(e["content"]["redacts"].as_str()))
        .collect();
    for part in &parts[1..] {
        assert!(redacted.contains(&part.as_str()), "{part} not redacted: {redacted:?}");
    }
}

both!(
    a_telegram_edit_of_a_message_in_parts_edits_and_drops_parts,
    a_long_matrix_message_arrives_in_parts_and_its_edit_and_redaction_follow,
    a_short_message_edited_into_a_long_one_grows_parts,
    a_caption_over_1024_goes_with_the_file_and_the_rest_as_text,
    a_telegram_message_too_large_for_one_matrix_event_arrives_in_parts,
);
