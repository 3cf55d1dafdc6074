-- The schema of migrations/sqlite/, in PostgreSQL's dialect: the same tables, columns and
-- versions. Integer columns the bridge reads as i64 are BIGINT, those it reads as i32 (Telegram
-- message ids) INTEGER; SQLite's AUTOINCREMENT keys are BIGSERIAL.

-- Bridged rooms: one Matrix room per Telegram chat.
CREATE TABLE portals (
    tg_chat_id   BIGINT PRIMARY KEY,
    mx_room_id   TEXT NOT NULL UNIQUE,
    mx_alias     TEXT,
    created_at   BIGINT NOT NULL
);

-- Telegram users and their Matrix puppets.
CREATE TABLE puppets (
    tg_user_id   BIGINT PRIMARY KEY,
    mxid         TEXT NOT NULL UNIQUE,
    displayname  TEXT,
    registered   BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL
);

-- Rooms a Matrix user acting for the bridge (puppet or double puppet) is known to be joined to.
CREATE TABLE memberships (
    mxid         TEXT NOT NULL,
    mx_room_id   TEXT NOT NULL,
    PRIMARY KEY (mxid, mx_room_id)
);

-- Message map: one Telegram message <-> one Matrix event.
CREATE TABLE messages (
    tg_chat_id   BIGINT NOT NULL,
    tg_msg_id    INTEGER NOT NULL,
    mx_room_id   TEXT NOT NULL,
    mx_event_id  TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('tg_to_mx', 'mx_to_tg')),
    sender       TEXT NOT NULL,
    -- when the original was sent on its platform, and when the bridge delivered it (unix ms)
    sent_at      BIGINT NOT NULL,
    bridged_at   BIGINT NOT NULL,
    PRIMARY KEY (tg_chat_id, tg_msg_id)
);
CREATE UNIQUE INDEX messages_by_event ON messages (mx_event_id);
CREATE INDEX messages_by_time ON messages (bridged_at);

-- Appservice transactions already accepted (duplicates are no-ops).
CREATE TABLE mx_transactions (
    txn_id       TEXT PRIMARY KEY,
    received_at  BIGINT NOT NULL
);

-- Matrix events accepted but not yet bridged, in arrival order.
CREATE TABLE mx_inbox (
    seq          BIGSERIAL PRIMARY KEY,
    txn_id       TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);

-- Telegram updates stored before their offset is confirmed, not yet bridged.
CREATE TABLE tg_inbox (
    update_id    BIGINT PRIMARY KEY,
    update_json  TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);

-- Things the bridge could not deliver, with the reason (for audit).
CREATE TABLE failures (
    id           BIGSERIAL PRIMARY KEY,
    direction    TEXT NOT NULL,
    source_ref   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at           BIGINT NOT NULL
);

-- Small persistent state: telegram offset, etc.
CREATE TABLE kv (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
