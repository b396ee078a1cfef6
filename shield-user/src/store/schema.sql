-- The ban store, version 1. A table added later (refusals) is created by
-- `CREATE TABLE IF NOT EXISTS` when a store is opened, without a version
-- change: an earlier shieldd opens such a store and ignores the table, so
-- going back a version never costs the bans. VERSION changes only for a
-- change an earlier version would misread.
--
-- Times are wall-clock milliseconds since the Unix epoch; networks are text
-- in their canonical form ("198.51.100.0/24", "2001:db8::/64"), so an
-- operator can read and query the file with sqlite3.

-- Bans in force (and expired ones the sweeper has not lifted yet).
CREATE TABLE IF NOT EXISTS bans (
    net        TEXT PRIMARY KEY,
    -- manual, escalation, kernel or jail:<name>
    origin     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    -- what the ban was made from: the jail's log line, the offender
    -- report, the operator's reason
    detail     TEXT NOT NULL DEFAULT '',
    who        TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    -- NULL: until unbanned
    expires_ms INTEGER,
    -- how often this network was banned (within [bans] history)
    times      INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;

-- Repeat offenders for [bans] increment: how many automatic bans a source
-- had, and when the latest ends.
CREATE TABLE IF NOT EXISTS offences (
    net      TEXT PRIMARY KEY,
    count    INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Allow/deny entries added with shieldctl (the config file's are not here).
CREATE TABLE IF NOT EXISTS list_entries (
    list     TEXT NOT NULL CHECK (list IN ('allow', 'deny')),
    net      TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    who      TEXT NOT NULL,
    PRIMARY KEY (list, net)
) WITHOUT ROWID;

-- Every ban and unban, kept for [bans] history.
CREATE TABLE IF NOT EXISTS history (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    net        TEXT NOT NULL,
    -- ban, reban (an active ban banned again), unban, expire
    action     TEXT NOT NULL,
    origin     TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '',
    who        TEXT NOT NULL DEFAULT '',
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS history_by_net ON history (net, at_ms);
CREATE INDEX IF NOT EXISTS history_by_time ON history (at_ms);

-- Every list change made with shieldctl, kept for [bans] history.
CREATE TABLE IF NOT EXISTS list_changes (
    id     INTEGER PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    list   TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('add', 'del')),
    net    TEXT NOT NULL,
    who    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS list_changes_by_time ON list_changes (at_ms);

-- INVITEs refused by the destination policy (SPEC §11), as the kernel
-- reported them (sampled, at most 100/s). Bounded: the daemon keeps the
-- newest 100,000 rows of the last 30 days.
CREATE TABLE IF NOT EXISTS refusals (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    -- the INVITE's source address
    source     TEXT NOT NULL,
    -- the dialled number, normalised ("+" and digits, or as dialled)
    number     TEXT NOT NULL,
    -- the deciding rule as configured, allow_international,
    -- international_rate or unreadable
    rule       TEXT NOT NULL,
    -- destination or destination_rate
    reason     TEXT NOT NULL,
    -- escaped, at most 200 characters
    user_agent TEXT NOT NULL DEFAULT '',
    -- a 403 was sent
    replied    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_by_time ON refusals (at_ms);
CREATE INDEX IF NOT EXISTS refusals_by_source ON refusals (source, at_ms);

-- key/value: "maps" (the kernel maps the store is in step with, JSON).
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The change log behind bans.snap (store/snapshot.rs): the networks whose
-- bans or offences rows changed after the snapshot was taken. Kept only
-- while meta has a 'snapshot' row (so a store without one logs nothing);
-- triggers, so that no write path (an operator's sqlite3 included) is
-- missed. AUTOINCREMENT: a number is never handed out twice, also after
-- the log is pruned.
CREATE TABLE IF NOT EXISTS snapshot_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    net TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS bans_insert_logged AFTER INSERT ON bans
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN INSERT INTO snapshot_changes (net) VALUES (new.net); END;
CREATE TRIGGER IF NOT EXISTS bans_update_logged AFTER UPDATE ON bans
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN
        INSERT INTO snapshot_changes (net) VALUES (old.net);
        INSERT INTO snapshot_changes (net) SELECT new.net WHERE new.net IS NOT old.net;
    END;
CREATE TRIGGER IF NOT EXISTS bans_delete_logged AFTER DELETE ON bans
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN INSERT INTO snapshot_changes (net) VALUES (old.net); END;
CREATE TRIGGER IF NOT EXISTS offences_insert_logged AFTER INSERT ON offences
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN INSERT INTO snapshot_changes (net) VALUES (new.net); END;
CREATE TRIGGER IF NOT EXISTS offences_update_logged AFTER UPDATE ON offences
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN
        INSERT INTO snapshot_changes (net) VALUES (old.net);
        INSERT INTO snapshot_changes (net) SELECT new.net WHERE new.net IS NOT old.net;
    END;
CREATE TRIGGER IF NOT EXISTS offences_delete_logged AFTER DELETE ON offences
    WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'snapshot')
    BEGIN INSERT INTO snapshot_changes (net) VALUES (old.net); END;
