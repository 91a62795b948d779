//! Whole sessions without a socket: raw IMAP bytes in over an in-memory
//! pipe, exact responses out, against a store in a temporary directory.
//! Each test guards one fault real clients tripped over (issue 13).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::super::io::Transport;
use super::super::Ctx;
use super::serve_transport;
use crate::config::{ImapConfig, UserConfig};
use crate::store::{Audit, Change, Store, StoreOptions};

const PW: &str = "pw-Secret-1";

struct Client {
    pipe: DuplexStream,
    buf: Vec<u8>,
    store: Store,
    ctx: Arc<Ctx>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn user(name: &str, rights: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password_hash: crate::auth::hash_password(PW).expect("hash"),
        default_mailbox: Some("prot".into()),
        grants: BTreeMap::from([("prot".to_string(), rights.iter().map(|r| r.to_string()).collect())]),
        roles: vec![],
    }
}

fn message(i: usize) -> Vec<u8> {
    format!("From: mittente{i}@pec.example.it\r\nTo: protocollo@pec.example.it\r\nSubject: Notifica {i}\r\nMessage-ID: <m{i}@example.it>\r\n\r\nTesto {i}\r\n").into_bytes()
}

async fn start(inbox: usize) -> Client {
    start_with((1..=inbox).map(|i| (message(i), chrono::Utc::now())).collect()).await
}

/// A server whose prot/INBOX holds `messages` (raw, internal date), in
/// this order, and a connection to it, greeted.
async fn start_with(messages: Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)>) -> Client {
    start_with_cfg(messages, serde_json::json!({ "listen": ["127.0.0.1:0"] })).await
}

/// [`start_with`] with the `[imap]` settings `cfg` (JSON).
async fn start_with_cfg(messages: Vec<(Vec<u8>, chrono::DateTime<chrono::Utc>)>, cfg: serde_json::Value) -> Client {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(&dir.path().join("data"), StoreOptions::default()).expect("store");
    for (raw, internal_date) in messages {
        let blob = store.put_blob(raw).await.expect("blob");
        let ch = Change::Archive {
            mailbox: "prot".into(),
            folder: "INBOX".into(),
            blob,
            internal_date,
            flags: vec![],
            provider: None,
            pec: None,
            handling: None,
        };
        store.commit(Audit::system("test", "archive"), ch).await.expect("archive");
    }
    let cert = crate::sim::pki::server_cert_for_ip("127.0.0.1").expect("cert");
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.chain).expect("write cert");
    std::fs::write(&k, cert.key).expect("write key");
    let cfg: ImapConfig = serde_json::from_value(cfg).expect("imap config");
    let users = vec![
        user("mario", &["read", "triage", "send", "delete"]),
        user("anna", &["read", "triage"]),
        user("ro", &["read"]),
        user("del", &["read", "delete"]),
    ];
    let ctx = Arc::new(Ctx {
        cfg,
        tls: crate::tls::server_config(&c, &k).expect("tls"),
        store: store.clone(),
        fulltext: None,
        auth: Arc::new(crate::auth::Authenticator::new(&users)),
        sessions: Default::default(),
        addresses: Default::default(),
        metas: Default::default(),
        overdue_after: None,
        rules: Default::default(),
        recent: Default::default(),
        mailbox_addresses: Arc::new([("prot".to_string(), "protocollo@pec.example.it".to_string())].into()),
    });
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (pipe, _) = connect(&ctx, rx);
    let mut cl = Client { pipe, buf: Vec::new(), store, ctx, _dir: dir, _stop: stop };
    let g = cl.read_until(|b| b.ends_with(b"\r\n")).await;
    assert!(g.starts_with("* OK"), "{g}");
    cl
}

fn connect(ctx: &Arc<Ctx>, rx: tokio::sync::watch::Receiver<bool>) -> (DuplexStream, ()) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let peer = "127.0.0.1:40000".parse().expect("addr");
    tokio::spawn(serve_transport(ctx.clone(), Transport::Memory(server), peer, true, false, rx));
    (client, ())
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.pipe.write_all(bytes).await.expect("write");
    }

    /// Read until `done(buffer)`; panics after 30 s (argon2 in a debug
    /// build on a busy machine is slow). Returns what was read.
    async fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&self.buf) {
            let mut chunk = vec![0u8; 16384];
            match tokio::time::timeout_at(deadline, self.pipe.read(&mut chunk)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => break,
                Err(_) => panic!("timed out; got so far: {}", String::from_utf8_lossy(&self.buf)),
            }
        }
        let out = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        out
    }

    /// Send a command line and read through its tagged answer.
    async fn cmd(&mut self, tag: &str, rest: &str) -> String {
        self.send(format!("{tag} {rest}\r\n").as_bytes()).await;
        self.tagged(tag).await
    }

    async fn tagged(&mut self, tag: &str) -> String {
        let want = format!("{tag} ");
        self.read_until(|b| String::from_utf8_lossy(b).lines().any(|l| l.starts_with(&want)) && b.ends_with(b"\r\n"))
            .await
    }

    /// Read to the end of the stream (the server closed).
    async fn closed(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let mut chunk = vec![0u8; 16384];
            match tokio::time::timeout_at(deadline, self.pipe.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("still open after 2 s: {}", String::from_utf8_lossy(&self.buf)),
            }
        }
        let out = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        out
    }

    /// Another session on the same server.
    async fn another(&self) -> Client {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (pipe, _) = connect(&self.ctx, rx);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c =
            Client { pipe, buf: Vec::new(), store: self.store.clone(), ctx: self.ctx.clone(), _dir: dir, _stop: stop };
        let g = c.read_until(|b| b.ends_with(b"\r\n")).await;
        assert!(g.starts_with("* OK"), "{g}");
        c
    }

    async fn login(&mut self, name: &str) {
        let r = self.cmd("l", &format!("LOGIN {name} {PW}")).await;
        assert!(r.contains("l OK"), "{r}");
    }
}

fn tagged_line<'a>(r: &'a str, tag: &str) -> &'a str {
    r.lines().find(|l| l.starts_with(&format!("{tag} "))).unwrap_or("")
}

/// During IDLE an untagged OK goes out every `idle_keepalive` (phones and
/// home routers drop silent connections); the IDLE itself goes on.
#[tokio::test]
async fn idle_sends_keepalives() {
    let cfg = serde_json::json!({ "listen": ["127.0.0.1:0"], "idle_keepalive": "1s" });
    let mut c = start_with_cfg(vec![(message(1), chrono::Utc::now())], cfg).await;
    c.login("mario").await;
    assert!(c.cmd("s", "SELECT INBOX").await.contains("s OK"));
    c.send(b"i IDLE\r\n").await;
    let r = c.read_until(|b| b.ends_with(b"\r\n")).await;
    assert!(r.starts_with("+ "), "{r}");
    let t0 = std::time::Instant::now();
    let r = c.read_until(|b| String::from_utf8_lossy(b).matches("* OK still here\r\n").count() >= 2).await;
    assert!(t0.elapsed() >= Duration::from_millis(1500), "two keep-alives came after {:?}: {r}", t0.elapsed());
    c.send(b"DONE\r\n").await;
    assert!(c.tagged("i").await.contains("i OK"));
    // Not idling: no keep-alives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.cmd("n", "NOOP").await.starts_with("n OK"), "an untagged OK outside IDLE");
}

#[tokio::test]
async fn syntax_errors_get_a_tagged_bad() {
    let mut c = start(2).await;
    let r = c.cmd("x5", "APPEND \"pec1/INBOX\" \"x\"").await;
    assert!(tagged_line(&r, "x5").starts_with("x5 BAD"), "{r}");
    let r = c.cmd("a1", "SELECT INBOX").await;
    assert!(tagged_line(&r, "a1").starts_with("a1 BAD"), "{r}");
    c.login("mario").await;
    let r = c.cmd("a3", "FETCH 1 FLAGS").await;
    assert!(tagged_line(&r, "a3").starts_with("a3 BAD"), "{r}");
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    for (tag, line) in [("x1", "SEARCH 0:*"), ("x2", "FETCH 1 ((((((((FLAGS))))))))"), ("x6", "FOO")] {
        let r = c.cmd(tag, line).await;
        let l = tagged_line(&r, tag);
        assert!(l.starts_with(&format!("{tag} BAD [PARSE]")), "{tag}: {r}");
    }
    c.send(b"x3 CREATE \"\xff\xfe\"\r\n").await;
    let r = c.tagged("x3").await;
    assert!(tagged_line(&r, "x3").starts_with("x3 BAD"), "{r}");
    // No tag to answer: untagged.
    c.send(b")(\r\n").await;
    let r = c.read_until(|b| b.ends_with(b"\r\n")).await;
    assert!(r.starts_with("* BAD"), "{r}");
    assert!(c.cmd("z", "NOOP").await.contains("z OK"));
}

#[tokio::test]
async fn literal_minus_before_login_literal_plus_and_appendlimit_after() {
    let mut c = start(0).await;
    let r = c.cmd("c", "CAPABILITY").await;
    assert!(r.contains("LITERAL-") && !r.contains("LITERAL+"), "{r}");
    c.send(b"a LOGIN {5+}\r\nmario {11+}\r\npw-Secret-1\r\n").await;
    let r = c.tagged("a").await;
    assert!(r.contains("a OK"), "{r}");
    let r = c.cmd("c", "CAPABILITY").await;
    assert!(r.contains("LITERAL+") && r.contains("APPENDLIMIT="), "{r}");
}

#[tokio::test]
async fn a_big_literal_before_login_is_refused_at_once() {
    let mut c = start(0).await;
    c.send(b"a LOGIN {104857600+}\r\n").await;
    // The server stops reading: the 1 MiB pipe fills and nothing more is
    // taken. It answers and closes without waiting for the data.
    let r = c.closed().await;
    assert!(r.contains("* BAD [TOOBIG]"), "{r}");
}

#[tokio::test]
async fn a_line_without_crlf_is_cut_off() {
    let mut c = start(0).await;
    c.send(&vec![b'a'; 70 * 1024]).await;
    let r = c.closed().await;
    assert!(r.contains("* BAD line too long"), "{r}");
}

#[tokio::test]
async fn read_only_users_keep_their_own_seen() {
    let mut c = start(2).await;
    c.login("ro").await;
    let r = c.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.contains("[READ-WRITE]"), "{r}");
    assert!(r.contains("[PERMANENTFLAGS (\\Seen)]"), "{r}");
    let r = c.cmd("a", "STORE 1 +FLAGS (\\Seen)").await;
    assert!(r.contains("a OK") && r.contains("FLAGS (\\Seen"), "{r}");
    let r = c.cmd("b", "STORE 1 +FLAGS (\\Flagged)").await;
    assert!(tagged_line(&r, "b").starts_with("b NO [NOPERM]"), "{r}");
    let r = c.cmd("f", "FETCH 2 BODY[]").await;
    assert!(r.contains("\\Seen") && r.contains("f OK"), "{r}");
    // Stored as ro's alone.
    let seen = c.store.seen_uids("ro", "prot", "INBOX").expect("seen");
    assert_eq!(seen.len(), 2);
    assert!(c.store.seen_uids("anna", "prot", "INBOX").expect("seen").is_empty());
}

#[tokio::test]
async fn hiding_needs_delete_and_trash_shows_what_is_hidden() {
    let mut c = start(3).await;
    c.login("anna").await;
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    let r = c.cmd("d", "STORE 1 +FLAGS (\\Deleted)").await;
    assert!(tagged_line(&r, "d").contains("NO [NOPERM] hiding a message needs the delete right"), "{r}");
    let r = c.cmd("l", "LIST \"\" \"*\"").await;
    assert!(!r.contains("Trash"), "{r}");

    let mut c = start(3).await;
    c.login("del").await;
    let r = c.cmd("l", "LIST \"\" \"*\"").await;
    assert!(r.contains("(\\HasNoChildren \\Trash) \"/\" prot/Trash"), "{r}");
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    assert!(c.cmd("d", "STORE 1 +FLAGS (\\Deleted)").await.contains("d OK"));
    let r = c.cmd("e", "EXPUNGE").await;
    assert!(r.contains("* 1 EXPUNGE") && r.contains("e OK"), "{r}");
    let r = c.cmd("m", "UID MOVE 2 prot/Trash").await;
    assert!(r.contains("* 1 EXPUNGE") && r.contains("m OK"), "{r}");
    let r = c.cmd("t", "SELECT prot/Trash").await;
    assert!(r.contains("* 2 EXISTS"), "{r}");
    let r = c.cmd("u", "UID MOVE 2 prot/INBOX").await;
    assert!(r.contains("u OK"), "{r}");
    let r = c.cmd("i", "SELECT prot/INBOX").await;
    assert!(r.contains("* 2 EXISTS") && r.contains("[UIDNEXT 5]"), "{r}");
    let r = c.cmd("f", "UID FETCH 4 BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]").await;
    assert!(r.contains("<m2@example.it>"), "{r}");
}

#[tokio::test]
async fn append_to_sent_checks_from_and_finds_copies_already_sent() {
    let mut c = start(0).await;
    c.login("mario").await;
    let own = "From: protocollo@pec.example.it\r\nMessage-ID: <own@x>\r\nSubject: s\r\n\r\nb\r\n";
    c.send(format!("a APPEND prot/Sent (\\Seen) {{{}+}}\r\n{own}\r\n", own.len()).as_bytes()).await;
    let r = c.tagged("a").await;
    assert!(r.contains("a OK [APPENDUID"), "{r}");
    // The same bytes again: the copy already archived, nothing added.
    c.send(format!("b APPEND prot/Sent {{{}+}}\r\n{own}\r\n", own.len()).as_bytes()).await;
    let appenduid = |r: &str, tag: &str| -> String {
        let l = tagged_line(r, tag);
        l.split_once("[APPENDUID ")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default()
    };
    let first = appenduid(&r, "a");
    let r = c.tagged("b").await;
    assert!(!first.is_empty() && appenduid(&r, "b") == first, "{r} vs {first}");
    let other = "From: someone@else.it\r\nSubject: s\r\n\r\nb\r\n";
    c.send(format!("c APPEND prot/Sent {{{}+}}\r\n{other}\r\n", other.len()).as_bytes()).await;
    let r = c.tagged("c").await;
    assert!(tagged_line(&r, "c").starts_with("c NO [CANNOT]"), "{r}");
    let r = c.cmd("s", "STATUS prot/Sent (MESSAGES)").await;
    assert!(r.contains("MESSAGES 1"), "{r}");
}

/// Issue 22 item 4: CLOSE hides what is marked \Deleted, for a user who
/// may hide; for one who may not, it only closes.
#[tokio::test]
async fn close_expunges_for_users_with_delete() {
    let mut mario = start(3).await;
    mario.login("mario").await;
    assert!(mario.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    assert!(mario.cmd("d", "STORE 1 +FLAGS (\\Deleted)").await.contains("d OK"));
    let mut anna = mario.another().await;
    anna.login("anna").await;
    assert!(anna.cmd("s", "SELECT prot/INBOX").await.contains("* 3 EXISTS"));
    let r = anna.cmd("c", "CLOSE").await;
    assert!(r.contains("c OK") && !r.contains("EXPUNGE"), "{r}");
    assert!(anna.cmd("t", "STATUS prot/INBOX (MESSAGES)").await.contains("MESSAGES 3"));
    let r = mario.cmd("c", "CLOSE").await;
    assert!(r.contains("c OK") && !r.contains("EXPUNGE"), "{r}");
    assert!(mario.cmd("t", "STATUS prot/INBOX (MESSAGES)").await.contains("MESSAGES 2"));
}

/// Issue 22 item 6: a keyword is announced in FLAGS before a FETCH shows
/// it, and listed at SELECT.
#[tokio::test]
async fn keywords_are_announced_in_flags() {
    let mut c = start(2).await;
    c.login("mario").await;
    let r = c.cmd("s", "SELECT prot/INBOX").await;
    assert!(!r.contains("$Etichetta"), "{r}");
    let r = c.cmd("k", "STORE 1 +FLAGS ($Etichetta)").await;
    let flags_at = r.find("* FLAGS (").unwrap_or(usize::MAX);
    let fetch_at = r.find("FETCH (").unwrap_or(0);
    assert!(flags_at < fetch_at && r[flags_at..].contains("$Etichetta"), "{r}");
    let mut other = c.another().await;
    other.login("anna").await;
    let r = other.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.lines().any(|l| l.starts_with("* FLAGS (") && l.contains("$Etichetta")), "{r}");
}

/// Issue 22 items 7 and 8: APPEND into the selected folder reports EXISTS
/// before its tagged OK; a folder selected before anything was filed in it
/// keeps the UIDVALIDITY that SELECT showed.
#[tokio::test]
async fn append_into_the_selected_folder() {
    let mut c = start(0).await;
    c.login("mario").await;
    let r = c.cmd("s", "SELECT prot/Sent").await;
    let uv = r.split("[UIDVALIDITY ").nth(1).and_then(|x| x.split(']').next()).map(str::to_string).unwrap_or_default();
    assert!(!uv.is_empty() && uv != "1", "{r}");
    let own = "From: protocollo@pec.example.it\r\nSubject: s\r\n\r\nb\r\n";
    c.send(format!("a APPEND prot/Sent {{{}+}}\r\n{own}\r\n", own.len()).as_bytes()).await;
    let r = c.tagged("a").await;
    let exists = r.find("* 1 EXISTS").unwrap_or(usize::MAX);
    let okat = r.find("a OK").unwrap_or(0);
    assert!(exists < okat, "{r}");
    assert!(r.contains(&format!("[APPENDUID {uv} 1]")), "{r}");
}

/// Issue 22 item 5: `\Recent` — a message is recent in the first session
/// that sees it; SEARCH NEW/RECENT find it there.
#[tokio::test]
async fn recent_goes_to_the_first_session_that_sees_a_message() {
    let mut a = start(2).await;
    a.login("mario").await;
    let r = a.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.contains("* 2 RECENT"), "{r}");
    let mut b = a.another().await;
    b.login("mario").await;
    let r = b.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.contains("* 0 RECENT"), "{r}");
    assert!(a.cmd("x", "SELECT prot/Sent").await.contains("* 0 RECENT"));
    let own = "From: protocollo@pec.example.it\r\nSubject: s\r\n\r\nb\r\n";
    b.send(format!("p APPEND prot/Sent {{{}+}}\r\n{own}\r\n", own.len()).as_bytes()).await;
    assert!(b.tagged("p").await.contains("p OK"));
    let r = a.cmd("n", "NOOP").await;
    assert!(r.contains("* 1 EXISTS") && r.contains("* 1 RECENT"), "{r}");
    let r = a.cmd("q", "SEARCH NEW").await;
    assert!(r.contains("* SEARCH 1\r\n"), "{r}");
    let r = a.cmd("f", "FETCH 1 FLAGS").await;
    assert!(r.contains("\\Recent"), "{r}");
    let r = b.cmd("t", "STATUS prot/Sent (RECENT)").await;
    assert!(r.contains("RECENT 0"), "{r}");
}

/// Categories (issue 22): folders people create under a mailbox, labels
/// over the archive. CREATE/RENAME/DELETE need triage; COPY labels; MOVE
/// files; EXPUNGE there removes labels; nothing leaves the archive.
#[tokio::test]
async fn categories_are_folders_people_create() {
    let mut c = start(3).await;
    c.login("anna").await;
    // The gateway's own folders and names outside a mailbox stay fixed.
    for (t, name) in [("c1", "prot/Sent"), ("c2", "prot/inbox/x"), ("c3", "Altro")] {
        let r = c.cmd(t, &format!("CREATE \"{name}\"")).await;
        assert!(tagged_line(&r, t).starts_with(&format!("{t} NO")), "{name}: {r}");
    }
    let r = c.cmd("c4", "CREATE \"prot/Contratti 2026/Fornitori\"").await;
    assert!(tagged_line(&r, "c4").starts_with("c4 OK"), "{r}");
    let r = c.cmd("c5", "CREATE \"prot/Contratti 2026\"").await;
    assert!(tagged_line(&r, "c5").starts_with("c5 NO [ALREADYEXISTS]"), "{r}");
    let r = c.cmd("l", "LIST \"\" \"prot/Contratti*\"").await;
    assert!(r.contains("(\\HasChildren) \"/\" \"prot/Contratti 2026\"\r\n"), "{r}");
    assert!(r.contains("(\\HasNoChildren) \"/\" \"prot/Contratti 2026/Fornitori\"\r\n"), "{r}");

    // COPY labels: INBOX keeps its three messages.
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    let r = c.cmd("k", "UID COPY 1:2 \"prot/Contratti 2026\"").await;
    assert!(tagged_line(&r, "k").contains("[COPYUID ") && tagged_line(&r, "k").contains(" 1,2 1,2]"), "{r}");
    // MOVE files: INBOX no longer shows message 3.
    let r = c.cmd("m", "UID MOVE 3 \"prot/Contratti 2026\"").await;
    assert!(r.contains("* 3 EXPUNGE") && tagged_line(&r, "m").starts_with("m OK"), "{r}");
    let r = c.cmd("st", "STATUS \"prot/Contratti 2026\" (MESSAGES UIDNEXT)").await;
    assert!(r.contains("(MESSAGES 3 UIDNEXT 4)"), "{r}");

    // APPEND: new bytes, and bytes already held (a message of its own).
    let msg = "From: a@b.it\r\nSubject: bozza\r\n\r\nciao\r\n";
    for t in ["a1", "a2"] {
        c.send(format!("{t} APPEND \"prot/Contratti 2026\" (\\Flagged) {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes())
            .await;
        let r = c.tagged(t).await;
        assert!(tagged_line(&r, t).starts_with(&format!("{t} OK [APPENDUID ")), "{r}");
    }
    c.send(
        format!(
            "a3 APPEND \"prot/Contratti 2026\" {{{}+}}\r\n{}\r\n",
            message(1).len(),
            String::from_utf8(message(1)).unwrap()
        )
        .as_bytes(),
    )
    .await;
    let r = c.tagged("a3").await;
    assert!(tagged_line(&r, "a3").contains(" 6] "), "the 6th message of the folder: {r}");

    // EXPUNGE in the category: labels go; filed messages stay for a user
    // without delete.
    assert!(c.cmd("s2", "SELECT \"prot/Contratti 2026\"").await.contains("* 6 EXISTS"));
    let r = c.cmd("d", "STORE 1:6 +FLAGS.SILENT (\\Deleted)").await;
    assert!(tagged_line(&r, "d").starts_with("d OK"), "{r}");
    let r = c.cmd("e", "EXPUNGE").await;
    assert!(tagged_line(&r, "e").contains("kept 1 message(s) filed only in this folder"), "{r}");
    let r = c.cmd("n", "NOOP").await;
    let _ = r;
    let left: Vec<u32> =
        c.store.messages("prot", &cat_of(&c.store, "Contratti 2026")).unwrap().iter().map(|m| m.0).collect();
    assert_eq!(left, vec![3], "the moved PEC is filed here; what anna appended she may take away");
    assert_eq!(c.store.messages("prot", "INBOX").unwrap().len(), 2);
    let r = c.cmd("u", "UNSELECT").await;
    assert!(r.contains("u OK"));

    // RENAME takes the inferiors along; DELETE refuses while messages are
    // filed only there (anna lacks delete) and while it has inferiors.
    let r = c.cmd("r", "RENAME \"prot/Contratti 2026\" \"prot/Archivio/Contratti\"").await;
    assert!(tagged_line(&r, "r").starts_with("r OK"), "{r}");
    let r = c.cmd("l2", "LIST \"\" \"prot/Archivio*\"").await;
    assert!(r.contains(" prot/Archivio/Contratti/Fornitori\r\n"), "{r}");
    let r = c.cmd("x1", "DELETE \"prot/Archivio/Contratti\"").await;
    assert!(tagged_line(&r, "x1").starts_with("x1 NO [NOPERM]"), "{r}");
    let r = c.cmd("x2", "DELETE \"prot/Archivio/Contratti/Fornitori\"").await;
    assert!(tagged_line(&r, "x2").starts_with("x2 OK"), "{r}");
    let r = c.cmd("x3", "DELETE \"prot/INBOX\"").await;
    assert!(tagged_line(&r, "x3").starts_with("x3 NO [CANNOT]"), "{r}");

    // A read-only user may not make folders.
    let mut ro = c.another().await;
    ro.login("ro").await;
    let r = ro.cmd("c", "CREATE \"prot/Mio\"").await;
    assert!(tagged_line(&r, "c").starts_with("c NO [NOPERM]"), "{r}");
    // mario (delete) deletes it: what it filed is hidden, not removed.
    let mut m = c.another().await;
    m.login("mario").await;
    let r = m.cmd("x", "DELETE \"prot/Archivio/Contratti\"").await;
    assert!(tagged_line(&r, "x").starts_with("x OK"), "{r}");
    let r = m.cmd("t", "STATUS \"prot/Trash\" (MESSAGES)").await;
    assert!(r.contains("(MESSAGES 2)"), "{r}");
}

fn cat_of(store: &Store, name: &str) -> String {
    store
        .folders("prot")
        .unwrap()
        .into_iter()
        .find(|(_, st)| st.category.as_deref() == Some(name))
        .map(|(f, _)| f)
        .expect("category")
}

/// Each user's own Drafts (`\Drafts`) and Templates: made at first login,
/// nobody else's to see, and EXPUNGE there deletes (not PEC, not evidence).
#[tokio::test]
async fn drafts_are_private_and_expunge_deletes() {
    let mut c = start(0).await;
    c.login("anna").await;
    let r = c.cmd("l", "LIST \"\" %").await;
    assert!(r.contains("* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts\r\n"), "{r}");
    assert!(r.contains("* LIST (\\HasNoChildren) \"/\" Templates\r\n"), "{r}");
    let msg = "From: anna@example.it\r\nSubject: bozza\r\n\r\nda finire\r\n";
    c.send(format!("a APPEND Drafts (\\Draft) {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes()).await;
    let r = c.tagged("a").await;
    assert!(tagged_line(&r, "a").starts_with("a OK [APPENDUID "), "{r}");
    let mut m = c.another().await;
    m.login("mario").await;
    let r = m.cmd("s", "STATUS Drafts (MESSAGES)").await;
    assert!(r.contains("(MESSAGES 0)"), "mario's Drafts are his own: {r}");
    assert!(c.cmd("s", "SELECT Drafts").await.contains("* 1 EXISTS"));
    assert!(c.cmd("d", "STORE 1 +FLAGS (\\Deleted)").await.contains("d OK"));
    let r = c.cmd("e", "EXPUNGE").await;
    assert!(r.contains("* 1 EXPUNGE") && tagged_line(&r, "e").starts_with("e OK"), "{r}");
    let own = "~anna";
    let drafts =
        c.store.folders(own).unwrap().into_iter().find(|(_, st)| st.category.as_deref() == Some("Drafts")).unwrap().0;
    assert!(c.store.messages(own, &drafts).unwrap().is_empty());
    let hash = crate::store::blobs::sha256_hex(msg.as_bytes());
    assert_eq!(c.store.find_hash(own, &hash).unwrap(), None, "deleted, not hidden");
    assert!(c.store.hidden_messages(own).unwrap().is_empty());
}

/// `<mailbox>/All` (`\All`): every message once, wherever it is filed
/// (a message moved into a category, not its labels), read-only.
#[tokio::test]
async fn all_shows_every_message_once() {
    let mut c = start(3).await;
    c.login("anna").await;
    let r = c.cmd("l", "LIST \"\" prot/All").await;
    assert!(r.contains("* LIST (\\HasNoChildren \\All) \"/\" prot/All\r\n"), "{r}");
    assert!(c.cmd("c", "CREATE prot/Cartella").await.contains("c OK"));
    assert!(c.cmd("s", "SELECT prot/INBOX").await.contains("s OK"));
    assert!(c.cmd("k", "UID COPY 1 prot/Cartella").await.contains("k OK"));
    assert!(c.cmd("m", "UID MOVE 2 prot/Cartella").await.contains("m OK"));
    let r = c.cmd("a", "SELECT prot/All").await;
    assert!(r.contains("* 3 EXISTS") && tagged_line(&r, "a").starts_with("a OK [READ-ONLY]"), "{r}");
    let r = c.cmd("f", "UID FETCH 1:* (UID)").await;
    assert!(r.contains("(UID 1)") && r.contains("(UID 2)") && r.contains("(UID 3)"), "the archive order: {r}");
    let r = c.cmd("x", "UID COPY 1 prot/Cartella").await;
    assert!(tagged_line(&r, "x").starts_with("x NO [CANNOT]"), "{r}");
}

#[path = "session_sort_tests.rs"]
mod sort;

/// Issue 14: what another session changed reaches this one as RFC 3501
/// §7.4.1 allows. During FETCH, STORE and SEARCH an EXPUNGE is held back
/// (sequence numbers must not move under the client), flag changes and
/// new messages are told at once; the next NOOP tells the EXPUNGE, with
/// sequence numbers that agree with what the client was shown.
#[tokio::test]
async fn changes_by_another_session_arrive_in_order() {
    let mut a = start(4).await;
    a.login("mario").await;
    assert!(a.cmd("s", "SELECT prot/INBOX").await.contains("* 4 EXISTS"));
    let mut b = a.another().await;
    b.login("mario").await;
    assert!(b.cmd("s", "SELECT prot/INBOX").await.contains("* 4 EXISTS"));
    assert!(b.cmd("d", "STORE 2 +FLAGS (\\Deleted)").await.contains("d OK"));
    assert!(b.cmd("f", "STORE 4 +FLAGS (\\Flagged)").await.contains("f OK"));
    assert!(b.cmd("e", "EXPUNGE").await.contains("* 2 EXPUNGE"));
    // A new message, as archiving brings it.
    let blob = a.store.put_blob(message(5)).await.expect("blob");
    let ch = Change::Archive {
        mailbox: "prot".into(),
        folder: "INBOX".into(),
        blob,
        internal_date: chrono::Utc::now(),
        flags: vec![],
        provider: None,
        pec: None,
        handling: None,
    };
    a.store.commit(Audit::system("test", "archive"), ch).await.expect("archive");
    // FETCH: no EXPUNGE, the old numbering (4 is still UID 4), the new
    // flag and the new message.
    let r = a.cmd("f", "FETCH 1:* (UID FLAGS)").await;
    assert!(!r.contains("EXPUNGE"), "{r}");
    assert!(r.contains("* 5 EXISTS"), "{r}");
    assert!(r.contains("* 4 FETCH (UID 4 FLAGS (\\Flagged \\Recent))"), "{r}");
    // The hidden message keeps its place until EXPUNGE may be told.
    assert!(a.cmd("g", "FETCH 2 UID").await.contains("* 2 FETCH (UID 2)"));
    let r = a.cmd("n", "NOOP").await;
    assert!(r.contains("* 2 EXPUNGE") && !r.contains("EXISTS"), "{r}");
    let r = a.cmd("u", "FETCH 1:* UID").await;
    let uids: Vec<&str> = r.lines().filter(|l| l.contains(" FETCH (UID ")).collect();
    assert_eq!(uids.len(), 4, "{r}");
    assert!(r.contains("* 2 FETCH (UID 3)") && r.contains("* 4 FETCH (UID 5)"), "{r}");
    // Both sessions now show the same list and say nothing more.
    let r = a.cmd("m", "NOOP").await;
    assert!(!r.contains("EXPUNGE") && !r.contains("EXISTS") && !r.contains("FETCH"), "{r}");
}

/// INBOX, in any case, is found without building the folder tree: it is
/// the folder the tree's first entry names, the default mailbox's INBOX.
/// A user who may read no mailbox has none.
#[tokio::test]
async fn inbox_is_the_first_folder_of_the_tree() {
    let c = start(3).await;
    let view = crate::imap::view::View::new(c.ctx.auth.user("mario").expect("user"), c.store.clone());
    let first = view.tree().into_iter().next().and_then(|e| e.folder).expect("a first folder");
    assert_eq!((first.name.as_str(), first.mailbox.as_str()), ("INBOX", "prot"));
    for name in ["INBOX", "inbox", "InBoX"] {
        assert_eq!(view.resolve(name).expect(name), first, "{name}");
    }
    let mut nobody = user("nobody", &[]);
    (nobody.default_mailbox, nobody.grants) = (None, BTreeMap::new());
    let auth = crate::auth::Authenticator::new(&[nobody]);
    let view = crate::imap::view::View::new(auth.user("nobody").expect("user"), c.store.clone());
    assert!(view.tree().is_empty());
    assert!(view.resolve("INBOX").is_err());
}

/// A large folder nobody holds a list of is opened in place on the
/// runtime while the user has seen few of its messages, not once they have
/// seen many (a million seen UIDs are a million keys to read), nor a small
/// folder (read whole).
#[tokio::test]
async fn a_large_folder_opens_in_place_while_few_of_it_are_seen() {
    let (small, big) = (start(3).await, start(20).await);
    let view = crate::imap::view::View::new(small.ctx.auth.user("mario").expect("user"), small.store.clone());
    let prot = view.resolve("prot/INBOX").expect("prot/INBOX");
    let big_view = crate::imap::view::View::new(big.ctx.auth.user("mario").expect("user"), big.store.clone());
    assert!(big_view.opens_lazily(&prot).expect("opens"), "20 messages, none seen");
    assert!(!view.opens_lazily(&prot).expect("opens"), "3 messages: read whole, off the runtime");
    let seen = |uids: Vec<u32>| Change::SetSeen {
        user: "mario".into(),
        mailbox: "prot".into(),
        folder: "INBOX".into(),
        uids,
        seen: true,
    };
    big.store.commit(Audit::system("test", "seen"), seen(vec![1, 2, 3, 4])).await.expect("seen");
    assert!(big_view.opens_lazily(&prot).expect("opens"), "four seen");
    big.store.commit(Audit::system("test", "seen"), seen(vec![5])).await.expect("seen");
    assert!(!big_view.opens_lazily(&prot).expect("opens"), "five seen: more than INLINE_SEEN");
    // A list held: it may need patching, off the runtime too.
    big.store
        .commit(
            Audit::system("test", "seen"),
            Change::SetSeen {
                user: "mario".into(),
                mailbox: "prot".into(),
                folder: "INBOX".into(),
                uids: vec![5],
                seen: false,
            },
        )
        .await
        .expect("unseen");
    assert!(big_view.opens_lazily(&prot).expect("opens"), "four seen again");
    let held = big_view.snapshot(&prot).expect("snapshot");
    assert!(!big_view.opens_lazily(&prot).expect("opens"), "a list held");
    drop(held);
}

/// Issue 14: a selected folder's list is brought up to date from the
/// entries the writer changed, not read again whole; what that gives is
/// what reading the folder whole gives, through new messages, flag
/// changes and hiding; a change of more than a quarter of the list reads
/// it whole, the same.
#[tokio::test]
async fn a_list_is_maintained_from_the_writers_changes() {
    let c = start(40).await;
    let user = c.ctx.auth.user("mario").expect("user");
    let view = crate::imap::view::View::new(user.clone(), c.store.clone()).with_shared(c.ctx.metas.clone());
    let fresh = || crate::imap::view::View::new(user.clone(), c.store.clone());
    let inbox = view.resolve("prot/INBOX").expect("folder");
    // Lists are kept while a session holds them: hold each.
    let mut held = vec![view.snapshot(&inbox).expect("snapshot").0];
    let a = |op: &str| Audit::system("test", op);
    let flags = |uids: Vec<u32>, flag: &str| Change::SetFlags {
        mailbox: "prot".into(),
        folder: "INBOX".into(),
        uids,
        op: crate::store::FlagOp::Add,
        flags: vec![flag.into()],
    };
    for round in 0..3u32 {
        let blob = c.store.put_blob(message(100 + round as usize)).await.expect("blob");
        let ch = Change::Archive {
            mailbox: "prot".into(),
            folder: "INBOX".into(),
            blob,
            internal_date: chrono::Utc::now(),
            flags: vec!["$Nuovo".into()],
            provider: None,
            pec: None,
            handling: None,
        };
        c.store.commit(a("archive"), ch).await.expect("archive");
        c.store.commit(a("flag"), flags(vec![3 + round], "\\Flagged")).await.expect("flags");
        let ch = Change::Hide { mailbox: "prot".into(), folder: "INBOX".into(), uids: vec![10 + round] };
        c.store.commit(a("hide"), ch).await.expect("hide");
        let (now, _) = view.snapshot(&inbox).expect("snapshot");
        let (whole, _) = fresh().snapshot(&inbox).expect("snapshot");
        assert_eq!(*now, *whole, "round {round}: maintained = read whole");
        assert_eq!(now.len(), 40, "one in, one hidden");
        assert!(now.iter().any(|(u, m)| *u == 3 + round && m.flags.iter().any(|f| f == "\\Flagged")));
        assert!(now.last().is_some_and(|(_, m)| m.flags.iter().any(|f| f == "$Nuovo")));
        held.push(now);
    }
    assert_ne!(*held[0], *held[3]);
    // Twenty of forty changed: read whole.
    c.store.commit(a("flag"), flags((20..40).collect(), "$Visto")).await.expect("flags");
    let (now, _) = view.snapshot(&inbox).expect("snapshot");
    assert_eq!(*now, *fresh().snapshot(&inbox).expect("snapshot").0);
    assert_eq!(now.iter().filter(|(_, m)| m.flags.iter().any(|f| f == "$Visto")).count(), 20);
}

/// Issue 14: a large folder's list is read in the background after SELECT
/// (in tests from 8 messages, the last 4 read at once). SELECT's counts,
/// UNSEEN and RECENT are right before it is whole; FETCH of the newest
/// answers from what is read, with the right numbers; the keyword of an
/// older message is announced in FLAGS once the list is whole, before a
/// FETCH shows it.
#[tokio::test]
async fn a_large_folder_is_answered_before_its_list_is_whole() {
    let mut a = start(20).await;
    a.login("mario").await;
    a.cmd("s", "SELECT prot/INBOX").await;
    assert!(a.cmd("f", "STORE 1:5 +FLAGS.SILENT (\\Seen)").await.contains("f OK"));
    assert!(a.cmd("k", "STORE 3 +FLAGS.SILENT ($Vecchio)").await.contains("k OK"));
    assert!(a.cmd("u", "UNSELECT").await.contains("u OK"));
    // The list nobody holds any more: the next SELECT reads it anew.
    let mut b = a.another().await;
    b.login("mario").await;
    let r = b.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.contains("* 20 EXISTS") && r.contains("[UNSEEN 6]") && r.contains("* 0 RECENT"), "{r}");
    assert!(!r.contains("$Vecchio"), "only the newest messages' keywords so far: {r}");
    let r = b.cmd("t", "FETCH 18:* (UID FLAGS)").await;
    assert!(r.contains("* 18 FETCH (UID 18 FLAGS ())") && r.contains("* 20 FETCH (UID 20 FLAGS ())"), "{r}");
    assert!(!r.contains("* 17 FETCH"), "{r}");
    // Announced after that FETCH if the list was whole by then, else
    // before this one.
    let r = r + &b.cmd("v", "FETCH 3 (FLAGS)").await;
    let flags_at = r.find("* FLAGS (").unwrap_or(usize::MAX);
    let fetch_at = r.find("* 3 FETCH").unwrap_or(0);
    assert!(flags_at < fetch_at && r[flags_at..fetch_at].contains("$Vecchio"), "{r}");
    assert!(r.contains("* 3 FETCH (FLAGS ($Vecchio \\Seen))"), "{r}");
    let r = b.cmd("q", "SEARCH UNSEEN").await;
    assert!(r.contains("* SEARCH 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\r\n"), "{r}");
    // Another user has seen nothing: all unseen, from the first.
    let mut c = a.another().await;
    c.login("anna").await;
    let r = c.cmd("s", "SELECT prot/INBOX").await;
    assert!(r.contains("* 20 EXISTS") && r.contains("[UNSEEN 1]") && r.contains("* 20 RECENT"), "{r}");
    let r = c.cmd("n", "STATUS prot/Receipts (MESSAGES UNSEEN)").await;
    assert!(r.contains("n OK"), "{r}");
}
