-- Matrix -> Telegram sends in flight. A row is written before `sendMessage` (or a media send)
-- and removed in the same transaction that writes the message link. A row found on the next
-- attempt means an earlier attempt may have reached Telegram (a crash, or a request whose answer
-- was lost): the message is sent again and the possible repeat is recorded for `tgmx audit`.
CREATE TABLE tg_send_intents (
    mx_event_id TEXT PRIMARY KEY,
    tg_chat_id  INTEGER NOT NULL,
    started_at  INTEGER NOT NULL
);
