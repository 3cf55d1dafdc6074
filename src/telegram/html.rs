//! Matrix `formatted_body` HTML -> Telegram Bot API HTML (parse_mode=HTML).
//!
//! Telegram accepts only a small tag set (b, i, u, s, a, code, pre, blockquote, tg-spoiler) and
//! rejects a message with any other tag, so this is an allow-list rewrite: every other element is
//! reduced to its text, block elements become line breaks, reply fallbacks (`<mx-reply>`) vanish,
//! and all text is re-escaped. The input is untrusted: nothing from it reaches the output unescaped.

use ruma::html::{Html, NodeData, NodeRef};

use super::format::{escape_attr, escape_html};

/// Convert Matrix HTML to Telegram HTML.
pub fn matrix_html_to_telegram(html: &str) -> String {
    let doc = Html::parse(html);
    let mut out = String::with_capacity(html.len());
    for child in doc.children() {
        walk(&child, &mut out, false);
    }
    tidy(&out)
}

/// Plain Matrix `body` -> Telegram HTML (escaped), without the reply fallback.
pub fn plain_to_telegram(body: &str) -> String {
    escape_html(&strip_reply_fallback(body))
}

/// Remove the `> <@user> quoted` lines a Matrix reply body starts with.
pub fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let mut lines = body.lines().peekable();
    while lines.peek().is_some_and(|l| l.starts_with('>')) {
        lines.next();
    }
    if lines.peek().is_some_and(|l| l.is_empty()) {
        lines.next();
    }
    lines.collect::<Vec<_>>().join("\n")
}

fn attr(node: &NodeRef, name: &str) -> Option<String> {
    let el = node.as_element()?;
    el.attrs
        .borrow()
        .iter()
        .find(|a| &*a.name.local == name)
        .map(|a| a.value.to_string())
}

fn children(node: &NodeRef, out: &mut String, in_pre: bool) {
    for c in node.children() {
        walk(&c, out, in_pre);
    }
}

fn wrapped(node: &NodeRef, out: &mut String, tag: &str, in_pre: bool) {
    let mut inner = String::new();
    children(node, &mut inner, in_pre);
    if inner.trim().is_empty() {
        out.push_str(&inner);
    } else {
        out.push_str(&format!("<{tag}>{inner}</{tag}>"));
    }
}

fn ensure_newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn walk(node: &NodeRef, out: &mut String, in_pre: bool) {
    match node.data() {
        NodeData::Text(t) => out.push_str(&escape_html(&t.borrow())),
        NodeData::Element(el) => {
            let name = el.name.local.to_string();
            match name.as_str() {
                "mx-reply" | "script" | "style" | "head" | "title" => {}
                "b" | "strong" => wrapped(node, out, "b", in_pre),
                "i" | "em" => wrapped(node, out, "i", in_pre),
                "u" | "ins" => wrapped(node, out, "u", in_pre),
                "s" | "strike" | "del" => wrapped(node, out, "s", in_pre),
                "code" if in_pre => children(node, out, true),
                "code" => wrapped(node, out, "code", true),
                "pre" => {
                    ensure_newline(out);
                    let lang = node
                        .first_child()
                        .filter(|c| c.as_element().is_some_and(|e| &*e.name.local == "code"))
                        .and_then(|c| attr(&c, "class"))
                        .and_then(|cls| {
                            cls.split_whitespace()
                                .find_map(|c| c.strip_prefix("language-").map(str::to_owned))
                        })
                        .filter(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || "+-_#".contains(c)));
                    let mut inner = String::new();
                    children(node, &mut inner, true);
                    match lang {
                        Some(l) => out.push_str(&format!("<pre><code class=\"language-{l}\">{inner}</code></pre>")),
                        None => out.push_str(&format!("<pre>{inner}</pre>")),
                    }
                    out.push('\n');
                }
                "blockquote" => {
                    ensure_newline(out);
                    wrapped(node, out, "blockquote", in_pre);
                    out.push('\n');
                }
                "span" if attr(node, "data-mx-spoiler").is_some() => wrapped(node, out, "tg-spoiler", in_pre),
                "a" => {
                    let href = attr(node, "href").unwrap_or_default();
                    let mut inner = String::new();
                    children(node, &mut inner, in_pre);
                    let safe = ["http://", "https://", "mailto:", "tg://"]
                        .iter()
                        .any(|p| href.starts_with(p));
                    if href.starts_with("https://matrix.to/") || !safe || in_pre {
                        out.push_str(&inner);
                    } else {
                        out.push_str(&format!("<a href=\"{}\">{inner}</a>", escape_attr(&href)));
                    }
                }
                "br" => out.push('\n'),
                "hr" => {
                    ensure_newline(out);
                    out.push_str("———\n");
                }
                "p" | "div" | "tr" => {
                    ensure_newline(out);
                    children(node, out, in_pre);
                    out.push('\n');
                }
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    ensure_newline(out);
                    wrapped(node, out, "b", in_pre);
                    out.push('\n');
                }
                "ul" | "ol" => {
                    ensure_newline(out);
                    let ordered = name == "ol";
                    let mut n: u64 = attr(node, "start").and_then(|s| s.parse().ok()).unwrap_or(1);
                    for li in node.children() {
                        if li.as_element().is_some_and(|e| &*e.name.local == "li") {
                            if ordered {
                                out.push_str(&format!("{n}. "));
                                n += 1;
                            } else {
                                out.push_str("• ");
                            }
                            let mut inner = String::new();
                            children(&li, &mut inner, in_pre);
                            out.push_str(inner.trim_end_matches('\n'));
                            out.push('\n');
                        }
                    }
                }
                "img" => {
                    let alt = attr(node, "alt")
                        .or_else(|| attr(node, "title"))
                        .unwrap_or_else(|| "image".into());
                    out.push_str(&escape_html(&alt));
                }
                "td" | "th" => {
                    children(node, out, in_pre);
                    out.push('\t');
                }
                _ => children(node, out, in_pre),
            }
        }
        _ => {}
    }
}

/// Trim surrounding whitespace and collapse runs of blank lines.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut newlines = 0;
    for c in s.trim().chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else {
            newlines = 0;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_tags_are_mapped() {
        assert_eq!(
            matrix_html_to_telegram("<strong>b</strong> <em>i</em> <del>s</del> <code>&lt;x&gt;</code>"),
            "<b>b</b> <i>i</i> <s>s</s> <code>&lt;x&gt;</code>"
        );
    }

    #[test]
    fn injection_is_neutralised() {
        let out = matrix_html_to_telegram(
            "<script>alert(1)</script><img src=x onerror=y alt='<b>'><a href=\"javascript:x\">c</a><marquee>m</marquee>",
        );
        assert_eq!(out, "&lt;b&gt;cm");
        let out = matrix_html_to_telegram("<a href='https://e.org/\"><b>x'>t</a>");
        assert_eq!(out, "<a href=\"https://e.org/&quot;&gt;&lt;b&gt;x\">t</a>");
    }

    #[test]
    fn reply_fallback_is_removed() {
        let html = "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r/$e\">In reply to</a> quoted</blockquote></mx-reply>answer";
        assert_eq!(matrix_html_to_telegram(html), "answer");
        assert_eq!(
            strip_reply_fallback("> <@a:b> quoted\n> more\n\nanswer\nline2"),
            "answer\nline2"
        );
        assert_eq!(strip_reply_fallback("no quote"), "no quote");
    }

    #[test]
    fn blocks_lists_and_code() {
        let html = "<p>one</p><p>two</p><ul><li>a</li><li>b</li></ul><pre><code class=\"language-rust\">fn x() {}\n</code></pre>";
        assert_eq!(
            matrix_html_to_telegram(html),
            "one\ntwo\n• a\n• b\n<pre><code class=\"language-rust\">fn x() {}\n</code></pre>"
        );
    }

    #[test]
    fn pills_become_names_and_spoilers_map() {
        let html = "<a href=\"https://matrix.to/#/@ezra:hs\">Ezra</a>: <span data-mx-spoiler>secret</span>";
        assert_eq!(matrix_html_to_telegram(html), "Ezra: <tg-spoiler>secret</tg-spoiler>");
    }

    #[test]
    fn plain_body_is_escaped() {
        assert_eq!(plain_to_telegram("1 < 2 & <b>"), "1 &lt; 2 &amp; &lt;b&gt;");
    }
}
