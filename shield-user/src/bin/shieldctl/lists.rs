//! `shieldctl allow` and `shieldctl deny`: the same verb on two lists.

use shield::control::protocol::{self as p, ListChange, ListOp, ListReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::check_cidr;
use super::out::table;
use super::verb::{Ctx, Verb, QUICK};

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
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = p::Allow(self.args.checked("allow")?);
        ctx.ask(call, QUICK, |l| self.args.render(l))
    }
}

impl Verb for Deny {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = p::Deny(self.args.checked("deny")?);
        ctx.ask(call, QUICK, |l| self.args.render(l))
    }
}

impl ListArgs {
    fn checked(&self, list: &str) -> Result<ListChange, Fail> {
        let (op, net) = match (self.op, &self.cidr) {
            (Op::List, None) => (ListOp::List, None),
            (Op::List, Some(c)) => {
                return Err(Fail::usage(format!("{list} list takes no CIDR (got {c:?})")))
            }
            (Op::Add | Op::Del, None) => {
                return Err(Fail::usage(format!("{list} add/del needs a CIDR")))
            }
            (Op::Add, Some(c)) => (ListOp::Add, Some(check_cidr(c)?)),
            (Op::Del, Some(c)) => (ListOp::Del, Some(check_cidr(c)?)),
        };
        Ok(ListChange {
            op,
            net,
            force: self.force,
        })
    }

    fn render(&self, l: ListReply) -> String {
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
                    .map(|e| vec![e.net.to_string(), e.source])
                    .collect();
                out.push_str(&table(&["CIDR", "FROM"], rows));
            }
        }
        out
    }
}
