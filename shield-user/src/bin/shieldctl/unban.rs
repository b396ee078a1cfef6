//! `shieldctl unban TARGET` and `unban --all`.

use std::time::Duration;

use shield::control::protocol::{Request, UnbanReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::check_cidr;
use super::verb::{data, Verb, QUICK, SLOW};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network, exactly as banned.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    target: Option<String>,
    /// Lift every ban.
    #[arg(long)]
    all: bool,
}

impl Verb for Args {
    fn request(&self) -> Result<Request, Fail> {
        Ok(match &self.target {
            Some(t) => Request::Unban {
                net: Some(check_cidr(t)?),
                all: false,
            },
            None => Request::Unban {
                net: None,
                all: true,
            },
        })
    }

    fn timeout(&self) -> Duration {
        match self.target {
            Some(_) => QUICK,
            None => SLOW,
        }
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        let u: UnbanReply = data(reply)?;
        Ok(match u.removed.as_slice() {
            [one] => format!("unbanned {}\n", Escaped(one)),
            many => format!("unbanned {} ban(s)\n", many.len()),
        })
    }
}
