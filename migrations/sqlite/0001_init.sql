-- Bridged rooms: one Matrix room per Telegram chat.
CREATE TABLE portals (
    tg_chat_id   INTEGER PRIMARY KEY,
    mx_room_id   TEXT NOT NULL UNIQUE,
    mx_alias     TEXT,
    created_at   INTEGER NOT NULL
);

-- Telegram users and their Matrix puppets.
CREATE TABLE puppets (
    tg_user_id   INTEGER PRIMARY KEY,
    mxid         TEXT NOT NULL UNIQUE,
    displayname  TEXT,
    registered   INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);

-- Rooms a Matrix user acting for the bridge (puppet or double puppet) is known to be joined to.
CREATE TABLE memberships (
    mxid         TEXT NOT NULL,
    mx_room_id   TEXT NOT NULL,
    PRIMARY KEY (mxid, mx_room_id)
);

-- Message map: one Telegram message <-> one Matrix event.
CREATE TABLE messages (
    tg_chat_id   INTEGER NOT NULL,
    tg_msg_id    INTEGER NOT NULL,
    mx_room_id   TEXT NOT NULL,
    mx_event_id  TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('tg_to_mx', 'mx_to_tg')),
    sender       TEXT NOT NULL,
    -- when the original was sent on its platform, and when the bridge delivered it (unix ms)
    sent_at      INTEGER NOT NULL,
    bridged_at   INTEGER NOT NULL,
    PRIMARY KEY (tg_chat_id, tg_msg_id)
);
CREATE UNIQUE INDEX messages_by_event ON messages (mx_event_id);
CREATE INDEX messages_by_time ON messages (bridged_at);

-- Appservice transactions already accepted (duplicates are no-ops).
CREATE TABLE mx_transactions (
    txn_id       TEXT PRIMARY KEY,
    received_at  INTEGER NOT NULL
);

-- Matrix events accepted but not yet bridged, in arrival order.
CREATE TABLE mx_inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id       TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);

-- Telegram updates stored before their offset is confirmed, not yet bridged.
CREATE TABLE tg_inbox (
    update_id    INTEGER PRIMARY KEY,
    update_json  TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);

-- Things the bridge could not deliver, with the reason (for audit).
CREATE TABLE failures (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    direction    TEXT NOT NULL,
    source_ref   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at           INTEGER NOT NULL
);

-- Small persistent state: telegram offset, etc.
CREATE TABLE kv (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL
);
