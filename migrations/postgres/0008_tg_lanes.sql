-- Telegram -> Matrix lanes: each stored update is bridged in its chat's lane (NULL: an update
-- without a chat, and rows stored before this migration; they form one lane of their own).
ALTER TABLE tg_inbox ADD COLUMN chat_id BIGINT;
CREATE INDEX tg_inbox_by_chat ON tg_inbox (chat_id, update_id);
