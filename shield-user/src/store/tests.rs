use super::*;

fn rec(net: &str, expires_ms: Option<u64>) -> BanRecord {
    BanRecord {
        net: net.parse().unwrap(),
        origin: "manual".into(),
        reason: "test".into(),
        created_ms: 1,
        expires_ms,
    }
}

fn ban(store: &mut Store, r: &BanRecord, action: Action) -> u32 {
    store
        .ban(&BanEvent {
            record: r,
            origin: &r.origin,
            reason: &r.reason,
            detail: "a log line",
            who: "uid 0",
            action,
        })
        .unwrap()
}

#[test]
fn bans_offences_and_lists_round_trip_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    assert!(st.load().unwrap().bans.is_empty());
    let a = rec("198.51.100.7/32", Some(99_000));
    let b = rec("2001:db8::/64", None);
    assert_eq!(ban(&mut st, &a, Action::Ban), 1);
    assert_eq!(ban(&mut st, &b, Action::Ban), 1);
    let off = OffenceRecord {
        net: a.net,
        count: 2,
        until_ms: 5,
    };
    st.offence(&off).unwrap();
    st.list_change(List::Allow, true, "192.0.2.0/24".parse().unwrap(), "uid 0")
        .unwrap();
    st.list_change(List::Deny, true, "203.0.113.9/32".parse().unwrap(), "uid 0")
        .unwrap();
    st.list_change(List::Deny, false, "203.0.113.9/32".parse().unwrap(), "uid 0")
        .unwrap();
    let mark = MapsMark {
        pin_path: "/sys/fs/bpf/x".into(),
        ids: [("BANS_V4".to_string(), 7)].into_iter().collect(),
    };
    st.set_maps_mark(Some(&mark)).unwrap();
    drop(st);

    let st = Store::open(dir.path()).unwrap();
    let mut got = st.load().unwrap();
    got.bans.sort_by_key(|b| b.net);
    assert_eq!(got.bans, vec![a, b]);
    assert_eq!(got.offences, vec![off]);
    assert_eq!(got.lists.allow, vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]);
    assert!(got.lists.deny.is_empty());
    assert_eq!(got.maps, Some(mark));
}

#[test]
fn a_reban_is_counted_and_an_unban_is_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let a = rec("198.51.100.7/32", Some(10_000));
    assert_eq!(ban(&mut st, &a, Action::Ban), 1);
    let longer = rec("198.51.100.7/32", Some(20_000));
    assert_eq!(ban(&mut st, &longer, Action::Reban), 2);
    st.unban(&[a.net], Action::Unban, "uid 1000").unwrap();
    assert!(st.load().unwrap().bans.is_empty());
    assert_eq!(ban(&mut st, &a, Action::Ban), 3, "history remembers");

    let src = st.source(&[a.net], 10).unwrap();
    assert_eq!(src.bans, vec![(a.net.to_string(), "a log line".to_string(), 3)]);
    let actions: Vec<Action> = src.history.iter().map(|h| h.action).collect();
    assert_eq!(actions, [Action::Ban, Action::Unban, Action::Reban, Action::Ban]);
    assert_eq!(src.history[1].who, "uid 1000");
    assert_eq!(src.history[1].reason, "test", "the unban names what it lifted");
    assert_eq!(st.source(&[a.net], 2).unwrap().history.len(), 2);
}

#[test]
fn history_is_pruned_and_resync_keeps_detail() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let a = rec("198.51.100.7/32", None);
    let b = rec("198.51.100.8/32", None);
    ban(&mut st, &a, Action::Ban);
    ban(&mut st, &b, Action::Ban);
    // The daemon's view: only b, with a new reason, plus c.
    let mut b2 = b.clone();
    b2.reason = "changed".into();
    let c = rec("198.51.100.9/32", Some(5));
    st.resync(&[b2.clone(), c.clone()], &[], &CliLists::default())
        .unwrap();
    let mut got = st.load().unwrap().bans;
    got.sort_by_key(|r| r.net);
    assert_eq!(got, vec![b2, c]);
    assert_eq!(st.source(&[b.net], 5).unwrap().bans[0].1, "a log line");
    assert_eq!(st.prune(Duration::from_secs(3600), 0).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(st.prune(Duration::ZERO, 0).unwrap(), 2);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, b"this is not a database, it is a text file\n").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");
    assert!(e.to_string().contains("move it away"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is not a database, it is a text file\n"
    );

    // Somebody else's SQLite database.
    std::fs::remove_file(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE other (x)")
        .unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("other tables"), "{e}");

    // A newer store.
    std::fs::remove_file(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 9")
        .unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Newer { found: 9, .. }), "{e}");
}

#[test]
fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("in use by another shieldd"), "{e}");
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
}

const HEADER: &str = r#"{"format":"sipshield-bans","version":1,"written_ms":0,"maps":{"pin_path":"/sys/fs/bpf/x","ids":{"BANS_V4":7}}}"#;

#[test]
fn legacy_files_are_imported_once_and_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bans = format!(
        "{HEADER}\n{}\n{}\n",
        r#"{"ban":{"net":"198.51.100.7/32","origin":"jail:k","reason":"5 failures","created_ms":1,"expires_ms":null}}"#,
        r#"{"ban":{"net":"2001:db8::/64","origin":"manual","reason":"r","created_ms":1,"expires_ms":99}}"#,
    )
    .into_bytes();
    // A stray byte that is not UTF-8: one bad record.
    bans.extend_from_slice(b"\xff\n");
    bans.extend_from_slice(
        br#"{"history":{"net":"198.51.100.7/32","count":3,"until_ms":42}}"#,
    );
    bans.push(b'\n');
    std::fs::write(dir.path().join("bans.jsonl"), &bans).unwrap();
    std::fs::write(
        dir.path().join("lists.json"),
        r#"{"allow":["192.0.2.0/24"],"deny":["203.0.113.0/24"]}"#,
    )
    .unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let imp = st.import_legacy().unwrap().expect("imported");
    assert_eq!((imp.bans_read, imp.bans_added), (2, 2));
    assert_eq!(imp.bad_lines.len(), 1, "{:?}", imp.bad_lines);
    assert_eq!(imp.bad_lines[0].0, 4);
    let copy = imp.bad_copy.expect("a copy of the damaged file");
    assert_eq!(std::fs::read(&copy).unwrap(), bans);
    assert_eq!(imp.files.len(), 2);
    assert!(!dir.path().join("bans.jsonl").exists());
    assert!(imp.files[0].1.to_string_lossy().contains("bans.jsonl.imported-"));

    let got = st.load().unwrap();
    assert_eq!(got.bans.len(), 2);
    assert_eq!(got.offences[0].count, 3);
    assert_eq!(got.lists.deny, vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(got.maps.unwrap().ids["BANS_V4"], 7, "a fresh store takes the mark");
    assert!(st.import_legacy().unwrap().is_none(), "imported once");

    // A file put back later merges, and the store no longer claims to be
    // in step with any maps.
    std::fs::write(
        dir.path().join("bans.jsonl"),
        format!(
            "{HEADER}\n{}\n",
            r#"{"ban":{"net":"198.51.100.99/32","origin":"manual","reason":"r","created_ms":1,"expires_ms":null}}"#
        ),
    )
    .unwrap();
    let imp = st.import_legacy().unwrap().expect("imported");
    assert_eq!(imp.bans_added, 1);
    let got = st.load().unwrap();
    assert_eq!(got.bans.len(), 3);
    assert_eq!(got.maps, None);
}

#[test]
fn a_legacy_file_with_a_bad_header_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bans.jsonl");
    std::fs::write(&path, "{\"format\":\"other\",\"version\":1,\"written_ms\":0}\n").unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let e = st.import_legacy().unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(path.exists());
}

#[test]
fn links_and_other_files_at_the_store_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let target = dir.path().join("elsewhere.db");
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains(&db.display().to_string()), "{e}");
    assert!(!target.exists(), "a database was made at the link's target");
    std::fs::remove_file(&db).unwrap();

    std::fs::create_dir(&db).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a regular file (a directory)"), "{e}");
    std::fs::remove_dir(&db).unwrap();

    // A FIFO would hang the first read.
    let c = std::ffi::CString::new(db.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("a FIFO"), "{e}");
    std::fs::remove_file(&db).unwrap();

    // Its write-ahead log too.
    let wal = dir.path().join("shield.db-wal");
    std::os::unix::fs::symlink(&target, &wal).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains(&wal.display().to_string()), "{e}");
    std::fs::remove_file(&wal).unwrap();
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_deleted_store_is_rewritten_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let a = rec("198.51.100.7/32", Some(99_000));
    ban(&mut st, &a, Action::Ban);
    st.list_change(List::Allow, true, "192.0.2.0/24".parse().unwrap(), "uid 0")
        .unwrap();
    let db = dir.path().join(DB_FILE);
    std::fs::remove_file(&db).unwrap();
    let b = rec("198.51.100.8/32", None);
    assert_eq!(ban(&mut st, &b, Action::Ban), 1);
    assert!(db.exists());
    assert!(st.notice().unwrap().contains("was deleted"), "{:?}", st.notice());
    assert_eq!(st.rewrites(), 1);
    // Noticed without a write too.
    std::fs::remove_file(&db).unwrap();
    st.check().unwrap();
    assert_eq!(st.rewrites(), 2);
    drop(st);

    let st = Store::open(dir.path()).unwrap();
    let mut got = st.load().unwrap();
    got.bans.sort_by_key(|b| b.net);
    assert_eq!(got.bans, vec![a.clone(), b]);
    assert_eq!(got.lists.allow.len(), 1);
    assert_eq!(st.source(&[a.net], 10).unwrap().history.len(), 1, "history kept");
}

#[test]
fn a_removed_state_dir_is_made_again_and_locked() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("state");
    let mut st = Store::open(&dir).unwrap();
    let a = rec("198.51.100.7/32", Some(99_000));
    ban(&mut st, &a, Action::Ban);
    std::fs::remove_dir_all(&dir).unwrap();
    st.check().unwrap();
    assert!(dir.join(DB_FILE).exists());
    assert!(matches!(Store::open(&dir), Err(StoreError::Locked { .. })));
    assert_eq!(st.load().unwrap().bans, vec![a]);
}

#[test]
fn a_replaced_store_is_kept_aside_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let a = rec("198.51.100.7/32", Some(99_000));
    ban(&mut st, &a, Action::Ban);
    let db = dir.path().join(DB_FILE);
    let other = dir.path().join("other");
    std::fs::write(&other, "someone else's").unwrap();
    std::fs::rename(&other, &db).unwrap();
    st.unban(&[a.net], Action::Unban, "uid 0").unwrap();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("shield.db.replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"someone else's");
    assert!(st.notice().unwrap().contains("was replaced"));
    drop(st);
    let st = Store::open(dir.path()).unwrap();
    assert!(st.load().unwrap().bans.is_empty(), "the unban went into the new file");
    assert_eq!(st.source(&[a.net], 10).unwrap().history.len(), 2);
}

#[test]
fn the_behind_mark_outlives_the_process_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    assert!(!st.was_behind());
    st.mark_behind(true);
    drop(st);
    let st = Store::open(dir.path()).unwrap();
    assert!(st.was_behind());
    drop(st);
    // Kept until a save clears it, even by a start that did not.
    let mut st = Store::open(dir.path()).unwrap();
    assert!(st.was_behind());
    st.mark_behind(false);
    drop(st);
    assert!(!Store::open(dir.path()).unwrap().was_behind());
}

fn refusal(at_ms: u64, source: &str, number: &str) -> RefusalRecord {
    RefusalRecord {
        at_ms,
        source: source.parse().unwrap(),
        number: number.into(),
        rule: "00899".into(),
        reason: "destination".into(),
        user_agent: "friendly-scanner \\x1b".into(),
        replied: true,
    }
}

#[test]
fn refusals_are_kept_newest_first_filtered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let rows: Vec<RefusalRecord> = (0..10u64)
        .map(|i| {
            let src = if i % 2 == 0 { "198.51.100.7" } else { "2001:db8::5" };
            refusal(1_000 + i, src, &format!("+89912345{i}"))
        })
        .collect();
    st.add_refusals(&rows).unwrap();
    st.add_refusals(&[]).unwrap();
    drop(st);
    let mut st = Store::open(dir.path()).unwrap();
    let all = st
        .refusals(&RefusalQuery { net: None, since_ms: 0, limit: 100 })
        .unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[0], rows[9], "newest first");
    let q = |net: &str, since_ms, limit| RefusalQuery {
        net: Some(net.parse().unwrap()),
        since_ms,
        limit,
    };
    let one = st.refusals(&q("198.51.100.7/32", 0, 100)).unwrap();
    assert_eq!(one.len(), 5);
    assert!(one.iter().all(|r| r.source.to_string() == "198.51.100.7"));
    let wide = st.refusals(&q("2001:db8::/32", 1_005, 2)).unwrap();
    assert_eq!(wide, vec![rows[9].clone(), rows[7].clone()]);
    assert!(st.refusals(&q("192.0.2.0/24", 0, 100)).unwrap().is_empty());
    // Older than the cutoff, then beyond the newest 3.
    assert_eq!(st.prune_refusals(100, 1_002).unwrap(), 2);
    assert_eq!(st.prune_refusals(3, 0).unwrap(), 5);
    let left = st
        .refusals(&RefusalQuery { net: None, since_ms: 0, limit: 100 })
        .unwrap();
    assert_eq!(left, vec![rows[9].clone(), rows[8].clone(), rows[7].clone()]);
    assert_eq!(st.prune_refusals(3, 0).unwrap(), 0);
}

#[test]
fn a_store_made_before_refusals_gains_the_table_and_keeps_its_bans() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    ban(&mut st, &rec("198.51.100.7/32", None), Action::Ban);
    st.conn.execute_batch("DROP TABLE refusals").unwrap();
    drop(st);
    let mut st = Store::open(dir.path()).unwrap();
    assert_eq!(st.load().unwrap().bans.len(), 1);
    st.add_refusals(&[refusal(5, "192.0.2.1", "0044")]).unwrap();
    let v: i64 = st.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, VERSION, "an additive table leaves the version as it was");
}

/// `n` host bans of 10.0.0.0/8, as a bulk import would add them.
fn many(n: u32) -> Vec<BanRecord> {
    (0..n)
        .map(|i| BanRecord {
            net: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
            origin: "jail:kamailio".into(),
            reason: "5 failed authentications".into(),
            created_ms: 1_000 + u64::from(i),
            expires_ms: (i % 3 != 0).then_some(9_000_000_000_000 + u64::from(i)),
        })
        .collect()
}

/// What the rows say, with the snapshot out of the way (sorted).
fn rows_view(st: &Store) -> (Vec<BanRecord>, Vec<OffenceRecord>) {
    let tx = st.conn.unchecked_transaction().unwrap();
    let mut b = read_bans(&tx, &st.db, BAN_SELECT, []).unwrap();
    let mut o = read_offences(&tx, &st.db, OFFENCE_SELECT, []).unwrap();
    b.sort_by_key(|r| r.net);
    o.sort_by_key(|r| r.net);
    (b, o)
}

fn sorted(mut l: Loaded) -> (Vec<BanRecord>, Vec<OffenceRecord>, ReadFrom) {
    l.bans.sort_by_key(|r| r.net);
    l.offences.sort_by_key(|r| r.net);
    (l.bans, l.offences, l.read_from)
}

#[test]
fn a_bulk_import_leaves_a_snapshot_that_the_next_load_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let n = snapshot::MIN_BANS as u32;
    assert_eq!(st.import(&many(n), "bench").unwrap(), n as usize);
    assert!(dir.path().join(snapshot::SNAP_FILE).is_file());
    drop(st);
    let st = Store::open(dir.path()).unwrap();
    let (bans, offences, from) = sorted(st.load().unwrap());
    assert_eq!(from, ReadFrom::Snapshot { changed: 0 });
    assert_eq!((bans, offences), rows_view(&st));
}

#[test]
fn changes_after_the_snapshot_are_read_from_the_rows_whatever_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    st.import(&many(50), "bench").unwrap();
    let a = rec("198.51.100.7/32", Some(99_000));
    ban(&mut st, &a, Action::Ban);
    st.offence(&OffenceRecord { net: a.net, count: 2, until_ms: 5 }).unwrap();
    assert_eq!(st.refresh_snapshot().unwrap(), 51);
    // After it: a new ban, a re-ban (update), an unban, an offence, and
    // an operator's own SQL.
    let b = rec("2001:db8::/64", None);
    ban(&mut st, &b, Action::Ban);
    let mut a2 = a.clone();
    a2.expires_ms = Some(199_000);
    ban(&mut st, &a2, Action::Reban);
    st.unban(&["10.0.0.1/32".parse().unwrap()], Action::Unban, "uid 0").unwrap();
    st.offence(&OffenceRecord { net: a.net, count: 3, until_ms: 6 }).unwrap();
    st.conn
        .execute("DELETE FROM bans WHERE net = '10.0.0.2/32'", [])
        .unwrap();
    st.conn
        .execute("UPDATE bans SET reason = 'edited' WHERE net = '10.0.0.3/32'", [])
        .unwrap();
    let (bans, offences, from) = sorted(st.load().unwrap());
    assert_eq!(from, ReadFrom::Snapshot { changed: 5 });
    assert_eq!((bans.clone(), offences.clone()), rows_view(&st));
    assert!(bans.iter().any(|r| r.reason == "edited"));
    assert_eq!(bans.len(), 50 + 2 - 2);
    // A new snapshot takes them in and empties the log.
    st.refresh_snapshot().unwrap();
    let l = sorted(st.load().unwrap());
    assert_eq!(l.2, ReadFrom::Snapshot { changed: 0 });
    assert_eq!((l.0, l.1), (bans, offences));
}

#[test]
fn a_bad_or_foreign_snapshot_falls_back_to_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    st.import(&many(20), "bench").unwrap();
    st.refresh_snapshot().unwrap();
    let file = dir.path().join(snapshot::SNAP_FILE);
    let good = std::fs::read(&file).unwrap();
    let want = rows_view(&st);
    let check = |st: &Store| {
        let (b, o, from) = sorted(st.load().unwrap());
        assert_eq!(from, ReadFrom::Rows);
        assert_eq!((b, o), want);
    };
    // A flipped byte (a disk error), a truncated file, none at all.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    check(&st);
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    check(&st);
    std::fs::remove_file(&file).unwrap();
    check(&st);
    // A crash after the file was written but before the store named it:
    // a well-formed snapshot with another token.
    let (b, o) = rows_view(&st);
    snapshot::write(&file, &snapshot::encode(12345, 0, &b[1..], &o)).unwrap();
    check(&st);
    // A symbolic link in its place is not followed.
    std::fs::remove_file(&file).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, &good).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    check(&st);
}

#[test]
fn a_change_log_longer_than_a_quarter_of_the_bans_reads_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    let n = 4 * snapshot::MIN_BANS as u32 + 8;
    st.import(&many(n), "bench").unwrap();
    // A resync rewrites every row (after failed writes): all logged.
    let (bans, offences) = rows_view(&st);
    st.resync(&bans, &offences, &CliLists::default()).unwrap();
    let (b, o, from) = sorted(st.load().unwrap());
    assert_eq!(from, ReadFrom::Rows);
    assert_eq!((b, o), (bans, offences));
}

#[test]
fn a_store_without_a_snapshot_logs_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    ban(&mut st, &rec("198.51.100.7/32", None), Action::Ban);
    let logged: i64 = st
        .conn
        .query_row("SELECT count(*) FROM snapshot_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 0);
    assert_eq!(st.load().unwrap().read_from, ReadFrom::Rows);
}

/// The snapshot and the rows give the same bans, five times over; the
/// store read from each is timed side by side in the same run and printed
/// (20,000 bans by default; the README's million-ban figure: `SIPSHIELD_LOAD_BANS=1000000
/// cargo test --release -p shield-user --lib store::tests::snapshot_and_rows -- --nocapture`).
#[test]
fn snapshot_and_rows_load_the_same_bans() {
    let n = std::env::var("SIPSHIELD_LOAD_BANS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::open(dir.path()).unwrap();
    st.import(&many(n), "bench").unwrap();
    let mut rows = Vec::new();
    let mut snap = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let l = st.load().unwrap();
        snap.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(l.read_from, ReadFrom::Snapshot { changed: 0 });
        // What `load` did before the snapshot: every row, in a transaction.
        let t = std::time::Instant::now();
        let tx = st.conn.unchecked_transaction().unwrap();
        let mut r = read_bans(&tx, &st.db, BAN_SELECT, []).unwrap();
        read_offences(&tx, &st.db, OFFENCE_SELECT, []).unwrap();
        drop(tx);
        rows.push(t.elapsed().as_secs_f64() * 1e3);
        r.sort_by_key(|b| b.net);
        assert_eq!(sorted(l).0, r);
    }
    rows.sort_by(f64::total_cmp);
    snap.sort_by(f64::total_cmp);
    eprintln!(
        "{n} bans, median of 5: rows {:.0} ms, snapshot {:.0} ms: {:.2}x (min {:.0} / {:.0} ms)",
        rows[2],
        snap[2],
        snap[2] / rows[2],
        rows[0],
        snap[0]
    );
}
