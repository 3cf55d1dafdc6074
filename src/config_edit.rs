//! Minimal, layout-preserving edits of a block-style YAML file: set one scalar at a key path and
//! leave every other byte (comments, order, blank lines) as it was. Used by `tgmx primary`, and
//! by the daemon when a bridged group became a supergroup ([`set_room_chat`]).

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

/// What [`set_primary`] wrote: the platforms, and the config as it is now.
#[derive(Debug)]
pub struct PrimarySwitch {
    pub primary: &'static str,
    pub fallback: &'static str,
    /// The edited file, parsed (its mode: `bridge::cutover::Mode::of`).
    pub config: crate::config::Config,
}

/// `tgmx primary` and the management room's `!tgmx primary` (the same edit from both, so that
/// the file and the running mode never disagree): set `gateway.primary_platform` to `platform`
/// (`matrix` or `telegram`) and `gateway.fallback_platform` to the other one (`none` with
/// `standby`) in the file at `path`, keeping every other byte; validate the result and write it
/// in place (see [`write_in_place`]). Rolling back from a standby made with
/// `gateway.telegram.enabled: false` turns Telegram on again. The file is left unchanged on any
/// error. The daemon picks the change up by reloading the file.
pub fn set_primary(path: &std::path::Path, platform: &str, standby: bool) -> Result<PrimarySwitch> {
    use crate::config::Config;
    let primary = match platform {
        "matrix" => "matrix",
        "telegram" => "telegram",
        other => {
            return Err(Error::Config(format!(
                "unknown platform {other:?}: `matrix` or `telegram`"
            )));
        }
    };
    if standby && primary != "matrix" {
        return Err(Error::Config("--standby only goes with `matrix`".into()));
    }
    let original =
        std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let fallback = match (primary, standby) {
        ("matrix", true) => "none",
        ("matrix", false) => "telegram",
        _ => "matrix",
    };
    let mut text = set_scalar(&original, &["gateway", "primary_platform"], primary)?;
    text = set_scalar(&text, &["gateway", "fallback_platform"], fallback)?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let config = match Config::parse(&text, base) {
        Ok(c) if c.gateway.telegram.enabled || primary == "matrix" => c,
        _ => {
            // Rolling back from a standby that was made with `telegram.enabled: false`.
            text = set_scalar(&text, &["gateway", "telegram", "enabled"], "true")?;
            Config::parse(&text, base)
                .map_err(|e| Error::Config(format!("the edited config would be invalid; file left unchanged: {e}")))?
        }
    };
    write_in_place(path, &text).map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(PrimarySwitch {
        primary,
        fallback,
        config,
    })
}

/// The part of `line` before a ` #` comment (quotes respected).
fn without_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev == ' ' || prev == '\t' => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// In the top-level `rooms:` list, change the entry whose `telegram:` is `old` to `new` (block
/// or flow style, quoted or not); every other byte stays. An error when there is not exactly one
/// such entry (the caller tells the operator the line to change instead).
pub fn set_room_chat(text: &str, old: i64, new: i64) -> Result<String> {
    let old_s = old.to_string();
    let mut in_rooms = false;
    let mut found: Vec<usize> = Vec::new(); // byte offsets of the old value
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        let top_level = line.len() == trimmed.len() && !trimmed.is_empty() && !trimmed.starts_with('#');
        if top_level && !trimmed.starts_with('-') {
            in_rooms = trimmed.starts_with("rooms:");
        }
        if in_rooms {
            let code = without_comment(line);
            let mut from = 0;
            while let Some(at) = code[from..].find("telegram") {
                let start = from + at;
                from = start + "telegram".len();
                let before = code[..start].chars().next_back();
                if before.is_some_and(|c| !matches!(c, ' ' | '\t' | '{' | ',' | '-')) {
                    continue;
                }
                let rest = code[from..].trim_start();
                let Some(value) = rest.strip_prefix(':') else {
                    continue;
                };
                let value = value.trim_start();
                let quoted = value.starts_with(['"', '\'']);
                let digits = if quoted { &value[1..] } else { value };
                let Some(after) = digits.strip_prefix(old_s.as_str()) else {
                    continue;
                };
                if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                    continue;
                }
                let value_at = code.len() - digits.len();
                found.push(offset + value_at);
            }
        }
        offset += raw.len();
    }
    match found.as_slice() {
        [at] => Ok(format!("{}{new}{}", &text[..*at], &text[at + old_s.len()..])),
        [] => Err(Error::Config(format!("no entry of `rooms` says `telegram: {old}`"))),
        _ => Err(Error::Config(format!(
            "{} entries of `rooms` say `telegram: {old}`",
            found.len()
        ))),
    }
}

/// Replace the file at `path` with `text`: written beside it, given the file's permissions and
/// owner, then renamed over it (a reader sees the old file or the new one, never half of one).
/// A symlink is followed: its target is replaced.
pub fn write_in_place(path: &std::path::Path, text: &str) -> Result<()> {
    let path = std::fs::canonicalize(path)?;
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tgmx-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    let done = (|| {
        if let Ok(meta) = std::fs::metadata(&path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        std::fs::rename(&tmp, &path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(done?)
}

#[cfg(test)]
mod tests {
    use super::{set_room_chat, set_scalar};

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

    /// `tgmx primary` and `!tgmx primary` share this edit: two values change, nothing else; a
    /// rollback from a standby made with `telegram.enabled: false` turns Telegram on again; a
    /// refused switch leaves the file as it was.
    #[test]
    fn primary_switches_edit_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let doc = "homeserver: {url: \"http://h\", server_name: hs}\nappservice: {}\ngateway:\n  # mode\n  primary_platform: telegram\n  fallback_platform: matrix\n  telegram:\n    enabled: true\n    bot_token: \"1:a\"\n";
        std::fs::write(&path, doc).unwrap();
        let s = super::set_primary(&path, "matrix", true).unwrap();
        assert_eq!((s.primary, s.fallback), ("matrix", "none"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            doc.replace("primary_platform: telegram", "primary_platform: matrix")
                .replace("fallback_platform: matrix", "fallback_platform: none")
        );
        assert!(super::set_primary(&path, "telegram", true).is_err());
        assert!(super::set_primary(&path, "signal", false).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::write(&path, text.replace("enabled: true", "enabled: false")).unwrap();
        let s = super::set_primary(&path, "telegram", false).unwrap();
        assert!(s.config.gateway.telegram.enabled);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), doc);
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        assert!(set_scalar("rooms: []\n", &["gateway", "primary_platform"], "m").is_err());
        assert!(set_scalar("gateway: {telegram: {}}\n", &["gateway", "primary_platform"], "m").is_err());
    }

    #[test]
    fn a_room_follows_its_upgraded_chat_and_nothing_else_changes() {
        let doc = "rooms:\n  - {matrix: \"#a:hs\", telegram: -123}  # ops\n  - matrix: \"#b:hs\"\n    telegram: -1234\nidentities:\n  - {matrix: \"@x:hs\", telegram: -123}\n";
        let out = set_room_chat(doc, -123, -100123).unwrap();
        assert_eq!(out, doc.replacen("telegram: -123}", "telegram: -100123}", 1));
        let out = set_room_chat(doc, -1234, -1001234).unwrap();
        assert_eq!(out, doc.replace("    telegram: -1234\n", "    telegram: -1001234\n"));
        let quoted = "rooms:\n- matrix: x\n  telegram: \"-5\" # old\n";
        assert_eq!(
            set_room_chat(quoted, -5, -1005).unwrap(),
            "rooms:\n- matrix: x\n  telegram: \"-1005\" # old\n"
        );
        // Not in `rooms`, only in a comment, or twice: refused.
        assert!(set_room_chat(doc, -12, -100).is_err());
        assert!(set_room_chat("rooms:\n  # telegram: -7\n", -7, -100).is_err());
        assert!(set_room_chat("rooms:\n  - {telegram: -7}\n  - {telegram: -7}\n", -7, -100).is_err());
    }
}
