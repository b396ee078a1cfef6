//! `shieldctl unverify TARGET`.

use shield::control::protocol::{Request, UnverifyReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::check_cidr;
use super::verb::{data, Verb};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network, as verified (see `verified`).
    target: String,
}

impl Verb for Args {
    fn request(&self) -> Result<Request, Fail> {
        Ok(Request::Unverify {
            net: check_cidr(&self.target)?,
        })
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        let u: UnverifyReply = data(reply)?;
        Ok(match u.removed {
            true => format!("unverified {}\n", Escaped(&u.net)),
            false => format!("{} was not verified\n", Escaped(&u.net)),
        })
    }
}
