-- A message too long for the other side is carried in parts: the first part is the message's
-- row in `messages`; every part (the first too) is a row here, written as soon as it is sent,
-- so a retry after a crash sends only the parts still missing. Matrix -> Telegram: each part is
-- a Telegram message of the same event (`part_event_id` = `mx_event_id`). Telegram -> Matrix:
-- each part is a Matrix event of the same Telegram message.
CREATE TABLE message_parts (
    mx_event_id   TEXT NOT NULL,
    part          BIGINT NOT NULL,
    tg_chat_id    BIGINT NOT NULL,
    tg_msg_id     INTEGER NOT NULL,
    part_event_id TEXT NOT NULL,
    PRIMARY KEY (mx_event_id, part)
);
CREATE INDEX message_parts_by_tg ON message_parts (tg_chat_id, tg_msg_id);
-- Which part of a long message a send intent is for (0: the first, or a message in one part).
ALTER TABLE tg_send_intents ADD COLUMN part BIGINT NOT NULL DEFAULT 0;
