//! The one time format stored and compared: RFC 3339, UTC, milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// How long a soft-deleted user is kept before its personal data is purged.
pub const GRACE_DAYS: i64 = 30;

/// The time format stored and compared.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time as stored.
pub fn now() -> String {
    fmt_time(Utc::now())
}
