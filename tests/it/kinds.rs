//! Nothing is dropped silently from Matrix: a sticker goes to Telegram as a photo, a location as
//! a venue, a poll as a native poll (or as text when Telegram's limits do not allow one), and an
//! event the bridge cannot carry becomes a notice in the chat and a row for `tgmx audit`; a
//! Telegram video note arrives as a video.

use serde_json::json;

use crate::harness::TestApp;

async fn a_matrix_sticker_location_and_polls_reach_telegram_and_the_rest_is_a_notice() {
    let app = TestApp::spawn().await;
    let png = vec![9u8; 5_000];
    let url = app.ezra.upload(png.clone(), "image/png", "sticker.png").await;
    app.ezra
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/send/m.sticker/s1", urlencode(&app.room)),
            Some(json!({"body": "thumbs up", "url": url, "info": {"mimetype": "image/png", "size": png.len(), "w": 256, "h": 256}})),
        )
        .await
        .unwrap();
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.location", "body": "Rally point", "geo_uri": "geo:52.52,13.405;u=10"}),
        )
        .await;
    let poll = |q: &str, n: usize| {
        json!({"org.matrix.msc3381.poll.start": {
            "question": {"org.matrix.msc1767.text": q},
            "kind": "org.matrix.msc3381.poll.disclosed", "max_selections": 1,
            "answers": (0..n).map(|i| json!({"id": format!("a{i}"), "org.matrix.msc1767.text": format!("option {i}")})).collect::<Vec<_>>()},
            "org.matrix.msc1767.text": q})
    };
    for (txn, content) in [("p1", poll("Deploy tonight?", 2)), ("p2", poll("Which region?", 12))] {
        app.ezra
            .call(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/org.matrix.msc3381.poll.start/{txn}",
                    urlencode(&app.room)
                ),
                Some(content),
            )
            .await
            .unwrap();
    }
    app.ezra
        .call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/org.example.widget/w1",
                urlencode(&app.room)
            ),
            Some(json!({"body": "a widget only Element shows"})),
        )
        .await
        .unwrap();
    let sentinel = app.sentinel_from_matrix().await;
    let sent = app.sent_before(&sentinel);
    let methods: Vec<&str> = sent.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        methods,
        ["sendPhoto", "sendVenue", "sendPoll", "sendMessage", "sendMessage"],
        "{sent:#?}"
    );
    assert!(sent[0].file.as_ref().is_some_and(|f| f.bytes == png), "sticker bytes");
    assert_eq!(sent[1].rendered_text, "Ezra\nRally point");
    assert_eq!(sent[1].entities, vec![json!({"latitude": 52.52, "longitude": 13.405})]);
    assert_eq!(sent[2].rendered_text, "Ezra: Deploy tonight?\noption 0\noption 1");
    assert!(
        sent[3]
            .rendered_text
            .starts_with("Ezra started a poll: Which region?\n• option 0"),
        "{}",
        sent[3].rendered_text
    );
    assert!(sent[3].rendered_text.contains("• option 11"));
    assert_eq!(
        sent[4].rendered_text,
        "Ezra sent a org.example.widget event the bridge cannot carry"
    );
    let (ok, audit) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(!ok, "{audit}");
    assert!(
        audit.contains("NOT DELIVERED") && audit.contains("org.example.widget: not carried"),
        "{audit}"
    );
}

async fn a_telegram_video_note_arrives_as_a_video() {
    let app = TestApp::spawn().await;
    let user = app.tg.add_user(1801, "Lark", None, None);
    let bytes = vec![3u8; 30_000];
    let file = app.tg.add_file(bytes.clone());
    let mut note = app.tg.file_meta(&file).unwrap();
    note["length"] = json!(240);
    note["duration"] = json!(4);
    app.tg.inject_media(app.chat, &user, json!({"video_note": note}));
    let got = app.wait_from(&app.puppet(1801), 1).await;
    let c = &got[0]["content"];
    assert_eq!(c["msgtype"], "m.video", "{c}");
    assert_eq!(
        (c["info"]["w"].as_u64(), c["info"]["duration"].as_u64()),
        (Some(240), Some(4000))
    );
    assert_eq!(app.ezra.download(c["url"].as_str().unwrap()).await, bytes);
}

async fn a_telegram_caption_edit_edits_the_matrix_caption_and_keeps_the_file() {
    let app = TestApp::spawn().await;
    let user = app.tg.add_user(1802, "Wren", None, None);
    let photo = app
        .tg
        .inject_photo(app.chat, &user, vec![5u8; 4_000], 640, 480, Some("first caption"));
    let puppet = app.puppet(1802);
    let got = app.wait_from(&puppet, 1).await;
    let url = got[0]["content"]["url"].clone();
    assert_eq!(got[0]["content"]["body"], "first caption");
    app.tg.inject_edit(app.chat, photo, "second caption");
    let edits = app
        .ezra
        .wait_messages(&app.room, 1, std::time::Duration::from_secs(60), {
            let puppet = puppet.clone();
            move |e| e["sender"] == puppet.as_str() && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    let new = &edits[0]["content"]["m.new_content"];
    assert_eq!(new["msgtype"], "m.image", "{new}");
    assert_eq!(new["body"], "second caption");
    assert_eq!(new["url"], url, "the file stays");
}

/// Telegram kinds without a Matrix twin arrive as the nearest kind, never as nothing: a
/// sticker as an image, an animation as a video, a location as `m.location`, a contact, a poll
/// and a dice roll as text.
async fn telegram_stickers_animations_places_contacts_polls_and_dice_all_arrive() {
    let app = TestApp::spawn().await;
    let user = app.tg.add_user(1803, "Finch", None, None);
    let file = |bytes: Vec<u8>, extra: serde_json::Value| {
        let mut meta = app.tg.file_meta(&app.tg.add_file(bytes)).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            meta[k] = v.clone();
        }
        meta
    };
    let sticker = file(
        b"RIFF....WEBP".to_vec(),
        json!({"width": 512, "height": 512, "type": "regular", "is_animated": false, "is_video": false, "emoji": "🙂"}),
    );
    let animation = file(
        vec![1u8; 3_000],
        json!({"width": 320, "height": 240, "duration": 2, "mime_type": "video/mp4"}),
    );
    app.tg.inject_media(app.chat, &user, json!({"sticker": sticker}));
    app.tg
        .inject_media(app.chat, &user, json!({"animation": animation, "document": animation}));
    app.tg.inject_media(
        app.chat,
        &user,
        json!({"location": {"latitude": 52.5, "longitude": 13.4}}),
    );
    app.tg.inject_media(
        app.chat,
        &user,
        json!({"contact": {"phone_number": "+491234", "first_name": "Ops", "last_name": "Desk"}}),
    );
    app.tg.inject_media(
        app.chat,
        &user,
        json!({"poll": {"id": "p1", "question": "Ship it?", "options": [{"text": "yes", "voter_count": 0}, {"text": "no", "voter_count": 0}],
            "total_voter_count": 0, "is_closed": false, "is_anonymous": true, "type": "regular", "allows_multiple_answers": false}}),
    );
    app.tg
        .inject_media(app.chat, &user, json!({"dice": {"emoji": "🎲", "value": 4}}));
    let got = app.wait_from(&app.puppet(1803), 6).await;
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e["content"]["msgtype"].as_str().unwrap_or(""), crate::harness::body(e)))
        .collect();
    assert_eq!(kinds[0].0, "m.image", "{kinds:?}");
    assert_eq!(kinds[1].0, "m.video", "{kinds:?}");
    assert_eq!(kinds[2].0, "m.location", "{kinds:?}");
    assert_eq!(got[2]["content"]["geo_uri"], "geo:52.5,13.4");
    assert_eq!(kinds[3], ("m.text", "Contact: Ops Desk +491234"));
    assert_eq!(kinds[4], ("m.text", "Poll: Ship it?\n• yes\n• no"));
    assert_eq!(kinds[5], ("m.text", "rolled a 4"));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

both!(
    a_matrix_sticker_location_and_polls_reach_telegram_and_the_rest_is_a_notice,
    a_telegram_video_note_arrives_as_a_video,
    a_telegram_caption_edit_edits_the_matrix_caption_and_keeps_the_file,
    telegram_stickers_animations_places_contacts_polls_and_dice_all_arrive,
);
