-- Mode switches (parallel / cutover / standby), newest last. The first row is the initial mode.
CREATE TABLE mode_switches (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    from_mode    TEXT,
    to_mode      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    reason       TEXT NOT NULL
);

-- Announcements owed for a switch, one per target ('tg:<chat id>' or 'mx:<room id>');
-- done_at is set once posted (and pinned), so a restart finishes but never repeats them.
CREATE TABLE announcements (
    switch_id    INTEGER NOT NULL REFERENCES mode_switches (id),
    target       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    tg_msg_id    INTEGER,
    done_at      INTEGER,
    PRIMARY KEY (switch_id, target)
);

-- Recent posts of mapped identities, for cross-side duplicate suppression.
CREATE TABLE echo_watch (
    platform     TEXT NOT NULL CHECK (platform IN ('telegram', 'matrix')),
    ref          TEXT NOT NULL,
    identity     TEXT NOT NULL,
    tg_chat_id   INTEGER NOT NULL,
    norm         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    PRIMARY KEY (platform, ref)
);
CREATE INDEX echo_watch_lookup ON echo_watch (identity, tg_chat_id, norm);
