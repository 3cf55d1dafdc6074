//! Minimal, layout-preserving edits of a block-style YAML file: set one scalar at a key path and
//! leave every other byte (comments, order, blank lines) as it was. Used by `tgmx primary`.

use crate::error::{Error, Result};

struct KeyLine {
    indent: usize,
    key: String,
    /// Byte range of the value (after `key:`), without a trailing comment.
    value_start: usize,
    value_end: usize,
    has_inline_value: bool,
}

fn parse_key_line(line: &str) -> Option<KeyLine> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    if rest.starts_with('#') || rest.starts_with('-') || rest.is_empty() {
        return None;
    }
    let colon = rest.find(':')?;
    let key = &rest[..colon];
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let after = indent + colon + 1;
    let tail = &line[after..];
    if !(tail.is_empty() || tail.starts_with(' ')) {
        return None;
    }
    // The value ends at a ` #` comment outside quotes.
    let mut end = line.len();
    let mut quote: Option<char> = None;
    let bytes: Vec<char> = tail.chars().collect();
    let mut pos = after;
    for (i, c) in bytes.iter().enumerate() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(*c),
            (Some(q), c) if *c == q => quote = None,
            (None, '#') if i == 0 || bytes[i - 1] == ' ' => {
                end = pos;
                break;
            }
            _ => {}
        }
        pos += c.len_utf8();
    }
    let value = line[after..end].trim();
    Some(KeyLine {
        indent,
        key: key.to_owned(),
        value_start: after,
        value_end: end,
        has_inline_value: !value.is_empty(),
    })
}

/// Set `path` (e.g. `["gateway", "primary_platform"]`) to `value`. A missing last key is inserted
/// under its parent mapping; a missing parent, or a parent written in flow style, is an error.
pub fn set_scalar(text: &str, path: &[&str], value: &str) -> Result<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut parent_line: Option<(usize, usize)> = None; // (line index, indent) of the parent
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let Some(kl) = parse_key_line(line) else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= kl.indent) {
            stack.pop();
        }
        let here: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([kl.key.as_str()]).collect();
        if here == path {
            let mut out = String::with_capacity(text.len() + value.len());
            for (j, l) in lines.iter().enumerate() {
                if j == i {
                    let comment = &line[kl.value_end..];
                    let sep = if comment.is_empty() { "" } else { " " };
                    out.push_str(&line[..kl.value_start]);
                    out.push(' ');
                    out.push_str(value);
                    out.push_str(sep);
                    out.push_str(comment.trim_start());
                    out.push_str(&raw[line.len()..]);
                } else {
                    out.push_str(l);
                }
            }
            return Ok(out);
        }
        if here.len() < path.len() && here == path[..here.len()] && here.len() == path.len() - 1 {
            if kl.has_inline_value {
                return Err(Error::Config(format!(
                    "`{}` is written inline; set `{}` by hand",
                    path[..path.len() - 1].join("."),
                    path.join(".")
                )));
            }
            parent_line = Some((i, kl.indent));
        }
        if !kl.has_inline_value {
            stack.push((kl.indent, kl.key));
        }
    }
    let Some((pi, pind)) = parent_line else {
        return Err(Error::Config(format!(
            "cannot find `{}` in the config file",
            path[..path.len() - 1].join(".")
        )));
    };
    // The parent's block: the lines after it indented deeper (blank and comment lines included).
    let mut indent = None;
    let mut at = pi;
    for (j, raw) in lines.iter().enumerate().skip(pi + 1) {
        let line = raw.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = line.len() - trimmed.len();
        if ind <= pind {
            break;
        }
        indent.get_or_insert(ind);
        at = j;
    }
    let indent = indent.unwrap_or(pind + 2);
    let mut out = String::new();
    for (j, l) in lines.iter().enumerate() {
        out.push_str(l);
        if j == at {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{}{}: {}\n", " ".repeat(indent), path[path.len() - 1], value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::set_scalar;

    const DOC: &str = "# top\nhomeserver:\n  url: x\ngateway:\n  # the mode\n  primary_platform: telegram   # edit me\n  fallback_platform: matrix\n  telegram:\n    enabled: true\n    api_url: \"http://a#b\"\nrooms: []\n";

    #[test]
    fn replaces_value_and_keeps_comments() {
        let out = set_scalar(DOC, &["gateway", "primary_platform"], "matrix").unwrap();
        assert_eq!(
            out,
            DOC.replace(
                "primary_platform: telegram   # edit me",
                "primary_platform: matrix # edit me"
            )
        );
        let out = set_scalar(DOC, &["gateway", "telegram", "enabled"], "false").unwrap();
        assert_eq!(out, DOC.replace("    enabled: true", "    enabled: false"));
        let out = set_scalar(DOC, &["gateway", "telegram", "api_url"], "\"http://c\"").unwrap();
        assert!(out.contains("    api_url: \"http://c\"\nrooms"), "{out}");
    }

    #[test]
    fn inserts_missing_keys_under_their_parent() {
        let doc = "gateway:\n  telegram:\n    enabled: true\nrooms: []\n";
        let out = set_scalar(doc, &["gateway", "primary_platform"], "matrix").unwrap();
        assert_eq!(
            out,
            "gateway:\n  telegram:\n    enabled: true\n  primary_platform: matrix\nrooms: []\n"
        );
        let doc = "gateway:\nrooms: []\n";
        let out = set_scalar(doc, &["gateway", "primary_platform"], "matrix").unwrap();
        assert_eq!(out, "gateway:\n  primary_platform: matrix\nrooms: []\n");
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        assert!(set_scalar("rooms: []\n", &["gateway", "primary_platform"], "m").is_err());
        assert!(set_scalar("gateway: {telegram: {}}\n", &["gateway", "primary_platform"], "m").is_err());
    }
}
