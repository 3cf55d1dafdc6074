//! Reading a stored update leniently: a part the bridge cannot read (an entity of a type newer
//! than teloxide, a link the `url` crate rejects, a negative offset, a link scheme that is not
//! safe in Matrix HTML) is left out and named, and the rest of the message is carried. An update
//! that cannot be read at all still yields what can be recovered from the raw JSON (chat, sender,
//! text), so the bridge can say so in the room and in `tgmx audit`.

use serde_json::Value;
use teloxide::types::{MessageEntity, MessageEntityKind, Update, UpdateKind};

/// Link schemes Matrix clients accept in `formatted_body` (spec: "Extensions to m.room.message
/// msgtypes", allowed `href` schemes). Any other link is carried as its text only.
pub const SAFE_LINK_SCHEMES: [&str; 5] = ["https", "http", "ftp", "mailto", "magnet"];

/// An update as far as it could be read.
#[derive(Debug)]
pub struct ReadUpdate {
    /// `update_id`, when the update has one.
    pub id: Option<i64>,
    /// The update, with unreadable parts left out; `None` if it could not be read at all.
    pub update: Option<Update>,
    /// What was left out, for the audit ("an entity of unknown type `x`").
    pub dropped: Vec<String>,
    /// Why the update could not be read, when `update` is `None`.
    pub error: Option<String>,
    /// What could be recovered from an unreadable message: (chat id, sender name, text).
    pub salvage: Option<Salvage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Salvage {
    pub chat: Option<i64>,
    pub message_id: Option<i64>,
    pub from: Option<String>,
    pub text: Option<String>,
}

/// Read one update from its JSON text. Fails only when the text is not JSON at all.
pub fn read_update(json: &str) -> Result<ReadUpdate, serde_json::Error> {
    let mut raw: Value = serde_json::from_str(json)?;
    let id = raw.get("update_id").and_then(Value::as_i64);
    let mut dropped = Vec::new();
    for key in ["message", "edited_message"] {
        if let Some(m) = raw.get_mut(key) {
            clean_message(m, &mut dropped, true);
        }
    }
    // From text, not from the `Value`: teloxide's update parser borrows its keys.
    let parsed = serde_json::from_str::<Update>(&raw.to_string());
    let (update, error) = match parsed {
        Ok(u) if !matches!(u.kind, UpdateKind::Error(_)) => (Some(u), None),
        Ok(_) => (None, Some(message_error(&raw))),
        Err(e) => (None, Some(e.to_string())),
    };
    let salvage = update.is_none().then(|| salvage(&raw)).flatten();
    Ok(ReadUpdate {
        id,
        update,
        dropped,
        error,
        salvage,
    })
}

/// Why the message of an update that teloxide turned into `UpdateKind::Error` does not parse.
fn message_error(raw: &Value) -> String {
    for key in ["message", "edited_message"] {
        if let Some(m) = raw.get(key)
            && let Err(e) = serde_json::from_str::<teloxide::types::Message>(&m.to_string())
        {
            return format!("`{key}`: {e}");
        }
    }
    match raw.as_object().and_then(|o| o.keys().find(|k| *k != "update_id")) {
        Some(kind) => format!("`{kind}` could not be read"),
        None => "the update carries nothing".to_owned(),
    }
}

/// Leave out what cannot be read in a message's entities (and in the message it replies to,
/// without naming those: that message was carried on its own).
fn clean_message(m: &mut Value, dropped: &mut Vec<String>, name: bool) {
    let Some(obj) = m.as_object_mut() else {
        return;
    };
    for key in ["entities", "caption_entities"] {
        let Some(Value::Array(entities)) = obj.get_mut(key) else {
            continue;
        };
        entities.retain(|e| match entity_problem(e) {
            None => true,
            Some(problem) => {
                if name {
                    dropped.push(problem);
                }
                false
            }
        });
    }
    for key in ["reply_to_message", "pinned_message"] {
        if let Some(inner) = obj.get_mut(key) {
            clean_message(inner, &mut Vec::new(), false);
        }
    }
}

/// Why an entity cannot be carried, if it cannot.
fn entity_problem(e: &Value) -> Option<String> {
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("?");
    match serde_json::from_str::<MessageEntity>(&e.to_string()) {
        Err(err) => Some(format!("a `{kind}` entity the bridge cannot read ({err})")),
        Ok(ent) => match &ent.kind {
            MessageEntityKind::TextLink { url } if !SAFE_LINK_SCHEMES.contains(&url.scheme()) => Some(format!(
                "a link with a `{}:` URL (not allowed in Matrix HTML)",
                url.scheme()
            )),
            _ => None,
        },
    }
}

/// Chat, sender and text of an unreadable message, as far as the raw JSON has them.
fn salvage(raw: &Value) -> Option<Salvage> {
    let m = raw.get("message").or_else(|| raw.get("edited_message"))?;
    if !m.is_object() {
        return None;
    }
    let from = &m["from"];
    let name = [from["first_name"].as_str(), from["last_name"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Some(Salvage {
        chat: m["chat"]["id"].as_i64(),
        message_id: m["message_id"].as_i64(),
        from: (!name.is_empty()).then_some(name),
        text: m["text"].as_str().or(m["caption"].as_str()).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use teloxide::types::UpdateKind;

    use super::read_update;

    fn message(extra: serde_json::Value) -> String {
        let mut m = json!({"message_id": 5, "date": 1_700_000_000,
            "chat": {"id": -100, "type": "supergroup", "title": "ops"},
            "from": {"id": 42, "is_bot": false, "first_name": "Moss"}, "text": "hello world"});
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"update_id": 9, "message": m}).to_string()
    }

    #[test]
    fn unreadable_entities_are_left_out_and_named_and_the_text_stays() {
        let r = read_update(&message(json!({"entities": [
            {"type": "bold", "offset": 0, "length": 5},
            {"type": "future_kind", "offset": 0, "length": 5},
            {"type": "text_link", "offset": 6, "length": 5, "url": "http://exa mple.com"},
            {"type": "italic", "offset": -1, "length": 3},
            {"type": "text_link", "offset": 6, "length": 5, "url": "javascript:alert(1)"},
        ]})))
        .unwrap();
        let UpdateKind::Message(m) = r.update.unwrap_or_else(|| panic!("{:?}", r.error)).kind else {
            panic!()
        };
        assert_eq!(m.text(), Some("hello world"));
        assert_eq!(m.entities().unwrap().len(), 1, "only the bold one stays");
        assert_eq!(r.dropped.len(), 4, "{:?}", r.dropped);
        assert!(r.dropped[0].contains("future_kind"), "{:?}", r.dropped);
        assert!(r.dropped[3].contains("javascript:"), "{:?}", r.dropped);
    }

    #[test]
    fn an_unreadable_message_keeps_what_can_be_recovered() {
        let raw = json!({"update_id": 10, "message": {"message_id": 6,
            "chat": {"id": -100, "type": "supergroup", "title": "ops"},
            "from": {"id": 42, "is_bot": false, "first_name": "Moss", "last_name": "T"}, "text": "no date"}});
        let r = read_update(&raw.to_string()).unwrap();
        assert!(r.update.is_none());
        assert!(r.error.as_deref().unwrap().contains("date"), "{:?}", r.error);
        let s = r.salvage.unwrap();
        assert_eq!(
            (s.chat, s.message_id, s.from.as_deref(), s.text.as_deref()),
            (Some(-100), Some(6), Some("Moss T"), Some("no date"))
        );
        let r = read_update(r#"{"update_id": 11, "message": 5}"#).unwrap();
        assert!(r.update.is_none() && r.salvage.is_none() && r.error.is_some());
        assert!(read_update("{").is_err());
    }
}
