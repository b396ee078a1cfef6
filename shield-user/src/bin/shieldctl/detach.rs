//! `shieldctl detach`: through the daemon, or, with none running, by
//! removing the pins here.

use std::path::Path;

use shield::control::protocol::{Detach, DetachReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::config_path_value;
use super::out::{json_text, list_or};
use super::verb::{Ctx, Verb, SLOW};
use super::DEFAULT_PIN_PATH;

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        match ctx.ask(Detach {}, SLOW, render) {
            Err(f) if f.not_running => offline(ctx.config.as_deref(), ctx.json),
            r => r,
        }
    }
}

fn render(d: DetachReply) -> String {
    format!(
        "detached from {}; pins under {} removed; shieldd exited\n",
        list_or(&d.interfaces, "no interface"),
        Escaped(&d.pin_path)
    )
}

/// `shieldctl detach` with no daemon: remove the pins ourselves (the way
/// out when a daemon cannot start because of the pinned maps).
fn offline(config: Option<&Path>, json: bool) -> Result<String, Fail> {
    let pin = match config {
        Some(c) => {
            config_path_value(c, "shield", "pin_path")?.unwrap_or_else(|| DEFAULT_PIN_PATH.into())
        }
        None => DEFAULT_PIN_PATH.into(),
    };
    let removed =
        shield::kernel::remove_all(&pin).map_err(|e| Fail::system(format!("detach: {e}")))?;
    let reply = DetachReply {
        interfaces: removed.links.clone(),
        pin_path: pin.display().to_string(),
    };
    if json {
        return Ok(format!("{}\n", json_text(&reply, true)));
    }
    if removed.links.is_empty() && removed.other == 0 {
        return Ok(format!(
            "shieldd is not running and nothing is pinned under {}\n",
            pin.display()
        ));
    }
    Ok(format!(
        "shieldd is not running; detached from {} and removed the pins under {}\n",
        list_or(&removed.links, "no interface"),
        Escaped(&pin.display().to_string())
    ))
}
