//! The tasks that feed the core: the kernel's ring buffers, the jails'
//! reports and the sweeper's clock. Each hands a whole batch to the core
//! in one request.

use shield_common::OffenderEvent;
use tokio::sync::mpsc;

use super::handle::CoreHandle;
use super::{Tasks, SWEEP_EVERY};
use crate::jails::JailEvent;
use crate::kernel::{EventReader, EventRing};

/// Polling fallback for the ring buffer, should a wakeup ever be missed.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// Jail reports handed to the core in one request at the most.
const JAIL_BATCH: usize = 256;

/// One task per kernel ring buffer: offenders (SPEC §2), refusals (§11),
/// ended calls (§13), settled digest attempts (§12).
pub(super) async fn spawn(tasks: &mut Tasks, core: &CoreHandle, offenders: Option<EventRing>) {
    let (refusals, calls, auth) = core
        .call(|c| (c.take_refusal_events(), c.take_call_events(), c.take_auth_events()))
        .await;
    if let Some(rb) = offenders {
        tasks.spawn("offender events", offender_events(core.clone(), rb));
    }
    if let Some(rb) = refusals {
        tasks.spawn("refusal events", refusal_events(core.clone(), rb));
    }
    if let Some(rb) = calls {
        tasks.spawn("call events", call_events(core.clone(), rb));
    }
    if let Some(rb) = auth {
        tasks.spawn("auth events", auth_events(core.clone(), rb));
    }
}

/// The ring's reader; `None`, logged with what stops working, when the
/// ring cannot be watched.
fn watch(ring: EventRing, name: &str, lost: &str) -> Option<EventReader> {
    ring.reader(EVENTS_POLL)
        .inspect_err(|e| tracing::error!("cannot watch the {name} ring buffer; {lost}: {e}"))
        .ok()
}

pub(super) async fn jail_events(core: CoreHandle, mut rx: mpsc::Receiver<JailEvent>) {
    let mut batch = Vec::with_capacity(JAIL_BATCH);
    while rx.recv_many(&mut batch, JAIL_BATCH).await > 0 {
        let events = std::mem::take(&mut batch);
        core.call(move |c| events.into_iter().for_each(|ev| c.on_jail_event(ev)))
            .await;
    }
}

/// Reads the kernel's offender reports from the `EVENTS` ring buffer.
async fn offender_events(core: CoreHandle, ring: EventRing) {
    let Some(mut reader) = watch(ring, "EVENTS", "escalation bans are off") else {
        return;
    };
    loop {
        let batch: Vec<OffenderEvent> = reader.next_records().await;
        if !batch.is_empty() {
            core.call(move |c| batch.iter().for_each(|ev| c.on_offender(ev))).await;
        }
    }
}

/// Reads the kernel's refusal reports (SPEC §11) from `DEST_EVENTS`:
/// answers those the reply bucket granted with a 403, from the address
/// and port the INVITE was sent to, and keeps those the report bucket
/// granted.
async fn refusal_events(core: CoreHandle, ring: EventRing) {
    let Some(mut reader) = watch(ring, "DEST_EVENTS", "no 403s or refusal records") else {
        return;
    };
    let mut replier = crate::dest::reply::Replier::default();
    let mut replies: u64 = 0;
    loop {
        let raw = reader.next_batch().await;
        if raw.is_empty() {
            continue;
        }
        // Decoded against the policy in force, which only the core has.
        let batch: Vec<_> = core
            .call(move |c| {
                raw.iter()
                    .filter_map(|item| crate::dest::event::Refusal::decode(item, c.destinations()))
                    .collect()
            })
            .await;
        for r in batch.iter().filter(|r| r.reply) {
            replies += 1;
            let tag = format!("ss{:x}{replies:x}", crate::store::now_ms());
            let Some(reply) = crate::dest::reply::forbidden(&r.invite, &r.rule, &tag) else {
                continue;
            };
            if let Err(e) = replier.send(r.local, r.source, &reply) {
                tracing::warn!(to = %r.source, "cannot send the 403: {e}");
            }
        }
        if batch.iter().any(|r| r.report) {
            core.call(move |c| {
                batch.iter().filter(|r| r.report).for_each(|r| c.on_refusal(r));
                c.flush_refusals();
            })
            .await;
        }
    }
}

/// Reads the kernel's ended-call reports (SPEC §13) from `CALL_EVENTS`
/// into the call book.
async fn call_events(core: CoreHandle, ring: EventRing) {
    let Some(mut reader) = watch(ring, "CALL_EVENTS", "no call counters") else {
        return std::future::pending().await;
    };
    loop {
        let batch: Vec<shield_common::calls::CallEvent> = reader.next_records().await;
        if !batch.is_empty() {
            core.call(move |c| c.on_call_events(&batch)).await;
        }
    }
}

/// Reads settled digest attempts (SPEC §12): one record per attempt, never
/// per packet, decoded into our own type and handed to the core.
async fn auth_events(core: CoreHandle, ring: EventRing) {
    let Some(mut reader) = watch(ring, "AUTH_EVENTS", "no [auth] bans") else {
        return std::future::pending().await;
    };
    loop {
        let raw = reader.next_batch().await;
        let batch: Vec<_> = raw.iter().filter_map(|item| crate::kernel::AuthOutcome::decode(item)).collect();
        if !batch.is_empty() {
            core.call(move |c| batch.iter().for_each(|o| c.on_auth(o))).await;
        }
    }
}

/// Expired bans out of the maps, old verified sources and calls swept, a
/// store that fell behind rewritten.
pub(super) async fn sweeper(core: CoreHandle) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let saved = core
            .call(|c| {
                c.sweep();
                c.sweep_verified();
                c.sweep_calls();
                c.retry_save()
            })
            .await;
        if let Err(why) = saved {
            tracing::error!("the store is still behind the kernel: {why}");
        }
    }
}
