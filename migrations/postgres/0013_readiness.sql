-- What the readiness gates of `tgmx status` need that `messages` does not say (issue 18).

-- Files that crossed, by kind (`voice`, `file`, `photo`, `audio`, `video`, ...). The original is
-- `tg:<chat id>:<message id>` (Telegram -> Matrix) or its Matrix event id (Matrix -> Telegram);
-- a row counts once the message's row in `messages` says it was delivered.
CREATE TABLE message_files (
    direction    TEXT NOT NULL CHECK (direction IN ('tg_to_mx', 'mx_to_tg')),
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (direction, source)
);

-- Every `tgmx rollcall`, kept: when, in which room (and chat, when it was asked on Telegram
-- too), how many agents were called, and who answered, on which side, how fast.
CREATE TABLE rollcalls (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    room         TEXT NOT NULL,
    tg_chat_id   BIGINT,
    agents       BIGINT NOT NULL,
    timeout_secs BIGINT NOT NULL
);
CREATE TABLE rollcall_answers (
    rollcall_id  BIGINT NOT NULL REFERENCES rollcalls (id),
    agent        TEXT NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('matrix', 'telegram')),
    after_ms     BIGINT NOT NULL,
    PRIMARY KEY (rollcall_id, agent)
);
