-- Portals bridged before room details were taken from Telegram keep the name, topic and avatar
-- they have: they count as done (see `bridge::room_details`), only portals linked from now on
-- get the group's title, description and photo.
INSERT OR IGNORE INTO kv (key, value) SELECT 'room_details:' || tg_chat_id, mx_room_id FROM portals;
