//! Applying a configuration, all or nothing (SPEC §3): everything that can
//! be checked without writing (the lists with shieldctl's runtime entries
//! against the map sizes) is checked first; then interfaces are attached
//! and the maps written; if any step fails, the old policy is written back
//! and the interfaces put back as they were before the error is returned.

use ipnet::IpNet;
use shield_common::sip::{ua_key, UaKey};

use super::{union, Core};
use crate::config::{AttachMode, Config};
use crate::daemon::DaemonError;
use crate::kernel::{self, List, MapId, Mode, ShieldMaps};

/// What applying a configuration writes into the lists and scanner maps.
struct Plan {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    scanners: Vec<UaKey>,
}

impl Plan {
    /// The config's lists plus shieldctl's runtime entries.
    fn of(cfg: &Config, cli: &crate::store::CliLists) -> Plan {
        Plan {
            allow: union(&cfg.allow.nets, &cli.allow),
            deny: union(&cfg.deny.nets, &cli.deny),
            scanners: cfg
                .sip
                .scanner_user_agents
                .iter()
                .filter_map(|s| ua_key(s))
                .collect(),
        }
    }
}

/// What an apply changed so far, for undoing it.
#[derive(Default)]
struct Undo {
    /// Interfaces this apply attached.
    attached: Vec<String>,
    /// Interfaces this apply detached, with the mode they had.
    detached: Vec<(String, Mode)>,
    /// Whether any map write was attempted.
    maps: bool,
}

type Write<'a> = (
    &'static str,
    Box<dyn Fn(&mut ShieldMaps) -> Result<(), crate::kernel::KernelError> + 'a>,
);

impl Core {
    /// Makes the kernel match `cfg`: policy, ports, allow/deny (config ∪
    /// shieldctl additions), scanner tokens, interfaces. Returns what
    /// changed, for the reload reply. All or nothing: on error the old
    /// configuration is in force again, in the kernel and here.
    pub fn apply(&mut self, cfg: &Config) -> Result<Vec<String>, DaemonError> {
        let plan = self.plan(cfg)?;
        if self.applied && self.config.destinations != cfg.destinations {
            // Before the new rules (and their ids) reach the kernel.
            self.fold_refusal_counts();
        }
        let mut changes = super::describe_changes(&self.config, cfg);
        let mut undo = Undo::default();
        // While a policy is enforced (a reload), interfaces are attached
        // first: a refused attach then changes nothing. On a first start,
        // maps first: no interface ever sees empty lists.
        let r = if self.attachments.is_empty() {
            self.write_new(cfg, &plan, &mut undo)
                .and_then(|()| self.attach_new(cfg, &mut undo, &mut changes))
        } else {
            self.attach_new(cfg, &mut undo, &mut changes)
                .and_then(|()| self.write_new(cfg, &plan, &mut undo))
        }
        .and_then(|()| self.detach_dropped(cfg, &mut undo, &mut changes))
        .and_then(|()| self.number_slots(cfg));
        if let Err(e) = r {
            // At start-up there is no old policy: `Core::start` unpins
            // what the attempt made.
            return Err(if self.applied {
                self.roll_back(undo, e)
            } else {
                e
            });
        }
        self.applied = true;
        for j in &cfg.jails {
            self.jail_failures.entry(j.name.clone()).or_insert(0);
        }
        let crowdsec_dropped = cfg.crowdsec.is_none() && self.config.crowdsec.is_some();
        self.config = cfg.clone();
        if crowdsec_dropped {
            self.drop_decisions();
        }
        Ok(changes)
    }

    /// Checks what `cfg` would write against the maps' sizes; writes
    /// nothing. The lists include shieldctl's runtime entries, which the
    /// config check cannot see.
    fn plan(&self, cfg: &Config) -> Result<Plan, DaemonError> {
        let plan = Plan::of(cfg, &self.cli);
        let tries = [MapId::AllowV4, MapId::AllowV6];
        self.fits("allow", &plan.allow, &cfg.allow.nets, tries)?;
        let tries = [MapId::DenyV4, MapId::DenyV6];
        self.fits("deny", &plan.deny, &cfg.deny.nets, tries)?;
        if let Some(max) = self.shield.maps.capacity(MapId::DestRules) {
            let n = cfg.destinations.trie().len();
            if n > max as usize {
                return Err(DaemonError::Unfit(format!(
                    "[destinations]: {n} distinct prefixes exceed the {max} entries of DEST_RULES \
                     (capacity is read at start: restart shieldd to resize)"
                )));
            }
        }
        if let Some(max) = self.shield.maps.capacity(MapId::Scanners) {
            if plan.scanners.len() > max as usize {
                return Err(DaemonError::Unfit(format!(
                    "[sip] scanner_user_agents: {} tokens exceed the {} entries of SCANNERS",
                    plan.scanners.len(),
                    max
                )));
            }
        }
        Ok(plan)
    }

    /// Refuses a list with more entries of a family than its trie holds.
    fn fits(
        &self,
        name: &str,
        nets: &[IpNet],
        from_cfg: &[IpNet],
        tries: [MapId; 2],
    ) -> Result<(), DaemonError> {
        for (trie, v4) in [(tries[0], true), (tries[1], false)] {
            let family = |n: &&IpNet| matches!(n, IpNet::V4(_)) == v4;
            let n = nets.iter().filter(family).count();
            let Some(max) = self.shield.maps.capacity(trie) else {
                continue;
            };
            if n > max as usize {
                let cfg_n = union(from_cfg, &[]).iter().filter(family).count();
                return Err(DaemonError::Unfit(format!(
                    "{name}list: {n} IPv{} entries ({cfg_n} from the config file, {} added with shieldctl) \
                     exceed capacity.{name} = {max}",
                    if v4 { 4 } else { 6 },
                    n - cfg_n
                )));
            }
        }
        Ok(())
    }

    /// Writes `cfg`'s policy into the maps, stopping at the first failure.
    fn write_new(&mut self, cfg: &Config, plan: &Plan, undo: &mut Undo) -> Result<(), DaemonError> {
        undo.maps = true;
        match self.write_maps(cfg, plan, false).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes `cfg`'s policy into the maps; every failure, or the first
    /// with `!go_on`.
    fn write_maps(&mut self, cfg: &Config, plan: &Plan, go_on: bool) -> Vec<DaemonError> {
        let policy = cfg.policy();
        let (dest_policy, dest_trie) = (cfg.destinations.policy(), cfg.destinations.trie());
        let call_cfg = cfg.calls.kernel();
        let steps: [Write; 9] = [
            (
                "writing PORTS",
                Box::new(|m| m.set_ports(&cfg.ports.udp, &cfg.ports.tcp)),
            ),
            (
                "writing the allowlist",
                Box::new(|m| m.set_list(List::Allow, &plan.allow)),
            ),
            (
                "writing the denylist",
                Box::new(|m| m.set_list(List::Deny, &plan.deny)),
            ),
            (
                "writing SCANNERS",
                Box::new(|m| m.set_scanners(&plan.scanners)),
            ),
            ("writing POLICY", Box::new(|m| m.set_policy(&policy))),
            // After the policy: a source's key depends on `ipv6_prefix`.
            (
                "writing [verify] cidrs",
                Box::new(|m| m.set_config_verified(&cfg.verify.cidrs)),
            ),
            (
                "writing [destinations]",
                Box::new(|m| m.dest.apply(&dest_policy, &dest_trie)),
            ),
            (
                "writing [calls]",
                Box::new(|m| m.calls.set_config(&call_cfg)),
            ),
            (
                "writing [auth]",
                Box::new(|m| m.auth.set_enabled(cfg.auth.enabled())),
            ),
        ];
        let mut errors = Vec::new();
        for (what, write) in steps {
            if let Err(source) = write(&mut self.shield.maps) {
                errors.push(DaemonError::Map { what, source });
                if !go_on {
                    break;
                }
            }
        }
        errors
    }

    /// Attaches to the configured interfaces not attached yet (adopting
    /// pinned links).
    fn attach_new(
        &mut self,
        cfg: &Config,
        undo: &mut Undo,
        changes: &mut Vec<String>,
    ) -> Result<(), DaemonError> {
        let pin = self.runtime.pin_path.clone();
        for iface in &cfg.shield.interfaces {
            if self.attachments.iter().any(|a| &a.iface == iface) {
                continue;
            }
            let a = kernel::attach(&mut self.shield, &pin, iface, cfg.shield.mode)?;
            if a.mode == Mode::Tc {
                self.tc_program_id = self
                    .shield
                    .tc_program()
                    .and_then(|p| p.info().ok())
                    .map_or(0, |i| i.id());
            }
            tracing::info!(
                iface = %a.iface,
                ifindex = a.ifindex,
                mode = a.mode.as_str(),
                link_id = a.link_id,
                program_id = self.attached_program(a.mode),
                adopted = a.adopted,
                "attached"
            );
            changes.push(format!("attached to {iface} ({})", a.mode.as_str()));
            undo.attached.push(iface.clone());
            self.attachments.push(a);
        }
        Ok(())
    }

    /// Detaches from interfaces no longer configured: held now, or pinned
    /// by an earlier daemon.
    fn detach_dropped(
        &mut self,
        cfg: &Config,
        undo: &mut Undo,
        changes: &mut Vec<String>,
    ) -> Result<(), DaemonError> {
        while let Some(p) = self
            .attachments
            .iter()
            .position(|a| !cfg.shield.interfaces.contains(&a.iface))
        {
            let a = self.attachments.remove(p);
            let (iface, ifindex, mode) = (a.iface.clone(), a.ifindex, a.mode);
            a.detach()?;
            undo.detached.push((iface.clone(), mode));
            let _ = self.shield.maps.set_iface_slot(ifindex, 0);
            tracing::info!(iface = %iface, "detached (no longer in [shield] interfaces)");
            changes.push(format!("detached from {iface}"));
        }
        for entry in kernel::pinned_links(&self.runtime.pin_path)? {
            if !cfg.shield.interfaces.contains(&entry.iface) {
                entry.detach()?;
                tracing::info!(iface = %entry.iface, "detached (pinned by an earlier daemon, no longer configured)");
                changes.push(format!("detached from {}", entry.iface));
            }
        }
        Ok(())
    }

    /// Orders the attachments as configured and numbers their counter
    /// slots (1 + position).
    fn number_slots(&mut self, cfg: &Config) -> Result<(), DaemonError> {
        let position = |iface: &str| cfg.shield.interfaces.iter().position(|i| i == iface);
        self.attachments.sort_by_key(|a| position(&a.iface));
        for i in 0..self.attachments.len() {
            let (ifindex, mode, iface) = {
                let a = &self.attachments[i];
                (a.ifindex, a.mode, a.iface.clone())
            };
            let slot = position(&iface).map_or(0, |p| p as u32 + 1);
            self.assign_slot(ifindex, slot)?;
            if !mode.satisfies(cfg.shield.mode) {
                tracing::warn!(
                    iface = %iface,
                    attached = mode.as_str(),
                    configured = ?cfg.shield.mode,
                    "attach mode differs from the configuration; a mode change cannot be made without a gap: run `shieldctl detach` and restart shieldd to apply it"
                );
            }
        }
        Ok(())
    }

    /// Puts the old configuration (still `self.config`) back in force
    /// after `failed`: its policy in the maps, the interfaces as they
    /// were. Returns the error to report.
    fn roll_back(&mut self, undo: Undo, failed: DaemonError) -> DaemonError {
        let old = self.config.clone();
        let mut left: Vec<String> = Vec::new();
        if undo.maps {
            // Verified keys depend on `ipv6_prefix`: clear the new entries
            // under the policy now written, before the old one comes back.
            if let Err(e) = self.shield.maps.set_config_verified(&old.verify.cidrs) {
                left.push(format!("[verify] cidrs: {}", crate::text::chain(&e)));
            }
            let plan = Plan::of(&old, &self.cli);
            let errors = self.write_maps(&old, &plan, true);
            left.extend(errors.iter().map(ToString::to_string));
        }
        for iface in &undo.attached {
            if let Some(p) = self.attachments.iter().position(|a| &a.iface == iface) {
                let a = self.attachments.remove(p);
                // An adopted link was enforcing before this apply: keep it.
                if !a.adopted {
                    if let Err(e) = a.detach() {
                        left.push(format!("detaching {iface}: {e}"));
                    }
                }
            }
        }
        self.reattach(&undo.detached, &mut left);
        if let Err(e) = self.number_slots(&old) {
            left.push(e.to_string());
        }
        tracing::error!(failed = %failed, not_restored = ?left, "applying the configuration failed; rolled back");
        DaemonError::RolledBack {
            failed: failed.to_string(),
            left,
        }
    }

    /// Attaches again to interfaces an apply detached, in their old mode.
    fn reattach(&mut self, detached: &[(String, Mode)], left: &mut Vec<String>) {
        let pin = self.runtime.pin_path.clone();
        for (iface, mode) in detached {
            let want = match mode {
                Mode::Driver => AttachMode::Driver,
                Mode::Generic => AttachMode::Generic,
                Mode::Tc => AttachMode::Tc,
            };
            match kernel::attach(&mut self.shield, &pin, iface, want) {
                Ok(a) => self.attachments.push(a),
                Err(e) => left.push(format!("re-attaching {iface}: {e}")),
            }
        }
    }
}

impl Core {
    /// The id of the program an interface attached in `mode` runs.
    pub(super) fn attached_program(&self, mode: Mode) -> u32 {
        if mode == Mode::Tc {
            self.tc_program_id
        } else {
            self.program_id
        }
    }
}
