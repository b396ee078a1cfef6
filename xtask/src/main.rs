//! Project tasks: `cargo xtask test | bench | demo | docs | deb`.
//!
//! Run `scripts/setup.sh` first (or `make setup`): it installs the pinned
//! toolchain, bpf-linker and the packages the tests use.

mod package;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "SIP Shield project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every test: unit tests, the XDP program in the real kernel, traffic
    /// through network namespaces, the daemon and the real peers. As root.
    Test {
        /// Extra arguments for the test binaries (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The benchmarks: the data path under BPF_PROG_TEST_RUN (ratios
    /// against a bare XDP_DROP), the ban store with a million bans
    /// (`storebench`), then the lab benchmark against no
    /// protection, Kamailio pike and nftables, a million bans and jail
    /// latency against fail2ban, then the CrowdSec fleet (`fleetbench`,
    /// section 7), toll fraud (`tollbench`, 8) and a password guesser
    /// (`authbench`, 9); writes BENCHMARKS.md. As root. `-- --only fleet
    /// [ARGS]` runs only the fleet section (ARGS go to `fleetbench`), `--
    /// --only auth [ARGS]` only section 9 (ARGS go to `authbench`).
    Bench {
        /// Arguments for the lab benchmark (after `--`), e.g. `--quick`,
        /// `--only spoof`, `--only skb`, `--only fleet`, `--only auth`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The lab: attacker, carrier and SBC namespaces, a real Kamailio behind
    /// shieldd, legitimate calls and registrations, scanners, a flood and a
    /// password guesser, a live report. As root.
    Demo {
        /// Arguments for the demo (after `--`), e.g. `--hold`, or `--fleet` for the
        /// fleet demo (three SBCs sharing bans through a real CrowdSec LAPI).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Man pages (section 8) and bash/zsh/fish completions for shieldd and
    /// shieldctl, generated from their clap definitions.
    Docs {
        /// Where to write them [default: target/release/deb-assets].
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// The Debian package (`make deb`): cargo-deb from shield-user's
    /// [package.metadata.deb], written to target/debian/.
    Deb,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the tests load XDP programs and create network namespaces");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Test { args } => {
            require_root()?;
            let mut a = vec!["test", "--workspace", "--exclude", "shield-ebpf", "--release", "--no-fail-fast"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            cargo(&a)
        }
        Task::Bench { args } => {
            require_root()?;
            for (section, binary) in [("fleet", "fleetbench"), ("auth", "authbench")] {
                if let Some(rest) = only(&args, section) {
                    build_lab()?;
                    return run_lab_binary(binary, &rest);
                }
            }
            let full = !args.iter().any(|a| a == "--only" || a.starts_with("--only="));
            let datapath = lab_out()?.join("datapath.txt");
            cargo_tee(&["bench", "-p", "shield-tests", "--bench", "datapath"], &datapath)?;
            build_lab()?;
            let banstore = lab_out()?.join("banstore.txt");
            run_lab_binary("storebench", &["--out".to_string(), banstore.display().to_string()])?;
            let mut a = vec![
                "--datapath".to_string(),
                datapath.display().to_string(),
                "--banstore".to_string(),
                banstore.display().to_string(),
            ];
            a.extend(args);
            run_lab_binary("labbench", &a)?;
            if full {
                // Sections 7 (CrowdSec fleet), 8 (toll fraud) and 9 (a
                // password guesser), spliced into what labbench wrote.
                run_lab_binary("fleetbench", &[])?;
                run_lab_binary("tollbench", &[])?;
                run_lab_binary("authbench", &[])?;
            }
            Ok(())
        }
        Task::Demo { args } => {
            require_root()?;
            build_lab()?;
            run_lab_binary("demo", &args)
        }
        Task::Docs { out } => package::docs(out.as_deref()).map(drop),
        Task::Deb => package::deb().map(drop),
    }
}

/// `--only SECTION` among the bench arguments: the other arguments (for
/// the section's own binary), or `None` when it is not asked for alone.
fn only(args: &[String], section: &str) -> Option<Vec<String>> {
    let mut rest = Vec::new();
    let mut found = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.strip_prefix("--only=") == Some(section) {
            found = true;
        } else if a == "--only" {
            match it.next() {
                Some(v) if v == section => found = true,
                Some(v) => {
                    rest.push(a.clone());
                    rest.push(v.clone());
                }
                None => rest.push(a.clone()),
            }
        } else {
            rest.push(a.clone());
        }
    }
    found.then_some(rest)
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `lab-out/` in the workspace (git-ignored), created.
fn lab_out() -> Result<std::path::PathBuf> {
    let d = workspace().join("lab-out");
    std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    Ok(d)
}

/// Builds what the lab runs: shieldd, shieldctl and the lab binaries
/// (demo, flood, labbench), release profile.
fn build_lab() -> Result<()> {
    cargo(&["build", "--release", "-p", "shield-user", "-p", "shield-tests", "--bins"])
}

/// Runs `cargo args`, echoing its standard output and saving it to `file`.
fn cargo_tee(args: &[&str], file: &std::path::Path) -> Result<()> {
    use std::io::{BufRead, Write};
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut saved = std::fs::File::create(file).with_context(|| file.display().to_string())?;
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        writeln!(saved, "{line}")?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

static FORWARD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    FORWARD.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// Runs a lab binary from target/release. SIGINT and SIGTERM are passed on
/// to it (a terminal's Ctrl-C reaches it directly as well): it cleans up its
/// lab before exiting, and xtask waits for that.
fn run_lab_binary(name: &str, args: &[String]) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), Into::into);
    let exe = target.join("release").join(name);
    let mut child = Command::new(&exe).args(args).spawn().with_context(|| exe.display().to_string())?;
    // SAFETY: the handler only stores to an atomic; the child has already
    // exec'd with the default dispositions.
    unsafe {
        libc::signal(libc::SIGINT, remember_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, remember_signal as *const () as libc::sighandler_t);
    }
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let sig = FORWARD.swap(0, std::sync::atomic::Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
