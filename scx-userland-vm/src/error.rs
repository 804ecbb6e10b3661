//! The library's error type.

use std::fmt;

/// Everything that can go wrong. Every message says what happened and, where there is
/// something to do about it, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A complete message.
    #[error("{0}")]
    Msg(String),
    /// An I/O error without more context.
    #[error("{0}")]
    Io(std::io::Error),
    /// What was being done when `cause` happened.
    #[error("{context}: {cause}")]
    Context {
        /// What was being done.
        context: String,
        /// What went wrong.
        cause: Box<Error>,
    },
    /// Host tools the VM needs are missing.
    #[error("{missing} missing on this host; install with: {install}")]
    MissingTools {
        /// What is missing (human readable).
        missing: String,
        /// The `apt-get install …` line that installs it.
        install: String,
    },
}

/// `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Msg(s)
    }
}

impl From<crate::guest::plan::PlanError> for Error {
    fn from(e: crate::guest::plan::PlanError) -> Self {
        Error::Msg(e.0)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Msg(e.to_string())
    }
}

/// Add what was being done to an error (like `anyhow::Context`).
pub(crate) trait Context<T> {
    /// Wrap the error with `context`.
    fn context<C: fmt::Display>(self, context: C) -> Result<T>;
    /// Wrap the error with the context `f` returns (only called on error).
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.to_string(),
            cause: Box::new(e.into()),
        })
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            cause: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.to_string()))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// `Error::Msg(format!(…))`.
macro_rules! err {
    ($($t:tt)*) => {
        $crate::error::Error::Msg(format!($($t)*))
    };
}

/// Return `Err(Error::Msg(format!(…)))`.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::error::err!($($t)*).into())
    };
}

pub(crate) use {bail, err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_into_one_line() {
        let r: Result<()> = Err(std::io::Error::from(std::io::ErrorKind::NotFound).into());
        let e = r.context("reading x").context("loading y").unwrap_err();
        assert_eq!(e.to_string(), "loading y: reading x: entity not found");
        assert!(std::error::Error::source(&e).is_none());
        let n: Option<u8> = None;
        assert_eq!(n.context("no value").unwrap_err().to_string(), "no value");
        fn f() -> Result<()> {
            bail!("bad {}", 1)
        }
        assert_eq!(f().unwrap_err().to_string(), "bad 1");
    }
}
