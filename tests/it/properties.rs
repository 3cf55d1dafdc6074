//! Property tests ("fuzzing" with proptest) of the untrusted-input paths: the format converters
//! and the appservice transaction parser, through their public API. No homeserver needed:
//! `cargo test --test it properties::`; `PROPTEST_CASES` raises the number of cases for a longer
//! run. Failing cases found before are kept in `tests/it/properties.proptest-regressions` and
//! tried first.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use teloxide::types::MessageEntity;

use tgmx::matrix::appservice::parse_transaction;
use tgmx::telegram::format::entities_to_html;
use tgmx::telegram::html::matrix_html_to_telegram;

fn config() -> ProptestConfig {
    ProptestConfig {
        // Relative to the package root, where `cargo test` runs the tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/it/properties.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

const KINDS: &[&str] = &[
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "code",
    "pre",
    "url",
    "email",
    "blockquote",
    "mention",
];

fn entity() -> impl Strategy<Value = serde_json::Value> {
    (0..KINDS.len(), 0usize..40, 0usize..40)
        .prop_map(|(k, offset, length)| serde_json::json!({"type": KINDS[k], "offset": offset, "length": length}))
}

/// Text of HTML: tags removed, the five entities decoded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Tags Telegram accepts, and whether every opened tag is closed in order.
fn only_telegram_tags_balanced(html: &str) -> bool {
    let allowed = ["b", "i", "u", "s", "a", "code", "pre", "blockquote", "tg-spoiler"];
    let mut stack = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            return false;
        };
        let tag = &rest[start + 1..start + end];
        let (closing, name) = match tag.strip_prefix('/') {
            Some(n) => (true, n),
            None => (false, tag.split(' ').next().unwrap_or_default()),
        };
        if !allowed.contains(&name) {
            return false;
        }
        if closing {
            if stack.pop() != Some(name) {
                return false;
            }
        } else {
            stack.push(name);
        }
        rest = &rest[start + end + 1..];
    }
    stack.is_empty()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn telegram_entities_keep_the_text_exactly(text in "[a-z<>&\"😀 \n]{0,40}", ents in proptest::collection::vec(entity(), 0..6)) {
        let ents: Vec<MessageEntity> = ents.into_iter().filter_map(|e| serde_json::from_value(e).ok()).collect();
        let html = entities_to_html(&text, &ents, &|id| format!("@p{id}:hs"));
        prop_assert_eq!(text_of(&html), text);
    }

    #[test]
    fn matrix_html_becomes_only_telegram_tags(html in "(<(b|i|em|strong|p|br|a href=\"https://x\"|a href=\"javascript:y\"|script|code|pre|ul|li|span data-mx-spoiler|mx-reply|blockquote|h1|img alt=\"<q>\"|font)>|</(b|i|em|strong|p|a|script|code|pre|ul|li|span|mx-reply|blockquote|h1|font)>|[a-z &<>\"]){0,40}") {
        let out = matrix_html_to_telegram(&html);
        prop_assert!(only_telegram_tags_balanced(&out), "input {:?} gave {:?}", html, out);
    }

    #[test]
    fn transaction_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_transaction(&bytes, &|_| false);
    }

    #[test]
    fn transaction_parser_accepts_what_it_should(n in 0usize..5, body in "[ -~]{0,20}") {
        let events: Vec<_> = (0..n).map(|i| serde_json::json!({"type": "m.room.message", "sender": format!("@u{i}:hs"), "content": {"body": body}})).collect();
        let txn = serde_json::json!({"events": events}).to_string();
        prop_assert_eq!(parse_transaction(txn.as_bytes(), &|_| false).unwrap().len(), n);
    }
}
