//! fail2ban's configuration format: Python `configparser` plus fail2ban's
//! extensions, as far as filter files use them.
//!
//! * INI sections; `key = value` or `key: value`; keys are case-insensitive;
//!   `#`/`;` comment lines; `;` after whitespace starts an inline comment;
//!   a value continues on following lines indented deeper than its key
//!   (blank lines inside a value are kept, comment lines are skipped).
//! * `[INCLUDES]` `before`/`after`: files read before/after this one, relative
//!   to its directory; each `X.conf` is followed by `X.local` when it exists;
//!   a missing include is skipped (as fail2ban does); cycles are cut.
//!   Later files override earlier ones per option; the overridden value stays
//!   reachable as `%(known/option)s`.
//! * `%(name)s` interpolation from the same section, `[DEFAULT]` or the
//!   filter options, `%(section/name)s`, `%(known/name)s`, `%%` for `%`;
//!   nested at most 10 deep, like Python.
//! * fail2ban's `<name>` tag substitution on the filter options, which is what
//!   resolves `<lt_<logtype>/__prefix_line>`, `<_daemon>`, `<mdre-<mode>>`:
//!   tags are replaced by other options or `[Definition]`/`section/option`
//!   values until none is left; unknown tags (`<HOST>`, `<F-CONTENT>`, …) stay.
//! * `[Init]` values (filter parameters) override `[Definition]` in tags;
//!   jail-supplied options (`filter = name[mode=normal]`) override both.
//!
//! Conditional sections (`[Definition?logtype=…]`) and `X.d/` directories are
//! not read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Filter options given by the jail (`filter = name[key=value]`), lowercase keys.
pub(crate) type Vars = BTreeMap<String, String>;

/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;
/// fail2ban's `MAX_TAG_REPLACE_COUNT`: replacements of one tag inside one value.
const MAX_TAG_REPLACE: usize = 25;
/// Bounds the work a malicious or broken file can cause (exponential nesting).
const MAX_VALUE_LEN: usize = 1 << 20;
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_FILE_LEN: u64 = 4 << 20;

/// Where a value was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => write!(f, "{}", self.file),
        }
    }
}

/// A problem in a filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: [{section}] {option}: {message}")]
    Value {
        at: Location,
        section: String,
        option: String,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

#[derive(Debug, Clone)]
struct Value {
    raw: String,
    at: Location,
    /// File line of each line of `raw`.
    lines: Vec<usize>,
}

type Section = BTreeMap<String, Value>;

#[derive(Debug, Default)]
struct ParsedFile {
    defaults: Section,
    sections: Vec<(String, Section)>,
}

impl ParsedFile {
    fn includes(&self, which: &str) -> Vec<String> {
        self.sections
            .iter()
            .filter(|(name, _)| name == "INCLUDES")
            .filter_map(|(_, s)| s.get(which))
            .flat_map(|v| {
                v.raw
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
            })
            .collect()
    }
}

/// Which part of a file the parser is in.
enum Target {
    Defaults,
    Section(usize),
}

fn target_section<'a>(
    parsed: &'a mut ParsedFile,
    target: &Option<Target>,
) -> Option<&'a mut Section> {
    match target {
        Some(Target::Defaults) => Some(&mut parsed.defaults),
        Some(Target::Section(i)) => parsed.sections.get_mut(*i).map(|(_, s)| s),
        None => None,
    }
}

/// Parses one file with Python `configparser` rules (strict: duplicate
/// sections or options in one file are errors).
fn parse(text: &str, file: &Arc<str>) -> Result<ParsedFile, ConfigError> {
    let mut parsed = ParsedFile::default();
    let mut target: Option<Target> = None;
    let mut option: Option<String> = None;
    let mut indent_level = 0usize;
    let at = |line: usize| Location {
        file: file.clone(),
        line: Some(line),
    };

    for (index, raw_line) in text.split('\n').enumerate() {
        let lineno = index + 1;
        let (value, comment, indent) = split_line(raw_line);
        // The value being continued, if any.
        let current = match &option {
            Some(opt) => target_section(&mut parsed, &target).and_then(|s| s.get_mut(opt)),
            None => None,
        };
        if value.is_empty() {
            // Blank lines belong to a multi-line value; comment lines do not.
            if let (Some(v), false) = (current, comment) {
                v.raw.push('\n');
                v.lines.push(lineno);
            }
            continue;
        }
        if let Some(v) = current.filter(|_| indent > indent_level) {
            v.raw.push('\n');
            v.raw.push_str(value);
            v.lines.push(lineno);
            continue;
        }
        indent_level = indent;
        option = None;
        if let Some(t) = header(&mut parsed, value, || at(lineno))? {
            target = Some(t);
            continue;
        }
        let Some(section) = target_section(&mut parsed, &target) else {
            return Err(ConfigError::Syntax {
                at: at(lineno),
                message: "option outside of any [section]".into(),
            });
        };
        option = Some(option_line(section, value, lineno, at(lineno))?);
    }
    trim_values(&mut parsed);
    Ok(parsed)
}

/// A line's value (comment and surrounding blanks cut off), whether the line
/// has a comment, and its indentation. A `;` starts an inline comment only
/// at the start or after a blank, as configparser has it.
fn split_line(raw_line: &str) -> (&str, bool, usize) {
    let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
    let inline = line
        .match_indices(';')
        .map(|(i, _)| i)
        .find(|&i| i == 0 || line[..i].ends_with(char::is_whitespace));
    let full = line.trim_start().starts_with(['#', ';']);
    let comment_start = if full { Some(0) } else { inline };
    let value = line[..comment_start.unwrap_or(line.len())].trim();
    (value, comment_start.is_some(), line.len() - line.trim_start().len())
}

/// A `[section]` header: the section it opens (a new one, or the
/// defaults), `None` when `value` is no header.
fn header(
    parsed: &mut ParsedFile,
    value: &str,
    at: impl Fn() -> Location,
) -> Result<Option<Target>, ConfigError> {
    let Some(header) = value
        .strip_prefix('[')
        .and_then(|v| v.rfind(']').map(|end| &v[..end]))
        .filter(|h| !h.is_empty())
    else {
        return Ok(None);
    };
    if header == "DEFAULT" {
        return Ok(Some(Target::Defaults));
    }
    if parsed.sections.iter().any(|(n, _)| n == header) {
        return Err(ConfigError::Syntax {
            at: at(),
            message: format!("section [{header}] appears twice"),
        });
    }
    parsed.sections.push((header.to_string(), Section::new()));
    Ok(Some(Target::Section(parsed.sections.len() - 1)))
}

/// A `key = value` (or `key: value`) line into `section`; the key.
fn option_line(
    section: &mut Section,
    value: &str,
    lineno: usize,
    at: Location,
) -> Result<String, ConfigError> {
    let Some(split) = value.find(['=', ':']) else {
        return Err(ConfigError::Syntax {
            at,
            message: format!("expected `key = value`, found `{value}`"),
        });
    };
    let key = value[..split].trim_end().to_lowercase();
    if key.is_empty() {
        return Err(ConfigError::Syntax {
            at,
            message: format!("missing option name in `{value}`"),
        });
    }
    if section.contains_key(&key) {
        return Err(ConfigError::Syntax {
            at,
            message: format!("option `{key}` appears twice in this section"),
        });
    }
    section.insert(
        key.clone(),
        Value {
            raw: value[split + 1..].trim().to_string(),
            at,
            lines: vec![lineno],
        },
    );
    Ok(key)
}

/// configparser strips trailing blank lines of multi-line values.
fn trim_values(parsed: &mut ParsedFile) {
    let trim = |s: &mut Section| {
        for v in s.values_mut() {
            let kept = v.raw.trim_end().len();
            v.raw.truncate(kept);
            v.lines.truncate(v.raw.split('\n').count());
        }
    };
    trim(&mut parsed.defaults);
    parsed.sections.iter_mut().for_each(|(_, s)| trim(s));
}

/// A filter's merged configuration (the file, its includes and `.local` files).
#[derive(Debug, Default)]
pub(crate) struct Config {
    defaults: Section,
    sections: HashMap<String, Section>,
    /// Values overridden by later files, per section (`%(known/x)s`).
    known: HashMap<String, Section>,
    /// Name of the main file, for messages.
    name: String,
}

impl Config {
    /// Reads a filter file with everything it includes.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut files = Vec::new();
        let mut loaded = HashSet::new();
        collect(path, &[], true, &mut files, &mut loaded)?;
        Ok(Config::merge(path.display().to_string(), files))
    }

    /// Parses a filter held in memory (the built-ins); includes are not allowed.
    pub(crate) fn from_source(name: &str, text: &str) -> Result<Config, ConfigError> {
        let parsed = parse(text, &Arc::from(name))?;
        if !parsed.includes("before").is_empty() || !parsed.includes("after").is_empty() {
            return Err(ConfigError::File {
                file: name.to_string(),
                message: "an in-memory filter cannot include files".into(),
            });
        }
        Ok(Config::merge(name.to_string(), vec![parsed]))
    }

    fn merge(name: String, files: Vec<ParsedFile>) -> Config {
        let mut config = Config {
            name,
            ..Config::default()
        };
        for file in files {
            config.defaults.extend(file.defaults);
            for (name, options) in file.sections {
                match config.sections.get_mut(&name) {
                    Some(existing) => {
                        let known = config.known.entry(name).or_default();
                        for (key, value) in options {
                            if let Some(old) = existing.insert(key.clone(), value) {
                                known.insert(key, old);
                            }
                        }
                    }
                    None => {
                        config.sections.insert(name, options);
                    }
                }
            }
        }
        config
    }

    fn section(&self, name: &str) -> Option<&Section> {
        match name.strip_prefix("KNOWN/") {
            Some(rest) => self.known.get(rest),
            None => self.sections.get(name),
        }
    }

    /// Python's `ConfigParser.get`: `vars`, then the section, then
    /// `[DEFAULT]`, interpolated. `Ok(None)` for a missing section or option.
    fn get(&self, section: &str, option: &str, vars: &Vars) -> Result<Option<String>, ConfigError> {
        let key = option.to_lowercase();
        let own = if section == "DEFAULT" {
            None
        } else {
            match self.section(section) {
                Some(s) => s.get(&key),
                None => return Ok(None),
            }
        };
        let (raw, at) = if let Some(v) = vars.get(&key) {
            (v.as_str(), None)
        } else if let Some(v) = own.or_else(|| self.defaults.get(&key)) {
            (v.raw.as_str(), Some(&v.at))
        } else {
            return Ok(None);
        };
        let origin = Origin {
            section,
            option: &key,
            at: at.cloned().unwrap_or_else(|| Location {
                file: Arc::from(format!("{} (filter options)", self.name)),
                line: None,
            }),
        };
        self.interpolate(raw, section, vars, 1, &origin).map(Some)
    }

    /// `%(name)s` lookup: the usual chain, then `section/name` forms.
    fn lookup<'a>(&'a self, name: &str, section: &str, vars: &'a Vars) -> Option<&'a str> {
        let key = name.to_lowercase();
        if let Some(v) = vars.get(&key) {
            return Some(v);
        }
        if let Some(v) = self
            .section(section)
            .and_then(|s| s.get(&key))
            .or_else(|| self.defaults.get(&key))
        {
            return Some(&v.raw);
        }
        let (sec, opt) = split_section_option(name)?;
        let opt = opt.to_lowercase();
        let found = match sec.to_ascii_lowercase().as_str() {
            "known" => self.known.get(section).and_then(|s| s.get(&opt)),
            "default" => None,
            _ => self.sections.get(sec)?.get(&opt),
        };
        found
            .or_else(|| self.defaults.get(&opt))
            .map(|v| v.raw.as_str())
    }

    fn interpolate(
        &self,
        value: &str,
        section: &str,
        vars: &Vars,
        depth: usize,
        origin: &Origin<'_>,
    ) -> Result<String, ConfigError> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(origin.error(format!(
                "%(...)s references nested more than {MAX_INTERPOLATION_DEPTH} deep (a reference cycle?)"
            )));
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("%(") {
                let Some(close) = after.find(')') else {
                    return Err(origin.error("unterminated `%(` reference".into()));
                };
                let name = &after[..close];
                let Some(after) = after[close + 1..].strip_prefix('s') else {
                    return Err(
                        origin.error(format!("bad reference `%({name})` (expected `%({name})s`)"))
                    );
                };
                rest = after;
                let Some(v) = self.lookup(name, section, vars) else {
                    return Err(origin.error(format!(
                        "`%({name})s` refers to an option that is not defined"
                    )));
                };
                if v.contains('%') {
                    out.push_str(&self.interpolate(v, section, vars, depth + 1, origin)?);
                } else {
                    out.push_str(v);
                }
                if out.len() > MAX_VALUE_LEN {
                    return Err(origin.error("value grows beyond 1 MiB when interpolated".into()));
                }
            } else {
                return Err(origin.error(
                    "`%` must be followed by `%` or `(` (write `%%` for a literal percent sign)"
                        .into(),
                ));
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// fail2ban's `get_ex` on `[Definition]`: understands `section/option`
    /// and `known/option` names (used to resolve `<…>` tags).
    fn get_ex(&self, option: &str, vars: &Vars) -> Result<Option<String>, ConfigError> {
        if let Some((sec, opt)) = split_section_option(option) {
            let candidates: Vec<&str> = match sec.to_ascii_lowercase().as_str() {
                "known" => vec!["KNOWN/Definition", "Definition"],
                "default" => vec!["DEFAULT"],
                _ => vec![sec],
            };
            for candidate in candidates {
                if let Some(v) = self.get(candidate, opt, &Vars::new())? {
                    return Ok(Some(v));
                }
            }
        }
        self.get("Definition", option, vars)
    }

    /// The filter options as fail2ban's filter reader resolves them.
    pub(crate) fn filter_definition(&self, options: &Vars) -> Result<Definition, ConfigError> {
        const OPTIONS: [&str; 7] = [
            "usedns",
            "prefregex",
            "ignoreregex",
            "failregex",
            "maxlines",
            "datepattern",
            "journalmatch",
        ];
        let Some(definition) = self.sections.get("Definition") else {
            return Err(ConfigError::File {
                file: self.name.clone(),
                message: "no [Definition] section".into(),
            });
        };
        let mut combined = BTreeMap::new();
        for name in OPTIONS {
            if options.contains_key(name) {
                continue;
            }
            if let Some(v) = self.get("Definition", name, options)? {
                combined.insert(name.to_string(), v);
            }
        }
        let mut init = options.clone();
        if !init.contains_key("logtype") && !definition.contains_key("logtype") {
            init.insert("logtype".into(), "file".into());
        }
        if let Some(section) = self.sections.get("Init") {
            for name in section.keys() {
                let v = self.get("Init", name, &Vars::new())?.unwrap_or_default();
                if !name.starts_with("known/") {
                    init.insert(format!("known/{name}"), v.clone());
                }
                init.entry(name.clone()).or_insert(v);
            }
        }
        combined.extend(init);
        substitute_tags(&mut combined, |name| self.get_ex(name, options), &self.name)?;

        let entries = |name: &'static str| -> Vec<Entry> {
            let Some(text) = combined.get(name) else {
                return Vec::new();
            };
            let source = definition.get(name).or_else(|| self.defaults.get(name));
            text.split('\n')
                .filter(|l| !l.is_empty())
                .enumerate()
                .map(|(index, l)| Entry {
                    text: l.to_string(),
                    option: name,
                    index: index + 1,
                    at: self.entry_location(source, text, index),
                })
                .collect()
        };
        let prefregex = entries("prefregex").into_iter().next();
        Ok(Definition {
            failregex: entries("failregex"),
            ignoreregex: entries("ignoreregex"),
            prefregex,
            datepattern: combined
                .get("datepattern")
                .map(|d| d.lines().map(str::to_string).collect())
                .unwrap_or_default(),
            maxlines: combined.get("maxlines").cloned(),
        })
    }

    /// File line of the `index`-th regex of an option: exact when the value
    /// was used as written, else the line of the option itself.
    fn entry_location(&self, source: Option<&Value>, text: &str, index: usize) -> Location {
        let Some(v) = source else {
            return Location {
                file: Arc::from(format!("{} (filter options)", self.name)),
                line: None,
            };
        };
        let line = if v.raw == text {
            v.raw
                .split('\n')
                .enumerate()
                .filter(|(_, l)| !l.is_empty())
                .nth(index)
                .and_then(|(i, _)| v.lines.get(i).copied())
        } else {
            None
        };
        Location {
            file: v.at.file.clone(),
            line: line.or(v.at.line),
        }
    }
}

/// Error context: which value was being resolved.
struct Origin<'a> {
    section: &'a str,
    option: &'a str,
    at: Location,
}

impl Origin<'_> {
    fn error(&self, message: String) -> ConfigError {
        ConfigError::Value {
            at: self.at.clone(),
            section: self.section.to_string(),
            option: self.option.to_string(),
            message,
        }
    }
}

/// `section/option` (fail2ban: `^([\w\-]+)/([^\s>]+)$`).
fn split_section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let sec_ok = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let opt_ok = !opt.is_empty() && !opt.contains(|c: char| c.is_whitespace() || c == '>');
    (sec_ok && opt_ok).then_some((sec, opt))
}

/// One regex of a multi-line option, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub text: String,
    pub option: &'static str,
    /// 1-based position among the option's regexes.
    pub index: usize,
    pub at: Location,
}

/// What a filter file defines, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Definition {
    pub failregex: Vec<Entry>,
    pub ignoreregex: Vec<Entry>,
    pub prefregex: Option<Entry>,
    pub datepattern: Vec<String>,
    pub maxlines: Option<String>,
}

/// Reads `path` (and its `.local`), with includes, in fail2ban's order.
fn collect(
    path: &Path,
    ancestors: &[PathBuf],
    required: bool,
    out: &mut Vec<ParsedFile>,
    loaded: &mut HashSet<PathBuf>,
) -> Result<(), ConfigError> {
    read_one(path, ancestors, required, out, loaded)?;
    if path.extension().is_some_and(|e| e == "conf") {
        read_one(&path.with_extension("local"), ancestors, false, out, loaded)?;
    }
    Ok(())
}

fn read_one(
    path: &Path,
    ancestors: &[PathBuf],
    required: bool,
    out: &mut Vec<ParsedFile>,
    loaded: &mut HashSet<PathBuf>,
) -> Result<(), ConfigError> {
    let display = path.display().to_string();
    if ancestors.len() > MAX_INCLUDE_DEPTH {
        return Err(ConfigError::File {
            file: display,
            message: format!("includes nested more than {MAX_INCLUDE_DEPTH} deep"),
        });
    }
    if loaded.contains(path) {
        return Ok(());
    }
    let read_error = |message: String| ConfigError::Read {
        path: display.clone(),
        message,
    };
    let bytes = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_LEN => {
            return Err(read_error(format!("larger than {MAX_FILE_LEN} bytes")));
        }
        Ok(_) => std::fs::read(path).map_err(|e| read_error(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
        Err(e) => return Err(read_error(e.to_string())),
    };
    let parsed = parse(
        &String::from_utf8_lossy(&bytes),
        &Arc::from(display.as_str()),
    )?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut chain = ancestors.to_vec();
    chain.push(path.to_path_buf());
    let include = |name: &str| -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    for name in parsed.includes("before") {
        let p = include(&name);
        if !chain.contains(&p) {
            collect(&p, &chain, false, out, loaded)?;
        }
    }
    let after = parsed.includes("after");
    loaded.insert(path.to_path_buf());
    out.push(parsed);
    for name in after {
        let p = include(&name);
        if !chain.contains(&p) {
            collect(&p, &chain, false, out, loaded)?;
        }
    }
    Ok(())
}

/// Finds the next `<name>` tag (fail2ban: `<([^ <>]+)>`) at or after `from`.
fn find_tag(value: &str, from: usize) -> Option<(usize, usize)> {
    let mut search = from;
    while let Some(offset) = value.get(search..)?.find('<') {
        let start = search + offset;
        let body = &value[start + 1..];
        let len = body
            .find(['<', '>', ' '])
            .filter(|&n| n > 0 && body[n..].starts_with('>'));
        if let Some(len) = len {
            return Some((start, start + len + 2));
        }
        search = start + 1;
    }
    None
}

/// fail2ban's `substituteRecursiveTags`: replaces `<name>` in every value by
/// the option `name` (or what `lookup` finds), repeating until stable.
fn substitute_tags(
    tags: &mut BTreeMap<String, String>,
    lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    file: &str,
) -> Result<(), ConfigError> {
    let mut done: HashSet<String> = HashSet::new();
    let mut counts: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let keys: Vec<String> = tags.keys().cloned().collect();
    let fail = |message: String| ConfigError::File {
        file: file.to_string(),
        message,
    };
    // Each round either replaces something or ends; the per-tag counters
    // bound the number of rounds.
    loop {
        let mut again = false;
        for key in &keys {
            if done.contains(key) {
                continue;
            }
            let Some(original) = tags.get(key).cloned() else {
                continue;
            };
            let mut value = original.clone();
            let count = counts.entry(key.clone()).or_default();
            let mut pos = 0;
            while let Some((start, end)) = find_tag(&value, pos) {
                let name = value[start + 1..end - 1].to_string();
                let seen = count.get(&name).copied().unwrap_or(0);
                if name == *key || seen >= MAX_TAG_REPLACE {
                    return Err(fail(format!(
                        "`{key}` refers to itself through `<{name}>`; it cannot be resolved"
                    )));
                }
                let replacement = match tags.get(&name) {
                    Some(v) => Some(v.clone()),
                    None => lookup(&name)?,
                };
                let Some(replacement) = replacement else {
                    pos = end;
                    continue;
                };
                value = value.replace(&format!("<{name}>"), &replacement);
                if value.len() > MAX_VALUE_LEN {
                    return Err(fail(format!(
                        "`{key}` grows beyond 1 MiB when its tags are resolved"
                    )));
                }
                count.insert(name, seen + 1);
                pos = start;
            }
            if value != original {
                again |= find_tag(&value, 0).is_some();
                tags.insert(key.clone(), value.clone());
            }
            if !value.contains('<') {
                done.insert(key.clone());
            }
        }
        if !again {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_source("test.conf", text).expect("parses")
    }

    fn definition(text: &str, options: &[(&str, &str)]) -> Result<Definition, ConfigError> {
        let vars = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config(text).filter_definition(&vars)
    }

    fn regexes(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn multi_line_values_comments_and_locations() {
        let d = definition(
            "# comment\n[Definition]\nfailregex = ^one <HOST>$\n    ^two <HOST>$ ; inline\n# skipped\n\n    ^three<HOST>;kept\nignoreregex=\n",
            &[],
        )
        .expect("ok");
        assert_eq!(
            regexes(&d.failregex),
            ["^one <HOST>$", "^two <HOST>$", "^three<HOST>;kept"]
        );
        let lines: Vec<_> = d.failregex.iter().map(|e| e.at.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(7)]);
        assert!(d.ignoreregex.is_empty());
    }

    #[test]
    fn interpolation_from_definition_default_and_sections() {
        let d = definition(
            "[DEFAULT]\n_daemon = \\S*\n[Definition]\n_daemon = sshd\npre = %(_daemon)s\\[\\d+\\]\nfailregex = ^%(pre)s: x %(other/thing)s 100%% <HOST>\n[other]\nthing = y\n",
            &[],
        )
        .expect("ok");
        assert_eq!(regexes(&d.failregex), [r"^sshd\[\d+\]: x y 100% <HOST>"]);
    }

    #[test]
    fn interpolation_errors_name_the_option() {
        let e = definition("[Definition]\nfailregex = %(missing)s\n", &[]).expect_err("fails");
        let msg = e.to_string();
        assert!(
            msg.contains("test.conf:2") && msg.contains("failregex") && msg.contains("missing"),
            "{msg}"
        );
        let e = definition(
            "[Definition]\na = %(b)s\nb = %(a)s\nfailregex = %(a)s\n",
            &[],
        )
        .expect_err("cycle");
        assert!(e.to_string().contains("nested"), "{e}");
        let e = definition("[Definition]\nfailregex = 50% <HOST>\n", &[]).expect_err("bad %");
        assert!(e.to_string().contains("%%"), "{e}");
    }

    #[test]
    fn tags_init_and_jail_options() {
        let text = "[Init]\nmode = normal\n[Definition]\nmdre-normal = ^n <HOST>$\nmdre-extra = ^e <HOST>$\n    <mdre-normal>\nfailregex = <mdre-<mode>>\n";
        let d = definition(text, &[]).expect("ok");
        assert_eq!(regexes(&d.failregex), ["^n <HOST>$"]);
        let d = definition(text, &[("mode", "extra")]).expect("ok");
        assert_eq!(regexes(&d.failregex), ["^e <HOST>$", "^n <HOST>$"]);
        let e =
            definition("[Definition]\na = <b>\nb = <a>\nfailregex = <a>\n", &[]).expect_err("loop");
        assert!(e.to_string().contains("itself"), "{e}");
    }

    #[test]
    fn syntax_errors() {
        for (text, want) in [
            ("failregex = x\n", "outside"),
            ("[Definition]\njunk\n", "key = value"),
            ("[Definition]\na = 1\na = 2\n", "twice"),
            ("[A]\n[A]\n", "twice"),
        ] {
            let e = Config::from_source("t.conf", text).expect_err(text);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        let e = definition("[Other]\nx = 1\n", &[]).expect_err("no definition");
        assert!(e.to_string().contains("[Definition]"), "{e}");
    }

    #[test]
    fn includes_known_and_local_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write =
            |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        write(
            "base.conf",
            "[INCLUDES]\nafter = base.local\n[DEFAULT]\n_daemon = \\S*\n[Definition]\nprefix = <_daemon>:\n[lt_file]\np = file-%(x)s\n",
        );
        write("base.local", "[Definition]\nprefix = local-<_daemon>:\n");
        write(
            "filter.conf",
            "[INCLUDES]\nbefore = base.conf\n          missing.conf\n[DEFAULT]\nx = 1\n[Definition]\n_daemon = kamailio\nfailregex = ^<prefix> <lt_<logtype>/p> <HOST>$\n[lt_file]\np = %(known/p)s+\n",
        );
        write("filter.local", "[Definition]\nignoreregex = ^ignored\n");
        let config = Config::load(&dir.path().join("filter.conf")).expect("loads");
        let d = config.filter_definition(&Vars::new()).expect("resolves");
        assert_eq!(regexes(&d.failregex), ["^local-kamailio: file-1+ <HOST>$"]);
        assert_eq!(regexes(&d.ignoreregex), ["^ignored"]);

        // A cycle of includes is cut, not followed forever.
        write(
            "a.conf",
            "[INCLUDES]\nbefore = b.conf\n[Definition]\nfailregex = a <HOST>\n",
        );
        write(
            "b.conf",
            "[INCLUDES]\nbefore = a.conf\n[Definition]\nx = 1\n",
        );
        let config = Config::load(&dir.path().join("a.conf")).expect("loads");
        assert_eq!(
            regexes(
                &config
                    .filter_definition(&Vars::new())
                    .expect("ok")
                    .failregex
            ),
            ["a <HOST>"]
        );

        let e = Config::load(&dir.path().join("nope.conf")).expect_err("missing");
        assert!(e.to_string().contains("nope.conf"), "{e}");
    }
}
