//! The error type of every configuration file: which file, which field, and why.

use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
///
/// `field` is the dotted path of the offending field as written in the file
/// (`restart.backoff_max`, `health.url`, `limits.nofile`); it is empty for problems with the
/// whole file (unreadable, TOML syntax).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", .file.display(), field_prefix(.field), .reason)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Dotted path of the field, or `""` for the whole file.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl ConfigError {
    /// A problem with `field` of `file`.
    pub fn new(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// Collects the problems of one file, so validation can go on after the first one.
#[derive(Debug)]
pub(crate) struct Issues {
    file: PathBuf,
    pub(crate) errors: Vec<ConfigError>,
}

impl Issues {
    pub(crate) fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            errors: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    pub(crate) fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors
            .push(ConfigError::new(&self.file, field, reason));
    }

    /// `Some(value)` on success; on failure records the problem and gives `None`.
    pub(crate) fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(reason) => {
                self.add(field, reason);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_field() {
        let e = ConfigError::new(
            Path::new("/s/web.toml"),
            "restart.jitter",
            "must be at most 1",
        );
        assert_eq!(
            e.to_string(),
            "/s/web.toml: restart.jitter: must be at most 1"
        );
        let e = ConfigError::new(Path::new("/s/web.toml"), "", "line 1, column 2: bad");
        assert_eq!(e.to_string(), "/s/web.toml: line 1, column 2: bad");
    }
}
