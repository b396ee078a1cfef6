//! Arguments checked before anything is sent, so that bad input is exit 2
//! whether or not a daemon runs.

use std::path::{Path, PathBuf};

use shield::config::{parse_cidr, parse_duration};
use shield::control::protocol::{Lasts, Net};

use super::fail::Fail;

/// A `--duration` / `--ttl` value: a duration of at least a second, or
/// `forever`; `None` when not given.
pub fn lasts(flag: &str, text: Option<&str>) -> Result<Option<Lasts>, Fail> {
    Ok(match text {
        None => None,
        Some("forever" | "permanent" | "0") => Some(Lasts::Forever),
        Some(d) => match parse_duration(d)
            .map_err(|e| Fail::usage(format!("bad {flag} {d:?}: {e}")))?
            .as_secs()
        {
            0 => return Err(Fail::usage(format!("bad {flag} {d:?}: under a second"))),
            s => Some(Lasts::Secs(s)),
        },
    })
}

/// A `--since` value in seconds (at least one).
pub fn since_secs(text: &str) -> Result<u64, Fail> {
    match parse_duration(text)
        .map_err(|e| Fail::usage(format!("bad --since {text:?}: {e}")))?
        .as_secs()
    {
        0 => Err(Fail::usage(format!("bad --since {text:?}: under a second"))),
        s => Ok(s),
    }
}

pub fn check_cidr(text: &str) -> Result<Net, Fail> {
    parse_cidr(text)
        .map(Net)
        .map_err(|e| Fail::usage(format!("bad address or CIDR {text:?}: {e}")))
}

/// Reads one path-valued key from a config file without validating the
/// rest of it (a broken config must not stop `shieldctl reload` from
/// reporting what is wrong with it). Relative paths are relative to the file.
pub fn config_path_value(config: &Path, table: &str, key: &str) -> Result<Option<PathBuf>, Fail> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| Fail::usage(format!("--config {}: {e}", config.display())))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Fail::usage(format!("--config {}: not TOML: {e}", config.display())))?;
    let Some(v) = doc.get(table).and_then(|t| t.get(key)) else {
        return Ok(None);
    };
    let s = v.as_str().ok_or_else(|| {
        Fail::usage(format!(
            "--config {}: {table}.{key} is not a string",
            config.display()
        ))
    })?;
    let p = PathBuf::from(s);
    Ok(Some(if p.is_relative() {
        config.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    }))
}
