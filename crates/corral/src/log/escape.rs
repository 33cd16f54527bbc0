//! Untrusted text made safe to print: what a worker supplies (its output,
//! the paths and names it sends, its messages) reaches corral's logs,
//! `corral logs`, `corral top` and terminals. A raw newline there would
//! start a line the worker wrote but corral seems to (`INFO all workers
//! exited: cluster stopped`); a carriage return or an escape sequence would
//! overwrite what is on screen, hide text or retitle the terminal. Every
//! such character is shown escaped instead, as Rust writes it in a string
//! (`\n`, `\r`, `\x1b`, `\u{202e}`), so the text stays readable and one
//! line. Tab is kept: it is how output aligns columns, and moves nothing
//! but the cursor along the line.
//!
//! Escape sequences include ANSI colours: a worker's coloured output shows
//! as `\x1b[31m…`. Its output goes to a pipe, where programs that check for
//! a terminal write no colours anyway; one that forces them gets them
//! shown, not obeyed (a colour sequence differs from a cursor-moving one
//! by a byte, and passing some through would hand workers the screen).

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every character that could break a line or drive a terminal
/// escaped; borrowed, unchanged, when there is none (the common case).
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if !needs_escape(character) {
            escaped.push(character);
            continue;
        }
        let _ = match character {
            '\n' => escaped.write_str("\\n"),
            '\r' => escaped.write_str("\\r"),
            '\0' => escaped.write_str("\\0"),
            c if (c as u32) < 0x80 => write!(escaped, "\\x{:02x}", c as u32),
            c => write!(escaped, "\\u{{{:x}}}", c as u32),
        };
    }
    Cow::Owned(escaped)
}

/// `value` with every string in it, keys included, escaped
/// ([`escape_untrusted`]): JSON's own escapes decode to control characters
/// again in whatever reads the line.
pub(crate) fn escape_json_strings(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::from(escape_untrusted(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_json_strings).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    (
                        escape_untrusted(&key).into_owned(),
                        escape_json_strings(value),
                    )
                })
                .collect(),
        ),
        plain => plain,
    }
}

/// Control characters (C0 but tab, DEL, C1), the Unicode line and
/// paragraph separators, and the bidirectional overrides and isolates,
/// which reorder what a terminal shows.
fn needs_escape(character: char) -> bool {
    (character.is_control() && character != '\t')
        || matches!(character, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["GET / 200", "tab\tstays", "é ü 日本 ✓", "C:\\path\\n"] {
            assert!(matches!(escape_untrusted(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn line_breaks_and_terminal_controls_are_escaped() {
        assert_eq!(
            escape_untrusted("/tmp/x\nINFO all workers exited: cluster stopped"),
            "/tmp/x\\nINFO all workers exited: cluster stopped"
        );
        assert_eq!(
            escape_untrusted("\x1b[31mred\x1b[0m\r\0\x7f\u{8}"),
            "\\x1b[31mred\\x1b[0m\\r\\0\\x7f\\x08"
        );
        assert_eq!(escape_untrusted("a\u{9b}2Jb"), "a\\u{9b}2Jb");
        assert_eq!(
            escape_untrusted("abc\u{202e}fed\u{2028}x"),
            "abc\\u{202e}fed\\u{2028}x"
        );
    }

    #[test]
    fn escaping_is_idempotent_and_leaves_no_control_character() {
        let nasty: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let once = escape_untrusted(&nasty).into_owned();
        assert!(!once.chars().any(needs_escape));
        assert_eq!(escape_untrusted(&once), once);
    }
}
