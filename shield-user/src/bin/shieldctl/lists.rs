//! `shieldctl allow` and `shieldctl deny`: the same verb on two lists.

use shield::control::protocol::{ListOp, ListReply, Net, Request};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::check_cidr;
use super::out::table;
use super::verb::{data, Verb};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Op {
    Add,
    Del,
    List,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(value_enum)]
    op: Op,
    cidr: Option<String>,
    /// Add a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct Allow {
    #[command(flatten)]
    args: ListArgs,
}

#[derive(clap::Args)]
pub struct Deny {
    #[command(flatten)]
    args: ListArgs,
}

impl Verb for Allow {
    fn request(&self) -> Result<Request, Fail> {
        let (op, net) = self.args.checked("allow")?;
        let force = self.args.force;
        Ok(Request::Allow { op, net, force })
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        self.args.render(reply)
    }
}

impl Verb for Deny {
    fn request(&self) -> Result<Request, Fail> {
        let (op, net) = self.args.checked("deny")?;
        let force = self.args.force;
        Ok(Request::Deny { op, net, force })
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        self.args.render(reply)
    }
}

impl ListArgs {
    fn checked(&self, list: &str) -> Result<(ListOp, Option<Net>), Fail> {
        match (self.op, &self.cidr) {
            (Op::List, None) => Ok((ListOp::List, None)),
            (Op::List, Some(c)) => Err(Fail::usage(format!(
                "{list} list takes no CIDR (got {c:?})"
            ))),
            (Op::Add | Op::Del, None) => Err(Fail::usage(format!("{list} add/del needs a CIDR"))),
            (Op::Add, Some(c)) => Ok((ListOp::Add, Some(check_cidr(c)?))),
            (Op::Del, Some(c)) => Ok((ListOp::Del, Some(check_cidr(c)?))),
        }
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        let l: ListReply = data(reply)?;
        let mut out = l
            .changed
            .map(|c| format!("{}\n", Escaped(&c)))
            .unwrap_or_default();
        if matches!(self.op, Op::List) {
            if l.entries.is_empty() {
                out.push_str(&format!("the {}list is empty\n", Escaped(&l.list)));
            } else {
                let rows = l
                    .entries
                    .into_iter()
                    .map(|e| vec![e.net, e.source])
                    .collect();
                out.push_str(&table(&["CIDR", "FROM"], rows));
            }
        }
        Ok(out)
    }
}
