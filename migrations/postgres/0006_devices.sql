-- Devices of the bridge's own users in encrypted rooms (the bot and puppets), created once with
-- m.login.application_service and reused after a restart, so nobody has to verify them again.
-- The crypto stores (keys) live in files, in tgmx-crypto/<user>/.
CREATE TABLE e2ee_devices (
    user_id      TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL,
    access_token TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
