-- Telegram groups that became supergroups: the old chat id answers nothing any more, the portal
-- (and the config, resolved through this table) follows the new one.
CREATE TABLE chat_upgrades (
    old_chat_id  INTEGER PRIMARY KEY,
    new_chat_id  INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
