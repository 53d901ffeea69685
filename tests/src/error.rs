//! One error type for the harness: a sentence saying what could not be set up, and why.

use std::fmt;

/// Debug prints the sentence as is, so `unwrap()` in a test shows it readably.
pub struct HarnessError(String);

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, HarnessError>;

impl HarnessError {
    pub fn new(msg: impl Into<String>) -> Self {
        HarnessError(msg.into())
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError(e.to_string())
    }
}

/// Adds what the harness was doing to an error.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| HarnessError(format!("{what}: {e}")))
    }
}

/// Returns early with a [`HarnessError`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::HarnessError::new(format!($($arg)*)))
    };
}
