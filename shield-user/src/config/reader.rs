//! A span-aware walk over a parsed TOML document.
//!
//! `toml_edit`'s [`ImDocument`](toml_edit::ImDocument) keeps the byte span of
//! every key and value, which is what turns "bad value" into "line 12". The
//! walk never stops at the first problem: a bad value is reported, replaced by
//! its default, and reading goes on, so one `--check` run lists everything.
//!
//! [`Section`] is a table being read. Every key the schema asks for is marked
//! as known; [`Section::finish`] then reports whatever is left as unknown.
//! [`Val`] is one value with its location, and converts itself to the typed
//! value or reports why it cannot.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, Key, TableLike, Value};

use super::duration::{duration_from_secs, parse_duration, DurationError};
use super::error::ConfigError;

/// Where a value sits: its dotted key and its line in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Spot {
    pub key: String,
    pub line: Option<usize>,
}

impl Spot {
    fn join(&self, key: &str, line: Option<usize>) -> Spot {
        let key = if self.key.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.key)
        };
        Spot {
            key,
            line: line.or(self.line),
        }
    }

    fn index(&self, i: usize, line: Option<usize>) -> Spot {
        Spot {
            key: format!("{}[{i}]", self.key),
            line: line.or(self.line),
        }
    }
}

/// The file being read: its name, where relative paths start, its line
/// table, and the problems found so far.
pub(super) struct Ctx {
    pub file: PathBuf,
    base: PathBuf,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    // Shared by every Section and Val of one walk; the walk is single-threaded
    // and never holds a borrow across calls.
    errors: RefCell<Vec<ConfigError>>,
}

impl Ctx {
    pub fn new(text: &str, origin: &Path) -> Ctx {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            file: origin.to_path_buf(),
            base: origin.parent().unwrap_or(Path::new("")).to_path_buf(),
            line_starts,
            errors: RefCell::new(Vec::new()),
        }
    }

    /// 1-based line of the start of `span`.
    pub fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start;
        Some(self.line_starts.partition_point(|&s| s <= start))
    }

    pub fn error(&self, at: &Spot, message: impl Display) {
        self.error_in(&self.file, at.line, &at.key, message);
    }

    /// A problem in another file (an allow/deny list) reached through `key`.
    pub fn error_in(&self, file: &Path, line: Option<usize>, key: &str, message: impl Display) {
        self.errors.borrow_mut().push(ConfigError {
            file: file.to_path_buf(),
            line,
            key: key.to_owned(),
            message: message.to_string(),
        });
    }

    /// Relative paths in the config are relative to the config file's
    /// directory, not to wherever the daemon happens to run.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors.into_inner()
    }
}

/// A node of the document: a table entry, or an array element (which
/// `toml_edit` stores as a bare [`Value`]).
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(item) => item.as_value(),
            Node::Value(v) => Some(v),
        }
    }

    fn table(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    /// "a string", "a table": for "expected X, found Y".
    fn describe(self) -> &'static str {
        let v = match self {
            Node::Item(Item::None) => return "nothing",
            Node::Item(Item::Table(_)) => return "a table",
            Node::Item(Item::ArrayOfTables(_)) => return "an array of tables",
            Node::Item(Item::Value(v)) | Node::Value(v) => v,
        };
        match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        }
    }
}

/// One value and where it is.
pub(super) struct Val<'a> {
    pub cx: &'a Ctx,
    pub spot: Spot,
    node: Node<'a>,
}

impl<'a> Val<'a> {
    pub fn error(&self, message: impl Display) {
        self.cx.error(&self.spot, message);
    }

    fn type_error(&self, what: &str) {
        self.error(format_args!(
            "expected {what}, found {}",
            self.node.describe()
        ));
    }

    /// `get` the typed value, or report that `what` was expected.
    fn expect<T>(&self, what: &str, get: impl FnOnce(&'a Value) -> Option<T>) -> Option<T> {
        let got = self.node.value().and_then(get);
        if got.is_none() {
            self.type_error(what);
        }
        got
    }

    pub fn bool(&self) -> Option<bool> {
        self.expect("a boolean", Value::as_bool)
    }

    pub fn str(&self) -> Option<&'a str> {
        self.expect("a string", |v| v.as_str())
    }

    /// An integer in `range` (inclusive), converted to `T`.
    pub fn int<T>(&self, range: RangeInclusive<T>) -> Option<T>
    where
        T: Copy + Into<i64> + TryFrom<i64>,
    {
        let n = self.expect("an integer", Value::as_integer)?;
        let (lo, hi) = ((*range.start()).into(), (*range.end()).into());
        if n < lo {
            self.error(format_args!("must be at least {lo} (got {n})"));
            return None;
        }
        if n > hi {
            self.error(format_args!("must be at most {hi} (got {n})"));
            return None;
        }
        T::try_from(n).ok()
    }

    /// A duration string (`"10m"`, `"1h30m"`, `"600"`) or an integer of
    /// seconds. Zero is rejected: every duration in the schema is a ban
    /// length or a window, and zero of either means "never", which is what
    /// the on/off switches are for.
    pub fn duration(&self) -> Option<Duration> {
        const WHAT: &str = "a duration (\"30s\", \"10m\", \"1h30m\", ... or seconds)";
        let parsed = match self.node.value() {
            Some(Value::String(s)) => parse_duration(s.value()),
            Some(Value::Integer(n)) => match u64::try_from(*n.value()) {
                Ok(secs) => duration_from_secs(secs),
                Err(_) => Err(DurationError::Negative),
            },
            _ => {
                self.type_error(WHAT);
                return None;
            }
        };
        match parsed {
            Ok(d) if d.is_zero() => self.error("must be at least 1s (got 0s)"),
            Ok(d) => return Some(d),
            Err(e) => self.error(format_args!("bad duration: {e}")),
        }
        None
    }

    /// A non-empty path, resolved against the config file's directory.
    pub fn path(&self) -> Option<PathBuf> {
        match self.str()? {
            "" => {
                self.error("must not be empty");
                None
            }
            p => Some(self.cx.resolve(p)),
        }
    }

    /// The elements of an array, each with its own location (`key[i]`).
    pub fn array(&self) -> Option<Vec<Val<'a>>> {
        let array = self.expect("an array", Value::as_array)?;
        let items = array.iter().enumerate().map(|(i, v)| Val {
            cx: self.cx,
            spot: self.spot.index(i, self.cx.line_of(v.span())),
            node: Node::Value(v),
        });
        Some(items.collect())
    }

    /// A table (`[x]` or `{ ... }`) to read key by key.
    pub fn table(&self) -> Option<Section<'a>> {
        let Some(table) = self.node.table() else {
            self.type_error("a table");
            return None;
        };
        Some(Section {
            cx: self.cx,
            spot: self.spot.clone(),
            table: Some(table),
            known: Vec::new(),
        })
    }
}

/// A table being read. An absent table reads as empty, so every key takes its
/// default and a missing section needs no special case.
pub(super) struct Section<'a> {
    cx: &'a Ctx,
    spot: Spot,
    table: Option<&'a dyn TableLike>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    pub fn root(cx: &'a Ctx, table: &'a dyn TableLike) -> Section<'a> {
        Section {
            cx,
            spot: Spot {
                key: String::new(),
                line: None,
            },
            table: Some(table),
            known: Vec::new(),
        }
    }

    pub fn cx(&self) -> &'a Ctx {
        self.cx
    }

    pub fn spot(&self) -> &Spot {
        &self.spot
    }

    pub fn is_present(&self) -> bool {
        self.table.is_some()
    }

    /// The value of `key`, if present; marks `key` as known either way.
    pub fn get(&mut self, key: &'static str) -> Option<Val<'a>> {
        self.known.push(key);
        self.lookup(key)
    }

    /// Like [`get`](Self::get), but reports a missing key.
    pub fn require(&mut self, key: &'static str) -> Option<Val<'a>> {
        let val = self.get(key);
        if val.is_none() && self.is_present() {
            self.cx
                .error(&self.spot.join(key, None), "required key is missing");
        }
        val
    }

    fn lookup(&self, key: &str) -> Option<Val<'a>> {
        let table = self.table?;
        let node = table.get(key).filter(|item| !item.is_none())?;
        // The key's own line; a dotted or implicit key may lack a span, then
        // the value's, then the enclosing table's.
        let line = self
            .cx
            .line_of(table.key(key).and_then(Key::span))
            .or_else(|| self.cx.line_of(node.span()));
        Some(Val {
            cx: self.cx,
            spot: self.spot.join(key, line),
            node: Node::Item(node),
        })
    }

    /// The sub-table `key` (`[a.b]`, `b = { ... }` or dotted `b.c = ...`).
    pub fn child(&mut self, key: &'static str) -> Section<'a> {
        self.get(key)
            .and_then(|v| v.table())
            .unwrap_or_else(|| self.absent(key))
    }

    fn absent(&self, key: &str) -> Section<'a> {
        Section {
            cx: self.cx,
            spot: self.spot.join(key, None),
            table: None,
            known: Vec::new(),
        }
    }

    /// An array of tables (`[[key]]`, or `key = [{ ... }, ...]`), each
    /// element named `key[i]`.
    pub fn tables(&mut self, key: &'static str) -> Vec<Section<'a>> {
        let Some(val) = self.get(key) else {
            return Vec::new();
        };
        if let Node::Item(Item::ArrayOfTables(array)) = val.node {
            return array
                .iter()
                .enumerate()
                .map(|(i, table)| Section {
                    cx: self.cx,
                    spot: val.spot.index(i, self.cx.line_of(table.span())),
                    table: Some(table),
                    known: Vec::new(),
                })
                .collect();
        }
        if let Node::Item(Item::Table(_)) = val.node {
            val.error(format_args!(
                "expected an array of tables ([[{key}]]), found a table ([{key}])"
            ));
            return Vec::new();
        }
        let elements = val.array().unwrap_or_default();
        elements.iter().filter_map(Val::table).collect()
    }

    /// Every entry, for tables whose keys are data (`[limits.methods]`).
    pub fn entries(self) -> Vec<(&'a str, Val<'a>)> {
        let Some(table) = self.table else {
            return Vec::new();
        };
        table
            .iter()
            .filter_map(|(key, _)| Some((key, self.lookup(key)?)))
            .collect()
    }

    /// Reports every key the schema did not ask for.
    pub fn finish(self) {
        let Some(table) = self.table else { return };
        for (key, item) in table.iter() {
            if self.known.contains(&key) {
                continue;
            }
            let spot = self
                .lookup(key)
                .map_or_else(|| self.spot.join(key, None), |v| v.spot);
            let what = if item.is_table() || item.is_array_of_tables() {
                "section"
            } else {
                "key"
            };
            let hint = match suggest(key, &self.known) {
                Some(near) => format!("did you mean `{near}`?"),
                None if self.known.is_empty() => "this table takes no keys".to_owned(),
                None => format!("expected one of: {}", self.known.join(", ")),
            };
            self.cx
                .error(&spot, format_args!("unknown {what} ({hint})"));
        }
    }

    // Typed shorthands: the value of `key`, or `default` when absent or bad
    // (bad values are reported by the conversion).

    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        self.get(key).and_then(|v| v.bool()).unwrap_or(default)
    }

    pub fn int<T>(&mut self, key: &'static str, default: T, range: RangeInclusive<T>) -> T
    where
        T: Copy + Into<i64> + TryFrom<i64>,
    {
        self.get(key).and_then(|v| v.int(range)).unwrap_or(default)
    }

    pub fn duration(&mut self, key: &'static str, default: Duration) -> Duration {
        self.get(key).and_then(|v| v.duration()).unwrap_or(default)
    }

    pub fn path(&mut self, key: &'static str, default: PathBuf) -> PathBuf {
        self.get(key).and_then(|v| v.path()).unwrap_or(default)
    }

    /// One of a fixed set of strings.
    pub fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)], default: T) -> T {
        let Some(val) = self.get(key) else {
            return default;
        };
        let Some(s) = val.str() else { return default };
        if let Some(&(_, t)) = options.iter().find(|(name, _)| *name == s) {
            return t;
        }
        let names: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        val.error(format_args!(
            "must be one of {} (got {s:?})",
            names.join(", ")
        ));
        default
    }

    /// The elements of the array `key`; `None` when absent.
    pub fn array(&mut self, key: &'static str) -> Option<Vec<Val<'a>>> {
        Some(self.get(key)?.array().unwrap_or_default())
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a
/// typo (edit distance at most 2, and less than half the word).
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, k)| d <= 2 && d * 2 < k.len().max(key.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Reads a file the config names (a list, a key, a CA), refusing anything
/// but a regular file: `/dev/zero` or a FIFO would hang the daemon (or
/// fill its memory) instead of failing the check.
pub(super) fn read_regular_file(path: &Path) -> std::io::Result<String> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    std::fs::read_to_string(path)
}

/// [`read_regular_file`] for a list file the key `v` names: `None` once
/// the failure is reported against that key.
pub(super) fn read_list_text(v: &Val, path: &Path) -> Option<String> {
    read_regular_file(path)
        .inspect_err(|e| v.error(format_args!("cannot read {}: {e}", path.display())))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_spans() {
        let cx = Ctx::new("a\nbc\n\nd", Path::new("x.toml"));
        assert_eq!(cx.line_of(Some(0..1)), Some(1));
        assert_eq!(cx.line_of(Some(1..2)), Some(1)); // the newline ends line 1
        assert_eq!(cx.line_of(Some(2..3)), Some(2));
        assert_eq!(cx.line_of(Some(5..5)), Some(3));
        assert_eq!(cx.line_of(Some(6..7)), Some(4));
        assert_eq!(cx.line_of(None), None);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let cx = Ctx::new("", Path::new("/etc/shield/shield.toml"));
        assert_eq!(
            cx.resolve("allow.txt"),
            PathBuf::from("/etc/shield/allow.txt")
        );
        assert_eq!(
            cx.resolve("/srv/allow.txt"),
            PathBuf::from("/srv/allow.txt")
        );
        let cx = Ctx::new("", Path::new("shield.toml"));
        assert_eq!(cx.resolve("allow.txt"), PathBuf::from("allow.txt"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("bantim", &["bantime", "maxtime"]), Some("bantime"));
        assert_eq!(suggest("burts", &["burst", "ipv6_prefix"]), Some("burst"));
        assert_eq!(suggest("ab", &["cd"]), None);
        assert_eq!(suggest("colour", &["mode"]), None);
    }
}
