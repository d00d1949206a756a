//! [`Component`]: a service as diagnosis sees it.

use std::fmt;
use std::sync::Arc;

use mend_types::ServiceName;

/// A service as diagnosis sees it: a supervised service's name, or the `service` label of scraped or
/// replayed series. Replayed incidents from other systems name their services freely (`ts-order-service`,
/// `Frontend`), so this is not a [`ServiceName`], whose rules are stricter; a ranking must give the names
/// back exactly as they came.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Component(Arc<str>);

impl Component {
    /// A component named `name`.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&ServiceName> for Component {
    fn from(name: &ServiceName) -> Self {
        Self::new(name.as_str())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
