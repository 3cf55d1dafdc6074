//! The `gateway:` block of the agents' configs (issue 18 point 6): `gateway.matrix.homeserver`
//! stands for `homeserver.url`, `gateway.matrix.rooms` must name bridged rooms, and anything else
//! is refused naming the key.

use std::time::Duration;

use crate::harness::TestApp;

/// The slot's config (`text`) with its homeserver URL given as `gateway.matrix.homeserver` and
/// the rooms `gateway.matrix.rooms` lists, as an agent's config has them.
fn seed_shaped(app: &TestApp, text: &str, rooms: &str) -> String {
    let url_key = format!("homeserver: {{url: \"{}\", server_name: localhost}}", app.hs_url);
    assert!(text.contains(&url_key), "{text}");
    text.replace(&url_key, "homeserver: {server_name: localhost}").replace(
        "  fallback_platform: matrix\n",
        &format!(
            "  fallback_platform: matrix\n  matrix:\n    enabled: true\n    homeserver: \"{}\"\n    rooms: {rooms}\n",
            app.hs_url
        ),
    )
}

async fn the_seeds_gateway_block_runs_the_bridge_and_wrong_keys_are_named() {
    let mut app = TestApp::prepare().await;
    let base = std::fs::read_to_string(app.config_path()).unwrap();
    // A room that is not bridged: refused, naming the key and the room.
    let stray = "#not-bridged:localhost";
    let text = seed_shaped(&app, &base, &format!("[\"{}\", \"{stray}\"]", app.room));
    std::fs::write(app.config_path(), &text).unwrap();
    let (ok, out) = app.cli(&["check-config"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("`gateway.matrix.rooms[1]` (line ") && out.contains(&format!("{stray} is not bridged")),
        "{out}"
    );
    // A key of the agents' config that means nothing here: refused by its name.
    std::fs::write(
        app.config_path(),
        text.replace(
            "    enabled: true\n    homeserver",
            "    enabled: true\n    access_token: x\n    homeserver",
        ),
    )
    .unwrap();
    let (ok, out) = app.cli(&["check-config"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("`gateway.matrix.access_token` (line ") && out.contains("unknown key"),
        "{out}"
    );

    // The aliases alone: the bridge runs on them.
    std::fs::write(
        app.config_path(),
        seed_shaped(&app, &base, &format!("[\"{}\"]", app.room)),
    )
    .unwrap();
    let (ok, out) = app.cli(&["check-config"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("homeserver: url {}", app.hs_url)), "{out}");
    app.start().await;
    let user = app.tg.add_user(6301, "Wren", None, None);
    app.tg.inject_text(app.chat, &user, "seeded");
    let got = app.wait_from(&app.puppet(6301), 1).await;
    assert_eq!(crate::harness::body(&got[0]), "seeded");
    app.ezra.send_text(&app.room, "and back").await;
    app.tg.wait_sent(app.chat, 1, Duration::from_secs(60)).await;
}

both!(the_seeds_gateway_block_runs_the_bridge_and_wrong_keys_are_named);
