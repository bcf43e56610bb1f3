//! Limits on what a request may hold, and the one validation of sign-in identities (SCIM
//! `userName` and `emails.value`, the admin API's emails). Both backends index the same strings
//! under the same limits, so a value one backend stores the other stores too, and a value over a
//! limit is the same SCIM 400 on both instead of whatever the database makes of it.

use unicode_normalization::UnicodeNormalization;

/// Longest sign-in identity (userName, an email value), in characters: RFC 5321's longest
/// address (64 + 1 + 255) rounded up.
pub const MAX_IDENTITY_CHARS: usize = 320;

/// Longest other indexed string (externalId, a Group's displayName), in characters. 512
/// characters are at most 2,048 bytes of UTF-8, lower-cased too, under PostgreSQL's B-tree
/// entry limit (about 2,700 bytes) with the tenant id beside them.
pub const MAX_INDEXED_CHARS: usize = 512;

/// Most values one multi-valued attribute of a User may hold (emails, phoneNumbers, …; a
/// Group's members live in their own table and are bounded by the body's values only).
pub const MAX_MULTI_VALUES: usize = 1000;

/// Most JSON values one request body may hold: every object, array, string, number, literal
/// and object member counts once. Parsed, each costs up to a few hundred bytes, so a body at
/// the limit takes tens of MB whatever its size in bytes.
pub const MAX_BODY_VALUES: usize = 200_000;

/// Why an identity was refused; `Display` is the SCIM error's detail without the field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    Empty,
    TooLong,
    SurroundingWhitespace,
    Forbidden(char),
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Empty => write!(f, "must not be empty"),
            IdentityError::TooLong => write!(f, "is longer than {MAX_IDENTITY_CHARS} characters"),
            IdentityError::SurroundingWhitespace => write!(f, "must not begin or end with whitespace"),
            IdentityError::Forbidden(c) => write!(f, "must not contain U+{:04X} ({})", *c as u32, kind_of(*c)),
        }
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

fn kind_of(c: char) -> &'static str {
    if c.is_control() {
        "a control character"
    } else if is_bidi_control(c) {
        "a bidirectional control"
    } else if is_zero_width(c) {
        "a zero-width character"
    } else {
        "a line separator"
    }
}

/// Checks a sign-in identity. Values are refused, never repaired: surrounding whitespace is not
/// trimmed (the IdP would read back another value than it sent, see drift and send it again),
/// and control characters (newlines, tabs), bidirectional controls, zero-width characters and
/// line separators — which make two different addresses look alike, or smuggle a header into
/// an email — are not stripped.
///
/// # Errors
/// What is wrong with the value.
pub fn check_identity(v: &str) -> Result<(), IdentityError> {
    if v.is_empty() {
        return Err(IdentityError::Empty);
    }
    if v.chars().nth(MAX_IDENTITY_CHARS).is_some() {
        return Err(IdentityError::TooLong);
    }
    if let Some(c) =
        v.chars().find(|&c| c.is_control() || is_bidi_control(c) || is_zero_width(c) || is_line_separator(c))
    {
        return Err(IdentityError::Forbidden(c));
    }
    if v.starts_with(char::is_whitespace) || v.ends_with(char::is_whitespace) {
        return Err(IdentityError::SurroundingWhitespace);
    }
    Ok(())
}

/// Whether an indexed string (externalId, a Group's displayName) is within [`MAX_INDEXED_CHARS`].
pub fn indexed_fits(v: &str) -> bool {
    v.len() <= MAX_INDEXED_CHARS || v.chars().nth(MAX_INDEXED_CHARS).is_none()
}

/// The key a sign-in identity is unique and looked up by: NFC-normalised and lower-cased, so
/// that `é` sent as one code point and as `e` + U+0301 are the same user. The value itself is
/// stored as sent.
pub fn identity_key(v: &str) -> String {
    if v.is_ascii() {
        return v.to_ascii_lowercase();
    }
    v.nfc().collect::<String>().to_lowercase().nfc().collect()
}

/// Counts the JSON values of a body (objects, arrays, strings, numbers, literals; an object
/// member's key counts as one more), stopping once past `limit`. A byte scan
/// without allocation, so that a body of millions of tiny values is refused before it is parsed.
/// Malformed JSON is counted approximately; the parser refuses it afterwards. `None`: more than
/// `limit`.
pub fn count_values(body: &[u8], limit: usize) -> Option<usize> {
    let mut n = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scalar = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                n += 1;
            }
            b'{' | b'[' => {
                in_scalar = false;
                n += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'}' | b']' => in_scalar = false,
            _ => {
                if !in_scalar {
                    in_scalar = true;
                    n += 1;
                }
            }
        }
        if n > limit {
            return None;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_identities_pass() {
        for v in ["alice@acme.com", "Ünïcödé@exämple.com", "john smith", "a", "o'brien+tag@x.example"] {
            assert_eq!(check_identity(v), Ok(()), "{v}");
        }
        assert_eq!(check_identity(&"a".repeat(MAX_IDENTITY_CHARS)), Ok(()));
        assert_eq!(check_identity(&"é".repeat(MAX_IDENTITY_CHARS)), Ok(()), "characters, not bytes");
    }

    #[test]
    fn hostile_identities_are_refused() {
        let forbidden = |c: char| Err(IdentityError::Forbidden(c));
        assert_eq!(check_identity("u@acme.example\nBcc: x@evil.example"), forbidden('\n'));
        assert_eq!(check_identity("u@acme\t.example"), forbidden('\t'));
        assert_eq!(check_identity("u@acme.example\r"), forbidden('\r'));
        assert_eq!(check_identity("moc.elpmaxe\u{202E}@u"), forbidden('\u{202E}'));
        for c in ['\u{202A}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}'] {
            assert_eq!(check_identity(&format!("a{c}b@x.example")), forbidden(c));
        }
        for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{2028}'] {
            assert_eq!(check_identity(&format!("a{c}b@x.example")), forbidden(c));
        }
        assert_eq!(check_identity(" u@acme.example"), Err(IdentityError::SurroundingWhitespace));
        assert_eq!(check_identity("u@acme.example\u{00A0}"), Err(IdentityError::SurroundingWhitespace));
        assert_eq!(check_identity(""), Err(IdentityError::Empty));
        assert_eq!(check_identity(&"a".repeat(MAX_IDENTITY_CHARS + 1)), Err(IdentityError::TooLong));
        assert_eq!(check_identity(&"a".repeat(1_000_000)), Err(IdentityError::TooLong));
        assert_eq!(
            IdentityError::Forbidden('\u{202E}').to_string(),
            "must not contain U+202E (a bidirectional control)"
        );
    }

    #[test]
    fn identity_keys_are_nfc_and_lower_case() {
        assert_eq!(identity_key("Alice@Acme.COM"), "alice@acme.com");
        assert_eq!(identity_key("Jose\u{301}@x.example"), identity_key("Jos\u{E9}@x.example"));
        assert_eq!(identity_key("JOSE\u{301}@x.example"), "jos\u{E9}@x.example");
    }

    #[test]
    fn indexed_strings_are_limited_in_characters() {
        assert!(indexed_fits(&"é".repeat(MAX_INDEXED_CHARS)));
        assert!(!indexed_fits(&"a".repeat(MAX_INDEXED_CHARS + 1)));
        // The largest fitting value stays under PostgreSQL's B-tree entry limit, lower-cased.
        assert!("\u{10400}".repeat(MAX_INDEXED_CHARS).to_lowercase().len() <= 2048);
    }

    #[test]
    fn values_are_counted_without_parsing() {
        assert_eq!(count_values(br#"{"a":[1,2,"x,y"],"b":{"c":null},"d":true}"#, 100), Some(12));
        assert_eq!(count_values(br#"["a\"b", -1.5e3 ,{}]"#, 100), Some(4));
        assert_eq!(count_values(b"[0,0,0,0]", 4), None);
        assert_eq!(count_values(b"[0,0,0,0]", 5), Some(5));
    }
}
