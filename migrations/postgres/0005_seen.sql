-- Every Matrix event id the homeserver delivered (or the bridge fetched itself), so an event
-- Synapse left unsent (see src/bridge/catch_up.rs) is found, bridged once, and ignored when it
-- is finally delivered. Pruned after 7 days.
CREATE TABLE mx_seen (
    event_id     TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);
CREATE INDEX mx_seen_by_room ON mx_seen (room_id, received_at);
