//! Who is signed in to the console (the extractor that finds out is in `auth`).

use crate::admin::Operator;
use crate::store::ConsoleSession;

/// A signed-in operator: the session and who it is.
#[derive(Debug, Clone)]
pub struct Signed {
    pub session: ConsoleSession,
    pub op: Operator,
}

impl Signed {
    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.session.operator.name
    }

    /// The slug of the one tenant this operator may see, if scoped.
    pub fn scope(&self) -> Option<&str> {
        self.session.operator.tenant_slug.as_deref()
    }
}
