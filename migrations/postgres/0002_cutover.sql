-- Mode switches (parallel / cutover / standby), newest last. The first row is the initial mode.
CREATE TABLE mode_switches (
    id           BIGSERIAL PRIMARY KEY,
    from_mode    TEXT,
    to_mode      TEXT NOT NULL,
    at           BIGINT NOT NULL,
    reason       TEXT NOT NULL
);

-- Announcements owed for a switch, one per target ('tg:<chat id>' or 'mx:<room id>');
-- done_at is set once posted (and pinned), so a restart finishes but never repeats them.
-- `target` sorts bytewise (COLLATE "C"), as in SQLite.
CREATE TABLE announcements (
    switch_id    BIGINT NOT NULL REFERENCES mode_switches (id),
    target       TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL,
    tg_msg_id    INTEGER,
    done_at      BIGINT,
    PRIMARY KEY (switch_id, target)
);

-- Recent posts of mapped identities, for cross-side duplicate suppression.
CREATE TABLE echo_watch (
    platform     TEXT NOT NULL CHECK (platform IN ('telegram', 'matrix')),
    ref          TEXT NOT NULL,
    identity     TEXT NOT NULL,
    tg_chat_id   BIGINT NOT NULL,
    norm         TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    PRIMARY KEY (platform, ref)
);
CREATE INDEX echo_watch_lookup ON echo_watch (identity, tg_chat_id, norm);
