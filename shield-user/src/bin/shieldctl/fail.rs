//! A failure and its exit code: 2 for bad usage or bad input, 1 for the
//! daemon or the system.

use shield::control::protocol::{ErrorBody, ErrorKind};

pub struct Fail {
    pub code: u8,
    pub message: String,
    pub details: Vec<String>,
    pub kind: ErrorKind,
    /// Nothing listens on the socket (`detach` has a way around that).
    pub not_running: bool,
}

impl Fail {
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
            details: Vec::new(),
            kind: ErrorKind::BadInput,
            not_running: false,
        }
    }

    pub fn system(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
            details: Vec::new(),
            kind: ErrorKind::Failed,
            not_running: false,
        }
    }

    pub fn not_running(message: impl Into<String>) -> Fail {
        Fail {
            not_running: true,
            ..Fail::system(message)
        }
    }

    /// The daemon's refusal, its kind deciding the exit code.
    pub fn from_daemon(err: ErrorBody) -> Fail {
        let code = match err.kind {
            ErrorKind::BadInput | ErrorKind::BadRequest => 2,
            ErrorKind::Failed | ErrorKind::Busy => 1,
        };
        Fail {
            code,
            message: err.message,
            details: err.details,
            kind: err.kind,
            not_running: false,
        }
    }
}
