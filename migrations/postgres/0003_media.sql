-- Avatar of a puppet: the Telegram file_unique_id it was set from (changes trigger an update).
ALTER TABLE puppets ADD COLUMN avatar_id TEXT;

-- Reactions bridged between the platforms. `seq` stands for SQLite's rowid: the order in which
-- reactions were (re)placed (see `Store::latest_mx_reaction`).
CREATE TABLE reactions (
    tg_chat_id   BIGINT NOT NULL,
    tg_msg_id    INTEGER NOT NULL,
    -- the reacting person: telegram user id as text, or a Matrix user id
    reactor      TEXT NOT NULL,
    emoji        TEXT NOT NULL,
    mx_event_id  TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('tg_to_mx', 'mx_to_tg')),
    seq          BIGSERIAL NOT NULL,
    PRIMARY KEY (tg_chat_id, tg_msg_id, reactor, emoji)
);
CREATE UNIQUE INDEX reactions_by_event ON reactions (mx_event_id);
