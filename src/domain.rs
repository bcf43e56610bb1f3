//! The domain's nouns, with no I/O: Moonborn users desired and actual, their status and
//! bindings, the SCIM → Moonborn mapping, planned changes, the safety valve's numbers and the one
//! time format. Store and controller both speak in these.

mod bindings;
mod change;
mod mapping;
mod safety;
mod time;
mod user;

pub use bindings::{binding_names, Binding, Bindings, BindingsChange, ROLES};
pub use change::{fingerprint, Change, ChangeKind, Summary};
pub use mapping::{desired_from_snapshot, desired_user, desired_user_from_str};
pub use safety::{Destructive, Judgement, Safety, SafetyChange, MAX_WAIT_SECS};
pub use time::{fmt_time, now, GRACE_DAYS};
pub use user::{new_resource_id, user_id_for, ActualUser, DesiredUser, ManagedBy, Record, Status};
