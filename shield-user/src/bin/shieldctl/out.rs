//! Writing for people and for machines. Everything the daemon sends may
//! carry text from outside (a ban reason is a line from a log an attacker
//! writes to): shown escaped, never raw.

use std::io::{self, Write};
use std::time::Duration;

use shield::config::format_duration;
use shield::control::protocol::Lasts;
use shield::text::{escaped, json_safe};

/// Writes `text` to `out`. When the reader is gone (`shieldctl banned |
/// head`), ends the process by SIGPIPE, as coreutils do: quietly, and the
/// shell knows why. SIGPIPE itself stays ignored (Rust's default) until
/// then, so that a daemon closing the socket is an error handled, not a
/// death.
pub fn emit(out: &mut impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        r => r,
    }
}

fn die_of_sigpipe() -> ! {
    // SAFETY: setting a signal's default disposition and raising it have
    // no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached (SIGPIPE's default action ends the process); the
    // shell's code for it, should it be blocked.
    std::process::exit(128 + libc::SIGPIPE)
}

/// `value` as JSON text (pretty or one line) that is safe on a terminal
/// (see [`json_safe`]; serde_json already escapes C0 controls).
pub fn json_text(value: &impl serde::Serialize, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    // Serialising a `Value` or one of our reply structs cannot fail.
    let text = text.unwrap_or_else(|e| format!("{{\"error\":\"encoding the reply: {e}\"}}"));
    json_safe(&text).into_owned()
}

/// The items, escaped and comma-separated, or `none` if there are none.
pub fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        return none.into();
    }
    items
        .iter()
        .map(|i| escaped(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time left.
pub fn left(lasts: Lasts) -> String {
    match lasts {
        Lasts::Forever => "forever".into(),
        Lasts::Secs(0) => "<1s".into(),
        Lasts::Secs(s) => format_duration(Duration::from_secs(s)),
    }
}

/// Left-aligned columns, two spaces apart, numbers right-aligned. Cells
/// are escaped (they come from the daemon), and measured as escaped.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| escaped(c).into_owned()).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| !rows.is_empty() && rows.iter().all(|r| r[i].parse::<u64>().is_ok()))
        .collect();
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::from("  ");
        for (i, c) in cells.into_iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(&c);
            } else {
                s.push_str(&c);
                if i != last {
                    s.push_str(&" ".repeat(pad));
                }
            }
            if i != last {
                s.push_str("  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}
