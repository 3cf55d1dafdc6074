//! Telegram text + entities -> Matrix `formatted_body` HTML.
//!
//! Entity offsets and lengths count UTF-16 code units (Bot API docs, "MessageEntity").
//! Nested entities become nested tags; entities that overlap without nesting are clipped to
//! their parent so the output is always well-formed.

use teloxide::types::{MessageEntity, MessageEntityKind};

/// Render `text` with `entities` as Matrix HTML. `puppet_of` maps a Telegram user id (from a
/// `text_mention`) to the Matrix id that represents them, for a pill link.
pub fn entities_to_html(text: &str, entities: &[MessageEntity], puppet_of: &dyn Fn(i64) -> String) -> String {
    let units: Vec<u16> = text.encode_utf16().collect();
    // Snap entity bounds that fall inside a surrogate pair outwards, so no character is split.
    let is_low = |i: usize| units.get(i).is_some_and(|u| (0xDC00..0xE000).contains(u));
    let snapped: Vec<MessageEntity> = entities
        .iter()
        .filter(|e| e.length > 0 && e.offset < units.len())
        .map(|e| {
            let mut start = e.offset;
            let mut end = (e.offset + e.length).min(units.len());
            if is_low(start) {
                start -= 1;
            }
            if is_low(end) {
                end += 1;
            }
            MessageEntity {
                kind: e.kind.clone(),
                offset: start,
                length: end - start,
            }
        })
        .collect();
    let mut ents: Vec<&MessageEntity> = snapped.iter().collect();
    // Outer entities first: by start, then longest.
    ents.sort_by(|a, b| a.offset.cmp(&b.offset).then(b.length.cmp(&a.length)));
    let mut out = String::with_capacity(text.len() + 16 * ents.len());
    render(&units, 0, units.len(), &ents, puppet_of, &mut out);
    out
}

fn render(
    units: &[u16],
    start: usize,
    end: usize,
    ents: &[&MessageEntity],
    puppet_of: &dyn Fn(i64) -> String,
    out: &mut String,
) {
    let mut pos = start;
    let mut i = 0;
    while i < ents.len() {
        let e = ents[i];
        let e_start = e.offset.max(pos);
        let e_end = (e.offset + e.length).min(end);
        // Children: the following entities that start inside this one.
        let mut j = i + 1;
        while j < ents.len() && ents[j].offset < e_end {
            j += 1;
        }
        if e_start >= e_end {
            i = j;
            continue;
        }
        push_text(units, pos, e_start, out);
        let mut inner = String::new();
        match &e.kind {
            MessageEntityKind::Code | MessageEntityKind::Pre { .. } => push_text(units, e_start, e_end, &mut inner),
            _ => render(units, e_start, e_end, &ents[i + 1..j], puppet_of, &mut inner),
        }
        wrap(&e.kind, &inner, &units[e_start..e_end], puppet_of, out);
        pos = e_end;
        i = j;
    }
    push_text(units, pos, end, out);
}

fn push_text(units: &[u16], from: usize, to: usize, out: &mut String) {
    if from < to {
        out.push_str(&escape_html(&String::from_utf16_lossy(&units[from..to])));
    }
}

fn wrap(kind: &MessageEntityKind, inner: &str, raw: &[u16], puppet_of: &dyn Fn(i64) -> String, out: &mut String) {
    use MessageEntityKind::*;
    let tag = |out: &mut String, t: &str| {
        out.push_str(&format!("<{t}>{inner}</{t}>"));
    };
    match kind {
        Bold => tag(out, "strong"),
        Italic => tag(out, "em"),
        Underline => tag(out, "u"),
        Strikethrough => tag(out, "del"),
        Code => tag(out, "code"),
        Blockquote | ExpandableBlockquote => tag(out, "blockquote"),
        Spoiler => out.push_str(&format!("<span data-mx-spoiler>{inner}</span>")),
        Pre { language } => match language
            .as_deref()
            .filter(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || "+-_#".contains(c)))
        {
            Some(lang) => out.push_str(&format!("<pre><code class=\"language-{lang}\">{inner}</code></pre>")),
            None => out.push_str(&format!("<pre><code>{inner}</code></pre>")),
        },
        // Only schemes Matrix HTML allows (never `javascript:`); any other link is its text.
        TextLink { url } if crate::telegram::update::SAFE_LINK_SCHEMES.contains(&url.scheme()) => {
            out.push_str(&format!("<a href=\"{}\">{inner}</a>", escape_attr(url.as_str())))
        }
        TextLink { .. } => out.push_str(inner),
        Url => {
            let href = String::from_utf16_lossy(raw);
            let href = if href.contains("://") {
                href
            } else {
                format!("https://{href}")
            };
            if href.starts_with("http://") || href.starts_with("https://") {
                out.push_str(&format!("<a href=\"{}\">{inner}</a>", escape_attr(&href)));
            } else {
                out.push_str(inner);
            }
        }
        Email => {
            let addr = String::from_utf16_lossy(raw);
            out.push_str(&format!("<a href=\"mailto:{}\">{inner}</a>", escape_attr(&addr)));
        }
        TextMention { user } => {
            let mxid = puppet_of(user.id.0 as i64);
            out.push_str(&format!(
                "<a href=\"https://matrix.to/#/{}\">{inner}</a>",
                escape_attr(&mxid)
            ));
        }
        _ => out.push_str(inner),
    }
}

/// Escape text for HTML element content (Matrix and Telegram alike).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escape an attribute value.
pub fn escape_attr(s: &str) -> String {
    escape_html(s).replace('"', "&quot;")
}

/// Whether an entity list carries any formatting worth a `formatted_body`.
pub fn has_formatting(entities: &[MessageEntity]) -> bool {
    use MessageEntityKind::*;
    entities.iter().any(|e| {
        !matches!(
            e.kind,
            Hashtag | Cashtag | BotCommand | PhoneNumber | Mention | CustomEmoji { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(json: &str) -> Vec<MessageEntity> {
        serde_json::from_str(json).unwrap()
    }
    fn none(_: i64) -> String {
        String::new()
    }

    #[test]
    fn plain_text_is_escaped() {
        assert_eq!(entities_to_html("a <b> & c", &[], &none), "a &lt;b&gt; &amp; c");
    }

    #[test]
    fn nested_and_utf16_offsets() {
        // "😀" is two UTF-16 units: bold covers "bold", italic covers "ld".
        let e = ents(r#"[{"type":"bold","offset":3,"length":4},{"type":"italic","offset":5,"length":2}]"#);
        assert_eq!(
            entities_to_html("😀 bold!", &e, &none),
            "😀 <strong>bo<em>ld</em></strong>!"
        );
    }

    #[test]
    fn code_pre_links_mentions() {
        let e = ents(
            r#"[{"type":"code","offset":0,"length":5},
                {"type":"pre","offset":6,"length":6,"language":"rust"},
                {"type":"text_link","offset":13,"length":4,"url":"https://x.org/?a=1&b=\"2\""},
                {"type":"text_mention","offset":18,"length":3,"user":{"id":42,"is_bot":false,"first_name":"Bob"}}]"#,
        );
        let html = entities_to_html("a<b>c fn x() link Bob", &e, &|id| format!("@telegram_{id}:hs"));
        assert_eq!(
            html,
            "<code>a&lt;b&gt;c</code> <pre><code class=\"language-rust\">fn x()</code></pre> \
             <a href=\"https://x.org/?a=1&amp;b=%222%22\">link</a> <a href=\"https://matrix.to/#/@telegram_42:hs\">Bob</a>"
        );
    }

    #[test]
    fn overlapping_entities_stay_well_formed() {
        let e = ents(r#"[{"type":"bold","offset":0,"length":4},{"type":"italic","offset":2,"length":4}]"#);
        let html = entities_to_html("abcdef", &e, &none);
        assert_eq!(html, "<strong>ab<em>cd</em></strong>ef");
    }

    #[test]
    fn entities_never_split_a_surrogate_pair() {
        let e = ents(r#"[{"type":"bold","offset":1,"length":2}]"#);
        assert_eq!(entities_to_html("😀😀", &e, &none), "<strong>😀😀</strong>");
    }

    #[test]
    fn out_of_range_entities_are_ignored() {
        let e = ents(r#"[{"type":"bold","offset":10,"length":4},{"type":"italic","offset":1,"length":40}]"#);
        assert_eq!(entities_to_html("abc", &e, &none), "a<em>bc</em>");
    }
}
