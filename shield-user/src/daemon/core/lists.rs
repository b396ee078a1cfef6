//! shieldctl's allow/deny changes: the kernel's lists are the config's
//! entries plus these, which the store keeps.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Core, CtlError};
use crate::report::{ListEntry, ListOp, ListReply, Net};
use crate::daemon::guard;
use crate::kernel::List;

fn list_name(list: List) -> &'static str {
    match list {
        List::Allow => "allow",
        List::Deny => "deny",
    }
}

impl Core {
    pub fn list_op(
        &mut self,
        list: List,
        op: ListOp,
        net: Option<IpNet>,
        who: &str,
        force: bool,
    ) -> Result<(ListReply, Option<String>), CtlError> {
        let name = list_name(list);
        let mut changed = None;
        let mut warning = None;
        if op != ListOp::List {
            let net = net
                .ok_or_else(|| {
                    CtlError::BadInput(format!("{name} {op:?}: a CIDR is required").to_lowercase())
                })?
                .trunc();
            let did = match op {
                ListOp::Add => self.list_add(list, net, who, force)?,
                _ => self.list_del(list, net, who)?,
            };
            // The change is in force: a failed save is a warning, not a
            // failure (see `not_persisted`).
            if !did.contains("already") {
                let r = self.store.list_change(list, op == ListOp::Add, net, who);
                warning = self.saved(r);
            }
            changed = Some(did);
        }
        Ok((self.list_reply(list, changed), warning))
    }

    /// The config file's entries of `list`.
    fn config_nets(&self, list: List) -> BTreeSet<IpNet> {
        match list {
            List::Allow => self.config.allow.nets.iter().map(IpNet::trunc).collect(),
            List::Deny => self.config.deny.nets.iter().map(IpNet::trunc).collect(),
        }
    }

    fn list_add(&mut self, list: List, net: IpNet, who: &str, force: bool) -> Result<String, CtlError> {
        let name = list_name(list);
        let b = &self.config.bans;
        if let Some(why) = guard::too_wide(&net, b.min_prefix_v4, b.min_prefix_v6).filter(|_| !force) {
            return Err(CtlError::BadInput(format!("not added: {why}")));
        }
        let in_config = self.config_nets(list).contains(&net);
        let (cli, capacity) = match list {
            List::Allow => (&mut self.cli.allow, self.runtime.capacity.allow),
            List::Deny => (&mut self.cli.deny, self.runtime.capacity.deny),
        };
        if in_config || cli.contains(&net) {
            return Ok(format!("{net} was already in the {name}list"));
        }
        self.shield.maps.list_add(list, net).map_err(|e| {
            CtlError::Failed(format!(
                "adding {net} to the {name}list: {} (capacity.{name} = {capacity})",
                crate::text::chain(&e)
            ))
        })?;
        cli.push(net);
        cli.sort();
        tracing::info!(net = %net, list = name, by = who, "list add");
        Ok(format!("added {net}"))
    }

    fn list_del(&mut self, list: List, net: IpNet, who: &str) -> Result<String, CtlError> {
        let name = list_name(list);
        let in_config = self.config_nets(list).contains(&net);
        let cli = match list {
            List::Allow => &mut self.cli.allow,
            List::Deny => &mut self.cli.deny,
        };
        let Some(p) = cli.iter().position(|n| *n == net) else {
            return Err(CtlError::BadInput(match in_config {
                true => format!(
                    "{net} comes from the config file ({name}.cidrs or {name}.files): remove it there and reload"
                ),
                false => format!("{net} is not in the {name}list"),
            }));
        };
        cli.remove(p);
        if !in_config {
            self.shield
                .maps
                .list_del(list, net)
                .map_err(CtlError::map(format!("removing {net}")))?;
        }
        tracing::info!(net = %net, list = name, by = who, "list del");
        Ok(format!("removed {net}"))
    }

    /// The list as `allow list` / `deny list` shows it.
    fn list_reply(&self, list: List, changed: Option<String>) -> ListReply {
        let config_nets = self.config_nets(list);
        let cli: BTreeSet<IpNet> = match list {
            List::Allow => self.cli.allow.iter().copied().collect(),
            List::Deny => self.cli.deny.iter().copied().collect(),
        };
        let mut entries: Vec<ListEntry> = config_nets
            .iter()
            .map(|n| ListEntry {
                net: Net(*n),
                source: "config".into(),
            })
            .chain(
                cli.iter()
                    .filter(|n| !config_nets.contains(n))
                    .map(|n| ListEntry {
                        net: Net(*n),
                        source: "cli".into(),
                    }),
            )
            .collect();
        // As text, as always listed.
        entries.sort_by_cached_key(|e| e.net.to_string());
        ListReply {
            list: list_name(list).into(),
            entries,
            changed,
        }
    }
}
