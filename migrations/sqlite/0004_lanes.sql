-- Matrix events are bridged per room (one ordered worker each), so one busy or rate-limited
-- Telegram group does not hold up the others.
ALTER TABLE mx_inbox ADD COLUMN room_id TEXT NOT NULL DEFAULT '';
CREATE INDEX mx_inbox_by_room ON mx_inbox (room_id, seq);
