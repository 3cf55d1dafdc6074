//! Splitting a long HTML message into parts that each fit a platform's limit, at the best
//! boundary available (paragraph, then line, then word, else between two characters), without
//! breaking a tag, an entity (`&amp;`) or a character (so never a UTF-16 surrogate pair). A tag
//! open at the cut is closed at the end of one part and opened again, with its attributes, at the
//! start of the next, so each part is well-formed on its own.
//!
//! What counts toward the limit is the platform's measure ([`Measure`]): Telegram counts the text
//! after entity parsing in UTF-16 code units (4096 per message, 1024 per caption); a Matrix event
//! is limited in bytes (65,536 for the whole event), so there the markup counts too.

/// How the length of a part is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Visible text in UTF-16 code units; tags are free, an entity is the character it stands
    /// for (Telegram's count after entity parsing).
    VisibleUtf16,
    /// The raw markup in bytes (tags and entities as written).
    RawBytes,
}

/// Telegram's limit for a message's text.
pub const TELEGRAM_TEXT: usize = 4096;
/// Telegram's limit for a caption.
pub const TELEGRAM_CAPTION: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Open,
    Close,
}

/// A piece of the input that is never cut: a tag, an entity or one character.
struct Unit<'a> {
    raw: &'a str,
    kind: Kind,
    /// Length under the measure.
    len: usize,
    /// The visible character, for text units (an entity's decoded character).
    ch: Option<char>,
}

/// The tag name of an opening or closing tag's raw text (`<a href=..>` -> `a`).
fn tag_name(raw: &str) -> &str {
    let inner = raw.trim_start_matches('<').trim_start_matches('/');
    let end = inner
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(inner.len());
    &inner[..end]
}

fn decode_entity(raw: &str) -> Option<char> {
    let body = raw.strip_prefix('&')?.strip_suffix(';')?;
    match body {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => {
            let num = body.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

fn units(html: &str, measure: Measure) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        let take = if c == '<' {
            rest.find('>').map(|i| i + 1)
        } else if c == '&' {
            rest.find(';')
                .filter(|i| *i <= 10 && decode_entity(&rest[..=*i]).is_some())
                .map(|i| i + 1)
        } else {
            None
        };
        let (raw, kind, ch) = match take {
            Some(n) if c == '<' => {
                let raw = &rest[..n];
                let kind = if raw.starts_with("</") {
                    Kind::Close
                } else if raw.ends_with("/>") || tag_name(raw).eq_ignore_ascii_case("br") {
                    // A void element: part of the text flow, like a character of no width.
                    Kind::Text
                } else {
                    Kind::Open
                };
                (raw, kind, None)
            }
            Some(n) => (&rest[..n], Kind::Text, decode_entity(&rest[..n])),
            None => (&rest[..c.len_utf8()], Kind::Text, Some(c)),
        };
        let len = match (measure, kind) {
            (Measure::RawBytes, _) => raw.len(),
            (Measure::VisibleUtf16, Kind::Text) => ch.map_or(0, char::len_utf16),
            (Measure::VisibleUtf16, _) => 0,
        };
        out.push(Unit { raw, kind, len, ch });
        rest = &rest[raw.len()..];
    }
    out
}

/// Split `html` into parts of at most `limit` under `measure` (see the module doc). A text that
/// fits is returned whole. Tags open at a cut count toward the next part's length under
/// [`Measure::RawBytes`] (they are written again there).
pub fn split_html(html: &str, limit: usize, measure: Measure) -> Vec<String> {
    // Bytes are never fewer than the visible UTF-16 units: a short text needs no parsing.
    if html.len() <= limit {
        return vec![html.to_owned()];
    }
    let units = units(html, measure);
    let total: usize = units.iter().map(|u| u.len).sum();
    if total <= limit {
        return vec![html.to_owned()];
    }
    // The open tags before each unit (raw opening tags, outermost first).
    let mut stacks: Vec<Vec<&str>> = Vec::with_capacity(units.len() + 1);
    let mut stack: Vec<&str> = Vec::new();
    for u in &units {
        stacks.push(stack.clone());
        match u.kind {
            Kind::Open => stack.push(u.raw),
            Kind::Close => {
                let name = tag_name(u.raw);
                if let Some(i) = stack.iter().rposition(|t| tag_name(t).eq_ignore_ascii_case(name)) {
                    stack.truncate(i);
                }
            }
            Kind::Text => {}
        }
    }
    stacks.push(stack);
    let closing = |tags: &[&str]| -> String { tags.iter().rev().map(|t| format!("</{}>", tag_name(t))).collect() };
    let raw = measure == Measure::RawBytes;
    let open_cost = |k: usize| {
        if raw {
            stacks[k].iter().map(|t| t.len()).sum()
        } else {
            0
        }
    };
    let close_cost = |k: usize| if raw { closing(&stacks[k]).len() } else { 0 };

    let mut parts = Vec::new();
    let mut i = 0;
    while i < units.len() {
        // The furthest end that fits, with the tags reopened at the start and closed at the end.
        let mut used = open_cost(i);
        let mut j = i;
        while j < units.len() && used + units[j].len + close_cost(j + 1) <= limit {
            used += units[j].len;
            j += 1;
        }
        let end = if j == units.len() {
            j
        } else {
            // Prefer a paragraph break, then a line break, then a space, in the second half of
            // the part (so a part is not cut short for a break near its start).
            let min = i + (j - i) / 2;
            let after = |pred: &dyn Fn(usize) -> bool| (min.max(i + 1)..=j).rev().find(|&k| pred(k));
            let is = |k: usize, c: char| k > 0 && units[k - 1].ch == Some(c);
            after(&|k| is(k, '\n') && k >= 2 && units[k - 2].ch == Some('\n'))
                .or_else(|| after(&|k| is(k, '\n')))
                .or_else(|| after(&|k| is(k, ' ')))
                .unwrap_or(j.max(i + 1))
        };
        let mut part: String = stacks[i].concat();
        for u in &units[i..end] {
            part.push_str(u.raw);
        }
        part.push_str(&closing(&stacks[end]));
        parts.push(part);
        i = end;
    }
    parts
}

/// The plain text of an HTML part (tags left out, `<br>` as a line break, entities decoded), for
/// a Matrix event's `body` beside its `formatted_body`.
pub fn plain_of(html: &str) -> String {
    units(html, Measure::RawBytes)
        .iter()
        .filter_map(|u| match (u.kind, u.ch) {
            (Kind::Text, Some(c)) => Some(c),
            (Kind::Text, None) => Some('\n'), // <br>
            _ => None,
        })
        .collect()
}

/// A text's length as Telegram counts it (UTF-16 code units after entity parsing).
pub fn telegram_len(html: &str) -> usize {
    units(html, Measure::VisibleUtf16).iter().map(|u| u.len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_that_fits_is_one_part() {
        assert_eq!(
            split_html("<b>hi</b> there", 10, Measure::VisibleUtf16),
            vec!["<b>hi</b> there"]
        );
    }

    #[test]
    fn cuts_prefer_paragraphs_then_lines_then_words() {
        let text = format!(
            "{}\n\n{}\n{} {}",
            "a".repeat(30),
            "b".repeat(30),
            "c".repeat(5),
            "d".repeat(5)
        );
        let parts = split_html(&text, 40, Measure::VisibleUtf16);
        assert_eq!(parts[0], format!("{}\n\n", "a".repeat(30)));
        assert_eq!(parts.concat(), text);
        let words = "word ".repeat(20);
        let parts = split_html(&words, 12, Measure::VisibleUtf16);
        assert!(
            parts.iter().all(|p| p.ends_with(' ') || p == parts.last().unwrap()),
            "{parts:?}"
        );
    }

    #[test]
    fn tags_are_closed_and_reopened_entities_and_pairs_kept() {
        let html = format!(
            "<b><a href=\"https://x.test/?a=1&amp;b=2\">{}</a></b>",
            "x&amp;😀".repeat(10)
        );
        let parts = split_html(&html, 7, Measure::VisibleUtf16);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.starts_with("<b><a href=\"https://x.test/?a=1&amp;b=2\">"), "{p}");
            assert!(p.ends_with("</a></b>"), "{p}");
            assert!(telegram_len(p) <= 7, "{p}");
            assert!(!p.contains("&am;") && !p.ends_with("&amp"), "{p}");
        }
        // Nothing lost: the visible text of the parts is the text.
        let visible: usize = parts.iter().map(|p| telegram_len(p)).sum();
        assert_eq!(visible, telegram_len(&html));
    }

    #[test]
    fn plain_text_of_a_part() {
        assert_eq!(plain_of("<b>a &amp; b</b><br/>c"), "a & b\nc");
    }

    #[test]
    fn raw_bytes_count_the_markup_reopened() {
        let html = format!("<pre>{}</pre>", "line of code\n".repeat(100));
        let parts = split_html(&html, 200, Measure::RawBytes);
        assert!(
            parts
                .iter()
                .all(|p| p.len() <= 200 && p.starts_with("<pre>") && p.ends_with("</pre>"))
        );
    }

    proptest::proptest! {
        #[test]
        fn parts_fit_and_lose_nothing(words in proptest::collection::vec("[a-z😀&<> \\n]{0,12}", 0..200), limit in 8usize..300) {
            let html: String = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let w = crate::telegram::format::escape_html(w);
                    if i % 3 == 0 { format!("<b>{w}</b>") } else { w }
                })
                .collect();
            let parts = split_html(&html, limit, Measure::VisibleUtf16);
            for p in &parts {
                proptest::prop_assert!(telegram_len(p) <= limit, "{} > {limit}: {p}", telegram_len(p));
            }
            let visible: usize = parts.iter().map(|p| telegram_len(p)).sum();
            proptest::prop_assert_eq!(visible, telegram_len(&html));
        }
    }
}
