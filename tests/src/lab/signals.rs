//! Ctrl-C for the demo and the bench: SIGINT, SIGTERM and SIGHUP set a
//! flag; the long-running loops check it ([`check`], [`sleep`]) and return
//! an error, so the stack unwinds through the drop guards that stop the
//! processes and delete the namespaces. The lab's children run in their own
//! process groups, so the terminal's signal does not kill them before the
//! driver can stop them in order.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers (once, at the start of `main`).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error returned when the run was interrupted.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// `Err(Interrupted)` once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps for `d`, waking early (with an error) on a signal.
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A lab driver's exit: its own code when it ran to the end, 130 when
/// interrupted, 1 with the error and where the logs are when it failed.
/// Either way the drop guards have removed the `lab` ("lab", "fleet") by
/// then, and this says so.
pub fn exit_code(result: anyhow::Result<ExitCode>, name: &str, lab: &str, logs: &str) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) if e.is::<Interrupted>() || interrupted() => {
            println!("\nInterrupted: {lab} removed (processes stopped, namespaces deleted).");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\n{name} failed: {e:#}\nThe {lab} is removed; logs are in {logs}.");
            ExitCode::FAILURE
        }
    }
}
