-- What the readiness gates of `tgmx status` need that `messages` does not say (issue 18).

-- Files that crossed, by kind (`voice`, `file`, `photo`, `audio`, `video`, ...). The original is
-- `tg:<chat id>:<message id>` (Telegram -> Matrix) or its Matrix event id (Matrix -> Telegram);
-- a row counts once the message's row in `messages` says it was delivered.
CREATE TABLE message_files (
    direction    TEXT NOT NULL CHECK (direction IN ('tg_to_mx', 'mx_to_tg')),
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (direction, source)
);

-- Every `tgmx rollcall`, kept: when, in which room (and chat, when it was asked on Telegram
-- too), how many agents were called, and who answered, on which side, how fast.
CREATE TABLE rollcalls (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    room         TEXT NOT NULL,
    tg_chat_id   INTEGER,
    agents       INTEGER NOT NULL,
    timeout_secs INTEGER NOT NULL
);
CREATE TABLE rollcall_answers (
    rollcall_id  INTEGER NOT NULL REFERENCES rollcalls (id),
    agent        TEXT NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('matrix', 'telegram')),
    after_ms     INTEGER NOT NULL,
    PRIMARY KEY (rollcall_id, agent)
);
