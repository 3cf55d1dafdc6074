-- Forum topics. A portal is a chat, or one topic of a forum supergroup: `tg_thread_id` is the
-- topic's message_thread_id, 0 for the chat as a whole (every portal linked before this version).
CREATE TABLE portals_by_place (
    tg_chat_id   INTEGER NOT NULL,
    tg_thread_id INTEGER NOT NULL DEFAULT 0,
    mx_room_id   TEXT NOT NULL UNIQUE,
    mx_alias     TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tg_chat_id, tg_thread_id)
);
INSERT INTO portals_by_place (tg_chat_id, tg_thread_id, mx_room_id, mx_alias, created_at)
    SELECT tg_chat_id, 0, mx_room_id, mx_alias, created_at FROM portals;
DROP TABLE portals;
ALTER TABLE portals_by_place RENAME TO portals;

-- The topic a Telegram message was in (NULL: none, or not known), so that a Matrix reply to it
-- from a room that shows several topics is posted in the same topic.
ALTER TABLE messages ADD COLUMN tg_thread_id INTEGER;

-- Topic names, as learnt from the service messages that create and rename topics (the Bot API
-- has no method to read them), shown with messages of topics that have no room of their own.
CREATE TABLE forum_topics (
    tg_chat_id   INTEGER NOT NULL,
    tg_thread_id INTEGER NOT NULL,
    name         TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tg_chat_id, tg_thread_id)
);
