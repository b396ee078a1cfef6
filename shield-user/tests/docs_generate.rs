//! Man pages and shell completions (`NAME --generate-docs DIR`, what
//! `cargo xtask docs` and `make deb` run): every command and option the
//! binaries' `--help` lists is in them, the pages render with man(1), and
//! bash really completes from the completion script. What is expected is
//! read from the binaries' own `--help`, never written down here.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run(cmd: &mut Command) -> String {
    let out = output_within(std::mem::replace(cmd, Command::new("true")), Duration::from_secs(30));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The subcommands and long options listed by `BIN [SUB] --help` (in its
/// `Commands:` and `Options:` sections; descriptions are not looked at).
fn help_items(bin: &str, sub: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut c = Command::new(bin);
    c.args(sub).arg("--help");
    let help = run(&mut c);
    let (mut commands, mut longs) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            section = line;
            continue;
        }
        // An item starts two blanks in (six for a long-only option); a
        // description's continuation lines are further in.
        let indent = line.len() - line.trim_start().len();
        if !(indent == 2 || (indent == 6 && line.trim_start().starts_with("--"))) {
            continue;
        }
        let mut words = line.split_whitespace();
        let word = words.next().unwrap_or("");
        match section {
            "Commands:" if word != "help" => commands.push(word.to_string()),
            "Options:" => {
                let long = std::iter::once(word).chain(words.next()).find(|w| w.starts_with("--"));
                if let Some(l) = long {
                    longs.push(l.trim_end_matches(',').split(['=', '[']).next().unwrap_or(l).to_string());
                }
            }
            _ => {}
        }
    }
    (commands, longs)
}

fn generate(bin: &str, dir: &Path) -> Vec<String> {
    let listed = run(Command::new(bin).arg("--generate-docs").arg(dir));
    listed.lines().map(str::to_string).collect()
}

/// The page rendered as text by man(1), so a broken roff shows up; the
/// overstrike bold and underline (`X\bX`, `_\bX`) taken out.
fn man_text(page: &Path) -> String {
    let raw = run(Command::new("man").env("MANWIDTH", "200").arg("-l").arg(page));
    let mut text = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_pages_cover_every_command_and_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bin, name) in [(SHIELDD, "shieldd"), (SHIELDCTL, "shieldctl")] {
        let files = generate(bin, dir.path());
        let (commands, longs) = help_items(bin, None);
        let main = dir.path().join(format!("man/{name}.8"));
        assert!(files.contains(&main.display().to_string()), "{name}: {files:?}");
        let text = man_text(&main);
        let title = text.lines().next().unwrap_or("");
        assert!(title.starts_with(&format!("{name}(8)")) && title.contains("SIP Shield"), "{name}.8 title: {title}");
        for item in commands.iter().chain(&longs) {
            assert!(text.contains(item.as_str()), "{name}.8 does not mention {item}:\n{text}");
        }
        for sub in &commands {
            let page = dir.path().join(format!("man/{name}-{sub}.8"));
            let text = man_text(&page);
            let (_, sub_longs) = help_items(bin, Some(sub));
            for item in &sub_longs {
                assert!(text.contains(item.as_str()), "{name}-{sub}.8 does not mention {item}:\n{text}");
            }
            assert!(text.contains(&format!("{name} {sub}")), "{name}-{sub}.8 has no usage line:\n{text}");
        }
        println!("{name}: {} pages, {} commands, {} options", 1 + commands.len(), commands.len(), longs.len());
    }
}

#[test]
fn completion_scripts_complete_commands_and_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bin, name) in [(SHIELDD, "shieldd"), (SHIELDCTL, "shieldctl")] {
        generate(bin, dir.path());
        let (commands, longs) = help_items(bin, None);
        let comp = dir.path().join("completions");
        for file in [format!("_{name}"), format!("{name}.fish")] {
            let text = std::fs::read_to_string(comp.join(&file)).expect(&file);
            for item in commands.iter().chain(&longs) {
                let bare = item.trim_start_matches('-');
                assert!(text.contains(bare), "{file} does not offer {item}");
            }
        }
        // bash itself: load the script and ask it, as readline would.
        let script = comp.join(format!("{name}.bash"));
        let ask = |words: &str| {
            let n = words.split(' ').count() - 1;
            let code = format!(
                "source {s}; COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
                 _{fname} {name} \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                s = script.display(),
                fname = name.replace('-', "__"),
            );
            run(Command::new("bash").arg("-c").arg(code))
        };
        let all: Vec<String> = ask(&format!("{name} -")).lines().map(str::to_string).collect();
        for long in &longs {
            assert!(all.contains(long), "bash offers {all:?} for `{name} -`, not {long}");
        }
        if let Some(first) = commands.first() {
            let prefix = &first[..2.min(first.len())];
            let offered: Vec<String> = ask(&format!("{name} {prefix}")).lines().map(str::to_string).collect();
            let expected: Vec<&String> = commands.iter().filter(|c| c.starts_with(prefix)).collect();
            for c in &expected {
                assert!(offered.contains(c), "bash offers {offered:?} for `{name} {prefix}`, not {c}");
            }
            assert!(offered.iter().all(|o| o.starts_with(prefix)), "bash offers {offered:?} for `{name} {prefix}`");
        }
    }
}

#[test]
fn bad_generate_docs_usage_is_exit_2_and_an_unwritable_dir_exit_1() {
    for bin in [SHIELDD, SHIELDCTL] {
        let out = output_within(
            {
                let mut c = Command::new(bin);
                c.arg("--generate-docs");
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(2), "{bin} --generate-docs (no dir)");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--generate-docs"));
        let file = tempfile::NamedTempFile::new().expect("tmp");
        let out = output_within(
            {
                let mut c = Command::new(bin);
                c.arg("--generate-docs").arg(file.path());
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(1), "{bin} --generate-docs onto a file");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&file.path().display().to_string()));
    }
}
