//! Client-side changes (flags, per-user `\Seen`, hide, move) must be
//! reproduced exactly by a rebuild from the journal: the index is derived,
//! and a rebuild that lost a flag or renumbered a moved message would show
//! clients a different mailbox after a power cut.

use super::*;
use redb::{ReadableDatabase, ReadableTable};

/// Rebuild the index once the closed store's last background task (a
/// blob's derived fields, computed off the writer) has let go of it.
fn rebuild_when_free(dir: &Path) {
    let t0 = std::time::Instant::now();
    loop {
        match rebuild_index(dir, &mut |_, _| {}) {
            Ok(_) => return,
            Err(StoreError::Locked(_)) if t0.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("rebuild: {e}"),
        }
    }
}

fn archive(mailbox: &str, folder: &str, blob: BlobRef) -> Change {
    Change::Archive {
        mailbox: mailbox.into(),
        folder: folder.into(),
        blob,
        internal_date: Utc::now().trunc_subsecs(0),
        flags: vec![],
        provider: None,
        pec: None,
        handling: None,
    }
}

#[tokio::test]
async fn rebuild_reproduces_client_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut blobs = Vec::new();
    for i in 0..4 {
        blobs.push(store.put_blob(format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes()).await.unwrap());
    }
    let a = || Audit::user("mario", Some("127.0.0.1:1".into()), "imap", "test");
    for b in &blobs {
        store.commit(a(), archive("prot", "INBOX", b.clone())).await.unwrap();
    }
    let flags = |op, f: &[&str]| Change::SetFlags {
        mailbox: "prot".into(),
        folder: "INBOX".into(),
        uids: vec![1, 2],
        op,
        flags: f.iter().map(|s| s.to_string()).collect(),
    };
    store.commit(a(), flags(FlagOp::Add, &["\\Flagged", "$Todo", "\\Seen"])).await.unwrap();
    store.commit(a(), flags(FlagOp::Remove, &["$Todo"])).await.unwrap();
    let seen = |user: &str, uids: Vec<u32>, seen| Change::SetSeen {
        user: user.into(),
        mailbox: "prot".into(),
        folder: "INBOX".into(),
        uids,
        seen,
    };
    store.commit(a(), seen("mario", vec![1, 3], true)).await.unwrap();
    store.commit(a(), seen("anna", vec![3], true)).await.unwrap();
    store.commit(a(), seen("mario", vec![1], false)).await.unwrap();
    let moved = store
        .commit(
            a(),
            Change::Move { mailbox: "prot".into(), from: "INBOX".into(), to: "Receipts".into(), uids: vec![3, 99] },
        )
        .await
        .unwrap();
    assert_eq!(
        moved.event,
        Event::Moved { mailbox: "prot".into(), from: "INBOX".into(), to: "Receipts".into(), moves: vec![(3, 1)] }
    );
    let hidden = store
        .commit(a(), Change::Hide { mailbox: "prot".into(), folder: "INBOX".into(), uids: vec![2, 3] })
        .await
        .unwrap();
    match &hidden.event {
        Event::Hidden { uids, hashes, .. } => {
            assert_eq!(uids, &vec![2]);
            assert_eq!(hashes, &vec![blobs[1].hash.clone()]);
        }
        e => panic!("unexpected {e:?}"),
    }

    // The live index says what the clients saw.
    let inbox: Vec<u32> = store.messages("prot", "INBOX").unwrap().iter().map(|m| m.0).collect();
    assert_eq!(inbox, vec![1, 4]);
    let m1 = store.message("prot", "INBOX", 1).unwrap().unwrap();
    assert_eq!(m1.flags, vec!["\\Flagged".to_string()]);
    assert!(store.seen_uids("mario", "prot", "INBOX").unwrap().is_empty());
    assert_eq!(store.seen_uids("anna", "prot", "Receipts").unwrap(), vec![1]);
    assert_eq!(store.seen_uids("mario", "prot", "Receipts").unwrap(), vec![1]);
    assert!(store.hidden_message("prot", "INBOX", 2).unwrap().is_some());
    assert!(store.get_blob(&blobs[1].hash).is_ok(), "hiding keeps the blob");
    let st = store.folder("prot", "INBOX").unwrap().unwrap();
    assert_eq!(st.exists, 2);

    let live = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);
    rebuild_when_free(dir.path());
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.index_dump().unwrap(), live);
}

#[test]
fn flag_ops_keep_seen_out_of_shared_flags() {
    let cur = vec!["\\Flagged".to_string(), "$A".to_string()];
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(FlagOp::Add.apply(&cur, &s(&["\\Seen", "$b", "$a"])), s(&["\\Flagged", "$A", "$b"]));
    assert_eq!(FlagOp::Remove.apply(&cur, &s(&["$a"])), s(&["\\Flagged"]));
    assert_eq!(FlagOp::Replace.apply(&cur, &s(&["\\Seen", "\\Answered"])), s(&["\\Answered"]));
}

/// Two people take the same message at the same moment: exactly one wins,
/// the other is refused naming the winner, and one record says so.
#[tokio::test]
async fn concurrent_takes_first_wins() {
    use crate::handling::{Action, Routing, Transition};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let blob = store.put_blob(b"Subject: x\r\n\r\nx\r\n".to_vec()).await.unwrap();
    let mut ch = archive("m", "INBOX", blob.clone());
    if let Change::Archive { handling, .. } = &mut ch {
        *handling = Some(Routing { office: Some("tributi".into()), ..Routing::default() });
    }
    store.commit(Audit::system("test", "archive"), ch).await.unwrap();
    for round in 0..20 {
        let take = |who: &str| {
            let s = store.clone();
            let who = who.to_string();
            let hash = blob.hash.clone();
            tokio::spawn(async move {
                let t = Transition::new(Action::Take, &who);
                s.commit(
                    Audit::user(&who, None, "test", "take"),
                    Change::Handle { mailbox: "m".into(), hashes: vec![hash], transition: t },
                )
                .await
            })
        };
        let (a, b) = (take("anna"), take("mario"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let h = store.handling("m", &blob.hash).unwrap().unwrap();
        let winner = h.taken_by.clone().unwrap();
        match (a, b) {
            (Ok(_), Err(StoreError::Refused(why))) | (Err(StoreError::Refused(why)), Ok(_)) => {
                assert_eq!(why, crate::handling::Refusal::TakenBy(winner.clone()));
            }
            other => panic!("round {round}: expected one success and one refusal, got {other:?}"),
        }
        // Give it back for the next round.
        let t = Transition::new(Action::Reopen, &winner);
        store
            .commit(
                Audit::user(&winner, None, "test", "reopen"),
                Change::Handle { mailbox: "m".into(), hashes: vec![blob.hash.clone()], transition: t },
            )
            .await
            .unwrap();
    }
    store.close().unwrap();
}

/// Derived data is computed once per blob, cached, and left out of the
/// index dump (a rebuild does not reproduce it and need not).
#[tokio::test]
async fn derived_data_is_cached_per_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let b = store.put_blob(b"Subject: cached\r\n\r\nx\r\n".to_vec()).await.unwrap();
    let calls = std::cell::Cell::new(0);
    let len = |raw: &[u8]| {
        calls.set(calls.get() + 1);
        raw.len()
    };
    let before = store.index_dump().unwrap();
    assert_eq!(store.derived("len-1", &b.hash, len).unwrap(), 22);
    assert_eq!(store.derived("len-1", &b.hash, len).unwrap(), 22);
    assert_eq!(calls.get(), 1, "the second read came from the cache");
    // Another kind is another cache entry.
    assert_eq!(store.derived("len-2", &b.hash, len).unwrap(), 22);
    assert_eq!(calls.get(), 2);
    assert_eq!(store.index_dump().unwrap(), before, "derived data is not part of the index proper");
    // Writing a blob filled its search fields already.
    assert!(store.inner.index.derived(fields::FIELDS_KIND, &b.hash).unwrap().is_some());
    // (The decoded form is the raw one here: kept once.)
    assert_eq!(store.search_fields(&b.hash).unwrap().subject.as_deref(), Some("cached\n"));
    // A missing blob is an error, not a cached empty value.
    assert!(store.derived("len-1", &"0".repeat(64), len).is_err());
}

/// Categories: folders people create, as labels over the archive. Every
/// step is a journal record, so a rebuild gives the same folders, names,
/// UIDs and labels; no step removes a message from the archive.
#[tokio::test]
async fn categories_are_labels_and_survive_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let a = || Audit::user("mario", Some("127.0.0.1:1".into()), "imap", "test");
    let mut blobs = Vec::new();
    for i in 0..3 {
        let b = store.put_blob(format!("Subject: c{i}\r\n\r\nbody {i}\r\n").into_bytes()).await.unwrap();
        store.commit(a(), archive("prot", "INBOX", b.clone())).await.unwrap();
        blobs.push(b);
    }
    let cat = |s: &Store, name: &str| -> Option<String> {
        s.folders("prot").unwrap().into_iter().find(|(_, st)| st.category.as_deref() == Some(name)).map(|(f, _)| f)
    };
    let create = |name: &str| Change::CreateCategory { mailbox: "prot".into(), name: name.into() };
    store.commit(a(), create("Contratti/2026")).await.unwrap();
    let (parent, child) =
        (cat(&store, "Contratti").expect("parent created"), cat(&store, "Contratti/2026").expect("created"));
    assert_ne!(parent, child);
    assert!(matches!(store.commit(a(), create("Contratti/2026")).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.commit(a(), create("a//b")).await, Err(StoreError::Conflict(_))));

    // COPY labels: the message stays in INBOX, filed there.
    let c = store
        .commit(
            a(),
            Change::Copy { mailbox: "prot".into(), from: "INBOX".into(), to: child.clone(), uids: vec![1, 2, 77] },
        )
        .await
        .unwrap();
    assert_eq!(
        c.event,
        Event::Copied { mailbox: "prot".into(), from: "INBOX".into(), to: child.clone(), copies: vec![(1, 1), (2, 2)] }
    );
    assert_eq!(store.find_hash("prot", &blobs[0].hash).unwrap(), Some(("INBOX".into(), 1)));
    // APPEND of bytes already held: a message of its own in the category.
    let l = store
        .commit(
            a(),
            Change::Label {
                mailbox: "prot".into(),
                folder: child.clone(),
                hash: blobs[0].hash.clone(),
                size: blobs[0].size,
                internal_date: Utc::now().trunc_subsecs(0),
                flags: vec!["\\Flagged".into()],
            },
        )
        .await
        .unwrap();
    assert!(matches!(l.event, Event::Labeled { uid: 3, .. }));
    assert_eq!(store.messages("prot", &child).unwrap().len(), 3);
    // MOVE files it in the category: INBOX no longer shows it.
    store
        .commit(a(), Change::Move { mailbox: "prot".into(), from: "INBOX".into(), to: parent.clone(), uids: vec![3] })
        .await
        .unwrap();
    assert_eq!(store.find_hash("prot", &blobs[2].hash).unwrap(), Some((parent.clone(), 1)));
    assert_eq!(store.messages("prot", "INBOX").unwrap().len(), 2);
    // A label moving between categories leaves the message where it is filed.
    store
        .commit(a(), Change::Move { mailbox: "prot".into(), from: child.clone(), to: parent.clone(), uids: vec![2] })
        .await
        .unwrap();
    assert_eq!(store.find_hash("prot", &blobs[1].hash).unwrap(), Some(("INBOX".into(), 2)));

    // EXPUNGE in a category removes labels only, never what is filed there.
    let u = store
        .commit(a(), Change::Unlabel { mailbox: "prot".into(), folder: parent.clone(), uids: vec![1, 2] })
        .await
        .unwrap();
    assert!(matches!(&u.event, Event::Unlabeled { uids, .. } if uids == &vec![2]), "{:?}", u.event);
    assert_eq!(store.messages("prot", &parent).unwrap().iter().map(|m| m.0).collect::<Vec<_>>(), vec![1]);

    // RENAME takes the inferiors along and moves no message.
    let uv = store.folder("prot", &child).unwrap().unwrap().uidvalidity;
    store
        .commit(
            a(),
            Change::RenameCategory {
                mailbox: "prot".into(),
                from: "Contratti".into(),
                to: "Archivio/Contratti".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cat(&store, "Archivio/Contratti/2026").as_deref(), Some(child.as_str()));
    assert!(cat(&store, "Archivio").is_some(), "the new parent was created");
    assert_eq!(store.folder("prot", &child).unwrap().unwrap().uidvalidity, uv);

    // DELETE: refused while it has inferiors; then labels go and what the
    // category alone filed is hidden, never removed.
    let del = |name: &str| Change::DeleteCategory { mailbox: "prot".into(), name: name.into() };
    assert!(matches!(store.commit(a(), del("Archivio/Contratti")).await, Err(StoreError::Conflict(_))));
    store.commit(a(), del("Archivio/Contratti/2026")).await.unwrap();
    store.commit(a(), del("Archivio/Contratti")).await.unwrap();
    assert!(cat(&store, "Archivio/Contratti").is_none());
    assert!(store.folder("prot", &parent).unwrap().is_none());
    assert!(store.hidden_message("prot", &parent, 1).unwrap().is_some(), "the filed message is hidden");
    assert_eq!(store.messages("prot", "INBOX").unwrap().len(), 2, "labels went; INBOX is untouched");
    // Numbers are never given out twice.
    store.commit(a(), create("Nuova")).await.unwrap();
    let n = cat(&store, "Nuova").unwrap();
    assert!(![parent.clone(), child.clone()].contains(&n), "{n}");

    let live = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);
    rebuild_when_free(dir.path());
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.index_dump().unwrap(), live);
}

/// A data directory of an older pecgate has its index in `index/` (sled):
/// the first open removes it and rebuilds from the journal, and says so;
/// and an index behind the journal (commits a crash lost: most index
/// commits are not fsynced) catches up by replay.
#[tokio::test]
async fn an_old_index_is_rebuilt_and_a_lagging_one_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let a = || Audit::user("mario", Some("127.0.0.1:1".into()), "imap", "test");
    for i in 0..3 {
        let b = store.put_blob(format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes()).await.unwrap();
        store.commit(a(), archive("prot", "INBOX", b)).await.unwrap();
    }
    let live = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);

    // As an older version left it: a sled directory, no index.redb.
    std::fs::create_dir_all(dir.path().join("index/blobs")).unwrap();
    std::fs::write(dir.path().join("index/conf"), b"segment_size: 524288\n").unwrap();
    std::fs::remove_file(dir.path().join(index::FILE)).unwrap();
    let (store, rep) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(rep.rebuilt_index, "{rep:?}");
    assert_eq!(rep.replayed_records, 3 + 1, "three archives and the INBOX's creation: {rep:?}");
    assert!(!dir.path().join("index").exists(), "the old index is removed");
    assert_eq!(store.index_dump().unwrap(), live);
    store.close().unwrap();
    drop(store);

    // An index that lost its last commits: open replays them.
    let saved = std::fs::read(dir.path().join(index::FILE)).unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let b = store.put_blob(b"Subject: late\r\n\r\nbody\r\n".to_vec()).await.unwrap();
    store.commit(a(), archive("prot", "INBOX", b)).await.unwrap();
    let live = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);
    std::fs::write(dir.path().join(index::FILE), saved).unwrap();
    let (store, rep) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(!rep.rebuilt_index);
    assert_eq!(rep.replayed_records, 1);
    assert_eq!(store.index_dump().unwrap(), live);
    assert_eq!(store.messages("prot", "INBOX").unwrap().len(), 4);
}

/// A header-field cache written before format 5 (`search-fields-4`,
/// chrono's dates as text) is converted at the open, not emptied: a
/// million-message folder's first SEARCH would otherwise read every blob.
/// Values of a kind with no conversion are dropped.
#[tokio::test]
async fn an_older_field_cache_is_converted_at_the_open() {
    let raw = b"From: Mario Rossi <mario@example.it>\r\nSubject: =?UTF-8?B?UHJhdGljYSBuLiA0Mg==?=\r\n\
Date: Sun, 25 Mar 2007 00:30:00 +0200\r\nMessage-ID: <a@b>\r\n\r\nx\r\n";
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let b = store.put_blob(raw.to_vec()).await.unwrap();
    let f = store.search_fields(&b.hash).unwrap();
    store.close().unwrap();
    drop(store);
    let v4: fields::StoredV4 = (
        f.from.clone(),
        f.to.clone(),
        f.cc.clone(),
        f.bcc.clone(),
        f.subject.clone(),
        f.sent,
        f.date,
        f.subject_text.clone(),
        f.from_mailbox.clone(),
        f.to_mailbox.clone(),
        f.cc_mailbox.clone(),
        f.message_id.clone(),
        f.in_reply_to.clone(),
        f.references.clone(),
    );
    {
        // The cache as 4 left it: no format mark, v4 values only.
        let db = redb::Database::create(dir.path().join(index::DERIVED_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(index::DERIVED_META_FOR_TESTS).unwrap();
        tx.delete_table(index::DERIVED_FOR_TESTS).unwrap();
        {
            let mut t = tx.open_table(index::DERIVED_FOR_TESTS).unwrap();
            let mut k = b"search-fields-4\0".to_vec();
            codec::hash_bytes(&mut k, &b.hash);
            t.insert(k.as_slice(), postcard::to_allocvec(&v4).unwrap().as_slice()).unwrap();
            let mut other = b"len-9\0".to_vec();
            codec::hash_bytes(&mut other, &b.hash);
            t.insert(other.as_slice(), b"x".as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let cached = store.inner.index.derived(fields::FIELDS_KIND, &b.hash).unwrap().expect("converted");
    let back: fields::SearchFields = postcard::from_bytes(&cached).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.subject_text.as_deref(), Some("Pratica n. 42"), "an encoded Subject keeps its decoded form");
    assert_eq!(store.inner.index.derived("len-9", &b.hash).unwrap(), None, "no conversion: dropped");
    assert_eq!(store.inner.index.derived("search-fields-4", &b.hash).unwrap(), None, "the old entry is gone");
    // SEARCH's pass over the cache finds it.
    let seen = store
        .fields_reader()
        .unwrap()
        .scan(|h| (h == &BlobHash::parse(&b.hash)).then_some(()), |_, m| m.subject.map(str::to_string))
        .unwrap();
    assert_eq!(seen, vec![f.subject.clone()]);
}

/// Values derived as blobs are written are batched, yet found at once by
/// a lookup, and by SEARCH's pass once the index is flushed.
#[tokio::test]
async fn batched_field_values_are_found_before_and_after_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(store.put_blob(format!("Subject: s{i}\r\n\r\nx\r\n").into_bytes()).await.unwrap().hash);
    }
    for h in &hashes {
        assert!(store.inner.index.derived(fields::FIELDS_KIND, h).unwrap().is_some(), "waiting, yet found");
    }
    store.flush_index().await.unwrap();
    let mut seen = store.fields_reader().unwrap().scan(|_| Some(()), |_, m| m.subject.map(str::to_string)).unwrap();
    seen.sort();
    assert_eq!(seen, vec![Some("s0\n".to_string()), Some("s1\n".to_string()), Some("s2\n".to_string())]);
}

/// `store compact` packs the files of a stopped store without changing
/// what they hold; a store that closes packs them too.
#[tokio::test]
async fn packing_the_index_keeps_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    for i in 0..300 {
        let b = store.put_blob(format!("Subject: n. {i}\r\n\r\nx\r\n").into_bytes()).await.unwrap();
        store.commit(Audit::system("test", "archive"), archive("m", "INBOX", b)).await.unwrap();
    }
    let dump = store.index_dump().unwrap();
    store.close().unwrap();
    drop(store);
    let (before, after) = compact_index(dir.path()).unwrap();
    assert!(after > 0 && after <= before, "{before} -> {after}");
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.index_dump().unwrap(), dump);
}

/// A To every message has becomes a common value after a few messages:
/// the later entries hold its number, not the text; every reading (a
/// lookup, SEARCH's pass, after a reopen) still gives the whole field;
/// a rebuild forgets the common values with the entries.
#[tokio::test]
async fn a_value_many_messages_share_is_kept_once() {
    let to = "protocollo@pec.comune.example.it";
    let raw = |i: usize| {
        format!("From: Mario Rossi {i} <m{i}@example.it>\r\nTo: {to}\r\nSubject: n. {i}\r\n\r\nx\r\n").into_bytes()
    };
    let n = fields::COMMON_AFTER as usize + 4;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut hashes = Vec::new();
    for i in 0..n {
        let b = store.put_blob(raw(i)).await.unwrap();
        store.commit(Audit::system("test", "archive"), archive("m", "INBOX", b.clone())).await.unwrap();
        hashes.push(b.hash);
    }
    let check = |store: &Store| {
        for (i, h) in hashes.iter().enumerate() {
            let f = store.search_fields(h).unwrap();
            assert_eq!(f, fields::SearchFields::of(&raw(i)), "message {i}");
        }
        let tos = store.fields_reader().unwrap().scan(|_| Some(()), |_, m| m.to.map(str::to_string)).unwrap();
        assert_eq!(tos.len(), n, "SEARCH's pass reads every entry");
        assert!(tos.iter().all(|t| t.as_deref() == Some(&format!("{to}\n"))), "{tos:?}");
    };
    check(&store);
    store.close().unwrap();
    drop(store);
    let written_out = |dir: &Path| {
        let db = redb::Database::create(dir.join(index::DERIVED_FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(index::DERIVED_FOR_TESTS).unwrap();
        let (mut out, mut common) = (0, 0);
        for kv in t.iter().unwrap() {
            let (k, v) = kv.unwrap();
            if k.value().starts_with(b"c\0") {
                common += 1;
                assert_eq!(v.value(), format!("{to}\n").as_bytes(), "as the field holds it");
            } else if memchr::memmem::find(v.value(), to.as_bytes()).is_some() {
                out += 1;
            }
        }
        (out, common)
    };
    assert_eq!(written_out(dir.path()), (fields::COMMON_AFTER as usize - 1, 1), "written out until it is common");
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    check(&store);
    store.close().unwrap();
    drop(store);
    rebuild_when_free(dir.path());
    assert_eq!(written_out(dir.path()), (0, 0), "a rebuild starts the cache empty");
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    check(&store);
}
