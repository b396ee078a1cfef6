//! Configuration errors: every problem found, each with file, line and key.

use std::fmt;
use std::path::PathBuf;

/// One problem, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, or the allow/deny list file the problem is in.
    pub file: PathBuf,
    /// 1-based line in `file`; `None` when the problem has no single line
    /// (the file cannot be read, or a whole-file limit is exceeded).
    pub line: Option<usize>,
    /// Dotted key: `limits.methods.REGISTER.burst`, `jail[1].findtime`,
    /// `allow.cidrs[0]` (indices count from 0). Empty for TOML syntax errors.
    pub key: String,
    pub message: String,
}

/// `shield.toml:12: limits.burst: must be at least 1 (got 0)`
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem in a configuration, never empty: config-file problems first
/// in line order, then problems inside list files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub(super) fn one(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }

    /// `None` when there is nothing to report.
    pub(super) fn from_vec(mut errors: Vec<ConfigError>, config: &std::path::Path) -> Option<Self> {
        if errors.is_empty() {
            return None;
        }
        // Stable: problems on one line keep the order they were found in.
        errors.sort_by(|a, b| {
            (a.file != config, &a.file, a.line).cmp(&(b.file != config, &b.file, b.line))
        });
        Some(ConfigErrors(errors))
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One problem per line, as `shieldd --check` prints them.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
