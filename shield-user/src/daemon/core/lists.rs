//! shieldctl's allow/deny changes: the kernel's lists are the config's
//! entries plus these, which the store keeps.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Core, CtlError};
use crate::report::{ListEntry, ListOp, ListReply, Net};
use crate::daemon::guard;
use crate::kernel::List;

impl Core {
    pub fn list_op(
        &mut self,
        list: List,
        op: ListOp,
        net: Option<IpNet>,
        who: &str,
        force: bool,
    ) -> Result<(ListReply, Option<String>), CtlError> {
        let name = match list {
            List::Allow => "allow",
            List::Deny => "deny",
        };
        let config_nets: BTreeSet<IpNet> = match list {
            List::Allow => self.config.allow.nets.iter().map(IpNet::trunc).collect(),
            List::Deny => self.config.deny.nets.iter().map(IpNet::trunc).collect(),
        };
        let mut changed = None;
        let mut warning = None;
        if op != ListOp::List {
            let net = net
                .ok_or_else(|| {
                    CtlError::BadInput(format!("{name} {op:?}: a CIDR is required").to_lowercase())
                })?
                .trunc();
            let cli = match list {
                List::Allow => &mut self.cli.allow,
                List::Deny => &mut self.cli.deny,
            };
            match op {
                ListOp::Add => {
                    let b = &self.config.bans;
                    if let Some(why) =
                        guard::too_wide(&net, b.min_prefix_v4, b.min_prefix_v6).filter(|_| !force)
                    {
                        return Err(CtlError::BadInput(format!("not added: {why}")));
                    }
                    if config_nets.contains(&net) || cli.contains(&net) {
                        changed = Some(format!("{net} was already in the {name}list"));
                    } else {
                        let capacity = match list {
                            List::Allow => self.runtime.capacity.allow,
                            List::Deny => self.runtime.capacity.deny,
                        };
                        self.shield.maps.list_add(list, net).map_err(|e| {
                            CtlError::Failed(format!(
                                "adding {net} to the {name}list: {} (capacity.{name} = {capacity})",
                                crate::text::chain(&e)
                            ))
                        })?;
                        cli.push(net);
                        cli.sort();
                        changed = Some(format!("added {net}"));
                        tracing::info!(net = %net, list = name, by = who, "list add");
                    }
                }
                ListOp::Del => {
                    if let Some(p) = cli.iter().position(|n| *n == net) {
                        cli.remove(p);
                        if !config_nets.contains(&net) {
                            self.shield
                                .maps
                                .list_del(list, net)
                                .map_err(CtlError::map(format!("removing {net}")))?;
                        }
                        changed = Some(format!("removed {net}"));
                        tracing::info!(net = %net, list = name, by = who, "list del");
                    } else if config_nets.contains(&net) {
                        return Err(CtlError::BadInput(format!(
                            "{net} comes from the config file ({name}.cidrs or {name}.files): remove it there and reload"
                        )));
                    } else {
                        return Err(CtlError::BadInput(format!(
                            "{net} is not in the {name}list"
                        )));
                    }
                }
                ListOp::List => unreachable!(),
            }
            // The change is in force: a failed save is a warning, not a
            // failure (see `not_persisted`).
            if changed.as_deref().is_some_and(|c| !c.contains("already")) {
                let r = self.store.list_change(list, op == ListOp::Add, net, who);
                warning = self.saved(r);
            }
        }
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
        let reply = ListReply {
            list: name.into(),
            entries,
            changed,
        };
        Ok((reply, warning))
    }
}
