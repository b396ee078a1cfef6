//! The `refusals` table: INVITEs the destination policy refused (SPEC §11),
//! written in batches (one transaction per batch of reports) and bounded
//! by [`Store::prune_refusals`].

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{ms, sql_err, unms, Store, StoreError};

/// One refused INVITE as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalRecord {
    pub at_ms: u64,
    pub source: IpAddr,
    /// Normalised: `+` and digits, or as dialled.
    pub number: String,
    pub rule: String,
    /// `destination` or `destination_rate`.
    pub reason: String,
    /// Escaped when the report was decoded.
    pub user_agent: String,
    /// A 403 was sent.
    pub replied: bool,
}

/// Which refusals to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalQuery {
    /// Sources within this network only.
    pub net: Option<IpNet>,
    /// Refused at or after this time (ms since the epoch).
    pub since_ms: u64,
    /// At most this many rows, newest first.
    pub limit: usize,
}

const INSERT: &str = "INSERT INTO refusals (at_ms, source, number, rule, reason, user_agent, replied)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const COLUMNS: &str = "SELECT at_ms, source, number, rule, reason, user_agent, replied FROM refusals";

impl Store {
    /// Records `rows` in one transaction (one commit, not one per row: the
    /// kernel may report 100 a second).
    pub fn add_refusals(&mut self, rows: &[RefusalRecord]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.ensure_file()?;
        let fail = sql_err(&self.db, "recording refusals");
        let tx = self.conn.transaction().map_err(&fail)?;
        {
            let mut put = tx.prepare_cached(INSERT).map_err(&fail)?;
            for r in rows {
                put.execute(params![
                    ms(r.at_ms),
                    r.source.to_string(),
                    r.number,
                    r.rule,
                    r.reason,
                    r.user_agent,
                    r.replied
                ])
                .map_err(&fail)?;
            }
        }
        tx.commit().map_err(&fail)
    }

    /// The refusals `q` asks for, newest first. A single address is looked
    /// up by its index; a wider network is matched here, row by row, as
    /// addresses are kept as text.
    pub fn refusals(&self, q: &RefusalQuery) -> Result<Vec<RefusalRecord>, StoreError> {
        let fail = sql_err(&self.db, "reading refusals");
        let host = q.net.filter(|n| n.prefix_len() == n.max_prefix_len());
        let mut out = Vec::new();
        let since = ms(q.since_ms);
        let mut stmt;
        let mut rows = match host {
            Some(h) => {
                stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "{COLUMNS} WHERE source = ?1 AND at_ms >= ?2 ORDER BY at_ms DESC, id DESC LIMIT ?3"
                    ))
                    .map_err(&fail)?;
                stmt.query(params![h.addr().to_string(), since, q.limit as i64])
            }
            None => {
                stmt = self
                    .conn
                    .prepare_cached(&format!("{COLUMNS} WHERE at_ms >= ?1 ORDER BY at_ms DESC, id DESC"))
                    .map_err(&fail)?;
                stmt.query(params![since])
            }
        }
        .map_err(&fail)?;
        while out.len() < q.limit {
            let Some(row) = rows.next().map_err(&fail)? else { break };
            let source: String = row.get(1).map_err(&fail)?;
            // A row edited by hand into something else is skipped, not fatal.
            let Ok(source) = source.parse::<IpAddr>() else { continue };
            if q.net.is_some_and(|n| !n.contains(&source)) {
                continue;
            }
            out.push(RefusalRecord {
                at_ms: unms(row.get(0).map_err(&fail)?),
                source,
                number: row.get(2).map_err(&fail)?,
                rule: row.get(3).map_err(&fail)?,
                reason: row.get(4).map_err(&fail)?,
                user_agent: row.get(5).map_err(&fail)?,
                replied: row.get(6).map_err(&fail)?,
            });
        }
        Ok(out)
    }

    /// Keeps the newest `keep_rows` refusals recorded at or after
    /// `before_ms`; returns the rows removed.
    pub fn prune_refusals(&mut self, keep_rows: u64, before_ms: u64) -> Result<usize, StoreError> {
        self.ensure_file()?;
        let fail = sql_err(&self.db, "pruning refusals");
        let old = self
            .conn
            .execute("DELETE FROM refusals WHERE at_ms < ?1", [ms(before_ms)])
            .map_err(&fail)?;
        // Ids grow with every insert: the newest rows have the highest.
        let over = self
            .conn
            .execute(
                "DELETE FROM refusals WHERE id <= (SELECT id FROM refusals ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [i64::try_from(keep_rows).unwrap_or(i64::MAX)],
            )
            .map_err(&fail)?;
        Ok(old + over)
    }
}
