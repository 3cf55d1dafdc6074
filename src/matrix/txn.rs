//! Matrix transaction ids of everything the bridge sends, built here and nowhere else.
//!
//! A homeserver deduplicates a sender's transaction id, so an id derived from what is being
//! bridged (Telegram ids, the event reacted to, the switch announced) makes a retry after a crash
//! a no-op. These strings are what earlier runs sent: changing one would double-post whatever is
//! retried across the upgrade.

use ruma::OwnedTransactionId;

fn id(s: String) -> OwnedTransactionId {
    OwnedTransactionId::from(s)
}

/// Lowercase hex of the bytes of `s` (emoji and event ids, which may hold any character).
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A Telegram message relayed into Matrix.
pub fn telegram_message(chat: i64, msg: i32) -> OwnedTransactionId {
    id(format!("tg{chat}_{msg}"))
}

/// Part `part` (1, 2, ...) of a Telegram message too large for one Matrix event (part 0 is
/// [`telegram_message`]).
pub fn telegram_message_part(chat: i64, msg: i32, part: usize) -> OwnedTransactionId {
    id(format!("tg{chat}_{msg}_p{part}"))
}

/// An edit of a Telegram message (one per edit time).
pub fn telegram_edit(chat: i64, msg: i32, edit_ts: i64) -> OwnedTransactionId {
    id(format!("tg{chat}_{msg}_e{edit_ts}"))
}

/// Part `part` of an edit of a Telegram message carried in parts (an edit of that part's event,
/// or a part the edit adds).
pub fn telegram_edit_part(chat: i64, msg: i32, edit_ts: i64, part: usize) -> OwnedTransactionId {
    id(format!("tg{chat}_{msg}_e{edit_ts}_p{part}"))
}

/// The redaction of part `part` of a Telegram message in parts that an edit made shorter.
pub fn telegram_edit_drop(chat: i64, msg: i32, edit_ts: i64, part: usize) -> OwnedTransactionId {
    id(format!("tg{chat}_{msg}_e{edit_ts}_d{part}"))
}

/// The bot's notice for a Telegram update that could not be read (`source`: its failure row).
pub fn unreadable_update(source: &str) -> OwnedTransactionId {
    id(format!("tgx_{}", source.replace(':', "_")))
}

/// A Telegram user's reaction `emoji` (reactor: their Telegram id) on a bridged message.
pub fn telegram_reaction(chat: i64, msg: i32, reactor: &str, emoji: &str) -> OwnedTransactionId {
    id(format!("tgr{chat}_{msg}_{reactor}_{}", hex(emoji)))
}

/// The redaction of a reaction event that was taken back on Telegram.
pub fn unreaction(reaction_event: &str) -> OwnedTransactionId {
    id(format!("unreact{}", hex(reaction_event)))
}

/// The ✓ marking the original of a pair of twin posts (both workers may send it).
pub fn twin_mark(event: &str) -> OwnedTransactionId {
    id(format!("twin{event}"))
}

/// A cutover announcement in the room of `chat` (or of its forum topic `topic`). Unique per
/// room: a transaction id is scoped to the sender's access token, not to the room (Conduit
/// answers a reused one with the first room's event).
pub fn announcement(switch_id: i64, chat: i64, topic: Option<i32>) -> OwnedTransactionId {
    match topic {
        Some(t) => id(format!("announce{switch_id}_{chat}_t{t}")),
        None => id(format!("announce{switch_id}_{chat}")),
    }
}

/// Answer `n` (0: the first) of the management room to the command `event` (a command handled
/// again after a crash is not answered twice).
pub fn management_reply(event: &str, n: u32) -> OwnedTransactionId {
    id(format!("mgmt{}_{n}", hex(event)))
}

/// `tgmx rollcall`'s question (a new one each run).
pub fn rollcall(now_ms: i64) -> OwnedTransactionId {
    id(format!("rollcall{now_ms}"))
}

/// The transaction id of `tgmx check`'s appservice ping (a new one each run).
pub fn check_ping(now_ms: i64) -> String {
    format!("tgmx-check-{now_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_ones_earlier_runs_sent() {
        assert_eq!(telegram_message(-100123, 7).as_str(), "tg-100123_7");
        assert_eq!(
            telegram_edit(-100123, 7, 1700000000).as_str(),
            "tg-100123_7_e1700000000"
        );
        assert_eq!(unreadable_update("partly:-1:2").as_str(), "tgx_partly_-1_2");
        assert_eq!(telegram_reaction(-1, 2, "42", "👍").as_str(), "tgr-1_2_42_f09f918d");
        assert_eq!(unreaction("$ab").as_str(), "unreact246162");
        assert_eq!(twin_mark("$ev").as_str(), "twin$ev");
        assert_eq!(announcement(3, -1, None).as_str(), "announce3_-1");
        assert_eq!(announcement(3, -1, Some(5)).as_str(), "announce3_-1_t5");
        assert_eq!(rollcall(5).as_str(), "rollcall5");
        assert_eq!(check_ping(5), "tgmx-check-5");
    }
}
