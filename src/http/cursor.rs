//! RFC 9865 cursors: opaque, tamper-evident and expiring. A cursor names where a walk stands (the
//! resource kind and the `seq` of the last resource it returned: creation order, which no write
//! changes) and is bound to its tenant and query; it is signed with HMAC-SHA256 under a key kept
//! in the database, so any process on it honours any other's cursors.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::scim::schema::Kind;
use crate::scim::{ScimError, ScimType};

use crate::scim::schema::CURSOR_TIMEOUT_SECS;
/// The `service_keys` row of the signing key.
pub const KEY_NAME: &str = "cursor";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where a walk stands: after the resource of kind `kind` with `seq` (0: at the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub kind: Kind,
    pub after_seq: i64,
}

fn kind_code(k: Kind) -> &'static str {
    match k {
        Kind::User => "u",
        Kind::Group => "g",
    }
}

/// What a cursor is bound to: the tenant and the query (its endpoint and filter); a cursor used
/// with another query is invalid.
pub fn scope(tenant_id: i64, endpoint: &str, filter: Option<&crate::scim::filter::Filter>) -> String {
    let h = Sha256::digest(format!("{tenant_id}\n{endpoint}\n{filter:?}").as_bytes());
    hex::encode(&h[..12])
}

fn mac(key: &[u8], payload: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    m.finalize().into_bytes()[..16].to_vec()
}

/// The cursor of the page after `pos`, issued at `now` (unix seconds).
pub fn encode(key: &[u8], scope: &str, pos: Position, now: i64) -> String {
    let payload = format!("1.{scope}.{}.{}.{}", kind_code(pos.kind), pos.after_seq, now + CURSOR_TIMEOUT_SECS);
    format!("{}.{}", B64.encode(payload.as_bytes()), B64.encode(mac(key, &payload)))
}

/// Reads a cursor: `""` is the start of the walk (`first` kind).
///
/// # Errors
/// 400 `invalidCursor` for a cursor this server did not issue for this tenant and query (or one
/// altered); 400 `expiredCursor` for one past its timeout.
pub fn decode(key: &[u8], scope: &str, cursor: &str, first: Kind, now: i64) -> Result<Position, ScimError> {
    if cursor.is_empty() {
        return Ok(Position { kind: first, after_seq: 0 });
    }
    let invalid = || {
        ScimError::bad(
            ScimType::InvalidCursor,
            "the cursor is not valid: use an empty cursor for the first page, then each page's nextCursor",
        )
    };
    let (payload, sig) = cursor.split_once('.').ok_or_else(invalid)?;
    let payload = String::from_utf8(B64.decode(payload).map_err(|_| invalid())?).map_err(|_| invalid())?;
    let sig = B64.decode(sig).map_err(|_| invalid())?;
    // All 16 bytes: a shorter signature would be checked against only its length's worth.
    if sig.len() != 16 {
        return Err(invalid());
    }
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    m.verify_truncated_left(&sig).map_err(|_| invalid())?;
    let parts: Vec<&str> = payload.split('.').collect();
    let [ver, sc, kind, seq, expires] = parts[..] else { return Err(invalid()) };
    if ver != "1" || sc != scope {
        return Err(invalid());
    }
    let kind = match kind {
        "u" => Kind::User,
        "g" => Kind::Group,
        _ => return Err(invalid()),
    };
    let after_seq: i64 = seq.parse().map_err(|_| invalid())?;
    let expires: i64 = expires.parse().map_err(|_| invalid())?;
    if now > expires {
        return Err(ScimError::bad(
            ScimType::ExpiredCursor,
            format!(
                "the cursor expired (cursors last {CURSOR_TIMEOUT_SECS} s); start the walk again with an empty cursor"
            ),
        ));
    }
    Ok(Position { kind, after_seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgery_other_queries_and_age() {
        let key = [7u8; 32];
        let s = scope(1, "Users", None);
        let pos = Position { kind: Kind::Group, after_seq: 42 };
        let c = encode(&key, &s, pos, 1_000);
        assert_eq!(decode(&key, &s, &c, Kind::User, 1_000).unwrap(), pos);
        assert_eq!(decode(&key, &s, "", Kind::User, 1_000).unwrap(), Position { kind: Kind::User, after_seq: 0 });
        let code = |r: Result<Position, ScimError>| r.unwrap_err().scim_type.map(|t| t.as_str());
        // Another key, tenant or filter; an altered payload; garbage.
        assert_eq!(code(decode(&[8u8; 32], &s, &c, Kind::User, 1_000)), Some("invalidCursor"));
        assert_eq!(code(decode(&key, &scope(2, "Users", None), &c, Kind::User, 1_000)), Some("invalidCursor"));
        let (p, sig) = c.split_once('.').unwrap();
        let forged = String::from_utf8(B64.decode(p).unwrap()).unwrap().replace(".42.", ".1.");
        let forged = format!("{}.{sig}", B64.encode(forged));
        assert_eq!(code(decode(&key, &s, &forged, Kind::User, 1_000)), Some("invalidCursor"));
        assert_eq!(code(decode(&key, &s, "not-a-cursor", Kind::User, 1_000)), Some("invalidCursor"));
        // A signature cut short is not checked against a prefix of the MAC.
        let short = format!("{p}.{}", B64.encode(&B64.decode(sig).unwrap()[..1]));
        assert_eq!(code(decode(&key, &s, &short, Kind::User, 1_000)), Some("invalidCursor"));
        // Past its timeout.
        assert_eq!(code(decode(&key, &s, &c, Kind::User, 1_000 + CURSOR_TIMEOUT_SECS + 1)), Some("expiredCursor"));
    }
}
