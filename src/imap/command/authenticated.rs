//! Authenticated (and selected): SELECT/EXAMINE, LIST/LSUB, STATUS,
//! APPEND, NAMESPACE, ENABLE, the QUOTA commands, SUBSCRIBE, and the
//! folder commands the fixed PEC tree refuses.

use chrono::{DateTime, Utc};
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::core::{QuotedChar, Tag, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{Code, Data, Status, StatusKind};
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::super::io::Io;
use super::super::respond::*;
use super::super::view::{self, is_pec_keyword, View, PEC_KEYWORDS};
use super::{Allowed, Authed, Conn, Selected, Transition};
use crate::auth::Right;
use crate::handling;
use crate::store::{BlobRef, Change, Event as StoreEvent};

/// The handling keywords FLAGS names in INBOX and the handling views.
const HANDLING_KEYWORDS: [&str; 5] = [
    handling::KW_NEW,
    handling::KW_ASSIGNED,
    handling::KW_TAKEN,
    handling::KW_DONE,
    handling::KW_OVERDUE,
];

/// Commands of the authenticated state (also valid when a folder is
/// selected). `allowed`: what the permission table granted, for the
/// commands it covers (APPEND).
pub async fn handle(
    conn: &Conn,
    user: &Authed,
    io: &mut Io,
    tag: Tag<'static>,
    body: CommandBody<'static>,
    allowed: Option<Allowed>,
) -> Transition {
    let view = &user.view;
    match body {
        CommandBody::StartTLS | CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
            io.status(bad(tag, "already authenticated"))
        }
        CommandBody::Enable { .. } => {
            io.data(Data::Enabled { capabilities: vec![] });
            io.status(ok(tag, "ENABLE done"));
        }
        CommandBody::Namespace => {
            let personal = vec![Namespace::new(istr(""), QuotedChar::try_from('/').ok())];
            io.data(Data::Namespace { personal, other: vec![], shared: vec![] });
            io.status(ok(tag, "NAMESPACE done"));
        }
        CommandBody::Select { mailbox, .. } => return select(conn, user, io, tag, &mailbox, true).await,
        CommandBody::Examine { mailbox, .. } => return select(conn, user, io, tag, &mailbox, false).await,
        CommandBody::Create { mailbox } => super::folders::create(conn, user, io, tag, mailbox_name(&mailbox), allowed).await,
        CommandBody::Delete { mailbox } => super::folders::delete(conn, user, io, tag, mailbox_name(&mailbox), allowed).await,
        CommandBody::Rename { from, to } => {
            super::folders::rename(conn, user, io, tag, mailbox_name(&from), mailbox_name(&to), allowed).await
        }
        CommandBody::GetQuotaRoot { mailbox } => match view.resolve(&mailbox_name(&mailbox)) {
            Err(_) => io.status(no(tag, "no such folder")),
            Ok(f) => {
                let limited = conn.ctx.cfg.quota_kib.is_some();
                io.data(Data::QuotaRoot {
                    mailbox: mbox(&f.name),
                    roots: if limited { vec![istr_a(&f.mailbox)] } else { vec![] },
                });
                if limited {
                    quota(conn, io, view, &f.mailbox);
                }
                io.status(ok(tag, "GETQUOTAROOT done"));
            }
        },
        CommandBody::GetQuota { root } => {
            let root = String::from_utf8_lossy(root.as_ref()).into_owned();
            if conn.ctx.cfg.quota_kib.is_some() && view.is_parent(&root) {
                quota(conn, io, view, &root);
                io.status(ok(tag, "GETQUOTA done"));
            } else {
                io.status(no_code(tag, "NONEXISTENT", "no such quota root"));
            }
        }
        CommandBody::SetQuota { .. } => {
            io.status(noperm(tag, "the archive's quota is set in the gateway's configuration"))
        }
        CommandBody::Subscribe { mailbox } | CommandBody::Unsubscribe { mailbox } => {
            match view.resolve(&mailbox_name(&mailbox)) {
                Ok(_) => io.status(ok(tag, "done (every folder is subscribed)")),
                Err(_) => io.status(no(tag, "no such folder")),
            }
        }
        CommandBody::List { reference, mailbox_wildcard } => list(io, tag, view, &reference, &mailbox_wildcard, false),
        CommandBody::Lsub { reference, mailbox_wildcard } => list(io, tag, view, &reference, &mailbox_wildcard, true),
        CommandBody::Status { mailbox, item_names } => status(io, tag, view, &mailbox, &item_names),
        body @ CommandBody::Append { .. } => {
            let st = append_command(conn, user, tag, body, allowed).await;
            io.status(st);
        }
        CommandBody::Unselect | CommandBody::Close => io.status(bad(tag, "no folder selected")),
        other => io.status(bad(tag, &format!("{} needs a selected folder; SELECT one first", other.name()))),
    }
    Transition::None
}

/// APPEND's tagged answer (the caller writes it, after telling a client
/// that has the target selected about the new message).
pub async fn append_command(
    conn: &Conn,
    user: &Authed,
    tag: Tag<'static>,
    body: CommandBody<'static>,
    allowed: Option<Allowed>,
) -> Status<'static> {
    let CommandBody::Append { flags, date, message, .. } = body else {
        return bad(tag, "not an APPEND");
    };
    let Some(allowed) = allowed else {
        tracing::error!("APPEND reached its handler without a permission check");
        return no_code(tag, "SERVERBUG", "permission not checked; refused");
    };
    let bytes = match message {
        LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
        LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
    };
    let date = date.map(|d| d.as_ref().with_timezone(&Utc));
    append(conn, user, tag, allowed, &flags, date, bytes).await
}

/// A changing command reached its handler without the permission table's
/// answer: a bug, refused rather than done unchecked.
pub fn refuse_unchecked(io: &mut Io, tag: Tag<'static>) -> Transition {
    tracing::error!("a state-changing IMAP command reached its handler without a permission check");
    io.status(no_code(tag, "SERVERBUG", "permission not checked; refused"));
    Transition::None
}

async fn select(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, mailbox: &Mailbox<'_>, rw: bool) -> Transition {
    let view = &user.view;
    let folder = match view.resolve(&mailbox_name(mailbox)) {
        Ok(f) => f,
        Err(_) => {
            io.status(no(tag, "no such folder"));
            return Transition::Unselect;
        }
    };
    // A store folder nothing was filed in yet is created now, so that the
    // UIDVALIDITY this SELECT reports is the one it keeps (issue 22 item 8).
    let missing = match folder.store_folder.as_deref() {
        // A category exists from its CREATE (one deleted meanwhile is
        // not made again here).
        Some(_) if folder.category => None,
        Some(sf) => match conn.ctx.store.folder(&folder.mailbox, sf) {
            Ok(st) => st.is_none().then_some(sf),
            Err(e) => {
                io.status(serverbug(tag, &e));
                return Transition::Unselect;
            }
        },
        None => None,
    };
    let a = user.audit(conn, if rw { "select" } else { "examine" }).mailbox(&folder.mailbox).folder(folder.audit_name());
    let recorded = match missing {
        Some(sf) => {
            let ch = Change::EnsureFolder { mailbox: folder.mailbox.clone(), folder: sf.to_string() };
            conn.ctx.store.commit(a, ch).await.is_ok()
        }
        None => conn.audit_only(a).await,
    };
    if !recorded {
        io.status(unavailable(tag));
        return Transition::Unselect;
    }
    // Read before the snapshot: a change applied meanwhile makes the next
    // refresh look again (see `selected::refresh`).
    let generation = conn.ctx.store.generation();
    // Off the runtime's workers: a large folder's snapshot takes a while,
    // and other sessions' commands should not wait for it.
    let opened = {
        let (view, folder) = (view.clone(), folder.clone());
        tokio::task::spawn_blocking(move || view.open(&folder)).await
    };
    let (counts, snap) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            io.status(serverbug(tag, &e));
            return Transition::Unselect;
        }
        Err(e) => {
            io.status(serverbug(tag, &e));
            return Transition::Unselect;
        }
    };
    // Every reader may store their own \Seen (RFC 4314's `s` right), so a
    // SELECT is read-write wherever something can change; what each STORE
    // may change is the permission table's business.
    let writable = rw && (folder.writable_source().is_some() || folder.trash);
    let (msgs, seen) = snap;
    let may = |r: Right| view.may(&folder, r);
    let system = [Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];
    // FLAGS names the computed $Pec* keywords where they occur;
    // PERMANENTFLAGS does not (clients cannot change them).
    let mut defined = system.to_vec();
    if folder.shows_sent() {
        defined.extend(PEC_KEYWORDS.iter().filter_map(|k| Flag::try_from(*k).ok()));
    }
    let tracks = folder.source() == view::INBOX && !folder.trash;
    if tracks {
        defined.extend(HANDLING_KEYWORDS.iter().filter_map(|k| Flag::try_from(*k).ok()));
    }
    // And every keyword the folder's messages carry (RFC 3501 §7.2.6).
    let mut defined: Vec<String> = defined.iter().map(flag_string).collect();
    let more = Selected::new_keywords(&defined, msgs.iter().map(|(_, m)| m));
    defined.extend(more);
    io.data(Data::Flags(defined.iter().filter_map(|f| Flag::try_from(f.as_str()).ok()).map(|f| imap_next::imap_types::ToStatic::to_static(&f)).collect()));
    let mut perm: Vec<FlagPerm<'static>> = Vec::new();
    if writable && !folder.trash {
        perm.push(FlagPerm::Flag(Flag::Seen));
        if may(Right::Delete) {
            perm.push(FlagPerm::Flag(Flag::Deleted));
        }
        if may(Right::Triage) {
            perm.extend([Flag::Answered, Flag::Flagged, Flag::Draft].into_iter().map(FlagPerm::Flag));
            if tracks {
                // Setting these takes in charge or completes (see STORE).
                perm.extend(
                    [handling::KW_TAKEN, handling::KW_DONE]
                        .iter()
                        .filter_map(|k| Flag::try_from(*k).ok())
                        .map(FlagPerm::Flag),
                );
            }
            perm.push(FlagPerm::Asterisk);
        }
    }
    io.status(untagged(StatusKind::Ok, Some(Code::PermanentFlags(perm)), "flags"));
    io.data(Data::Exists(u32::try_from(msgs.len()).unwrap_or(u32::MAX)));
    // EXAMINE looks without taking: the messages stay recent.
    let recent = match rw {
        true => view.recent_claim(&folder, msgs.last().map_or(0, |m| m.0)),
        false => view.recent_peek(&folder),
    };
    io.data(Data::Recent(u32::try_from(recent.count_in(&msgs)).unwrap_or(u32::MAX)));
    if let Some(pos) = msgs.iter().position(|(u, _)| !seen.contains(*u)) {
        io.status(untagged(StatusKind::Ok, Some(Code::Unseen(nz(pos as u32 + 1))), "first unseen"));
    }
    io.status(untagged(StatusKind::Ok, Some(Code::UidValidity(nz(counts.uidvalidity))), "UIDs valid"));
    io.status(untagged(StatusKind::Ok, Some(Code::UidNext(nz(counts.uidnext))), "next UID"));
    // No HIGHESTMODSEQ: CONDSTORE is not advertised (RFC 7162 §3.1.2.1
    // lets only CONDSTORE servers send it).
    let code = if writable { Code::ReadWrite } else { Code::ReadOnly };
    io.status(tagged(tag, StatusKind::Ok, Some(code), if rw { "SELECT done" } else { "EXAMINE done" }));
    Transition::Select(Box::new(Selected { folder, writable, msgs, seen, defined, recent, generation }))
}

fn list(io: &mut Io, tag: Tag<'static>, view: &View, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) {
    let pat: Vec<u8> = match pattern {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    };
    let refname = match reference {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(_) => mailbox_name(reference),
    };
    if pat.is_empty() {
        if !lsub {
            io.data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter: QuotedChar::try_from('/').ok(),
                mailbox: mbox(""),
            });
        }
        return io.status(ok(tag, "LIST done"));
    }
    let mut full = refname.into_bytes();
    full.extend_from_slice(&pat);
    let full_norm = if full.eq_ignore_ascii_case(b"inbox") { b"INBOX".to_vec() } else { full };
    let tree = view.tree();
    let parents: std::collections::HashSet<&str> =
        tree.iter().filter_map(|e| e.name.rsplit_once(view::DELIMITER).map(|(p, _)| p)).collect();
    for e in &tree {
        if !view::pattern_matches(&full_norm, e.name.as_bytes()) {
            continue;
        }
        let mut items = Vec::new();
        match &e.folder {
            None => {
                items.push(FlagNameAttribute::Noselect);
                items.extend(attr("HasChildren"));
            }
            Some(f) => {
                items.extend(attr(if parents.contains(e.name.as_str()) { "HasChildren" } else { "HasNoChildren" }));
                if let Some(su) = f.special_use {
                    items.extend(attr(su));
                }
            }
        }
        let (delimiter, mailbox) = (QuotedChar::try_from('/').ok(), mbox(&e.name));
        io.data(if lsub {
            Data::Lsub { items, delimiter, mailbox }
        } else {
            Data::List { items, delimiter, mailbox }
        });
    }
    io.status(ok(tag, if lsub { "LSUB done" } else { "LIST done" }));
}

/// `* QUOTA root (STORAGE used limit)` for PEC mailbox `root`: its
/// archive's size in KiB (rounded up) against `imap.quota_kib`.
fn quota(conn: &Conn, io: &mut Io, view: &View, root: &str) {
    let Some(limit) = conn.ctx.cfg.quota_kib else { return };
    let used = match view.store.mailbox_totals(root) {
        Ok((_, bytes)) => bytes.div_ceil(1024),
        Err(e) => {
            tracing::error!(error = %e, mailbox = root, "archive size for QUOTA");
            return;
        }
    };
    if let Ok(quotas) = Vec1::try_from(vec![QuotaGet::new(Resource::Storage, used, limit)]) {
        io.data(Data::Quota { root: istr_a(root), quotas });
    }
}

fn status(io: &mut Io, tag: Tag<'static>, view: &View, mailbox: &Mailbox<'_>, names: &[StatusDataItemName]) {
    let folder = match view.resolve(&mailbox_name(mailbox)) {
        Ok(f) => f,
        Err(_) => return io.status(no(tag, "no such folder")),
    };
    let (c, snap) = match view.open(&folder) {
        Ok(c) => c,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    let recent = u32::try_from(view.recent_peek(&folder).count_in(&snap.0)).unwrap_or(u32::MAX);
    let items: Vec<StatusDataItem> = names
        .iter()
        .filter_map(|n| match n {
            StatusDataItemName::Messages => Some(StatusDataItem::Messages(c.exists)),
            StatusDataItemName::Recent => Some(StatusDataItem::Recent(recent)),
            StatusDataItemName::UidNext => Some(StatusDataItem::UidNext(nz(c.uidnext))),
            StatusDataItemName::UidValidity => Some(StatusDataItem::UidValidity(nz(c.uidvalidity))),
            StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(c.unseen)),
            StatusDataItemName::HighestModSeq => Some(StatusDataItem::HighestModSeq(c.highest_modseq)),
            _ => None,
        })
        .collect();
    io.data(Data::Status { mailbox: mbox(&folder.name), items: items.into() });
    io.status(ok(tag, "STATUS done"));
}

/// APPEND, which only a mailbox's `Sent` takes (clients file the copy of
/// what they sent there):
///
/// 1. Bytes (or a Message-ID) pecgate already holds as sent by one of the
///    user's mailboxes: `OK [APPENDUID]` naming that copy, and nothing is
///    added anywhere. Thunderbird files every identity's sent copies into
///    the first `\Sent` folder it lists: without this, legale's archive
///    would hold a "sent" message legale never sent, waiting forever for
///    receipts.
/// 2. Otherwise a new message is accepted only if its `From` is the
///    mailbox's own address (the table checked `send` on it already).
async fn append(
    conn: &Conn,
    user: &Authed,
    tag: Tag<'static>,
    allowed: Allowed,
    flags: &[Flag<'_>],
    date: Option<DateTime<Utc>>,
    bytes: Vec<u8>,
) -> Status<'static> {
    let view = &user.view;
    let Some(folder) = allowed.target().cloned() else {
        return no(tag, "no such folder");
    };
    if folder.category {
        return append_category(conn, user, tag, &folder, flags, date, bytes).await;
    }
    if folder.store_folder.as_deref() != Some(view::SENT) {
        return no_code(tag, "CANNOT", "messages can be appended only to a mailbox's Sent folder or to folders people created");
    }
    let store = &conn.ctx.store;
    let hash = crate::store::blobs::sha256_hex(&bytes);
    let mid = crate::pec::header_message_id(&bytes);
    match view.sent_copy(&hash, mid.as_deref()) {
        Ok(Some((mailbox, uidvalidity, uid))) => {
            let a = user
                .audit(conn, "append")
                .mailbox(&mailbox)
                .folder(view::SENT)
                .uids(vec![uid])
                .outcome(format!("already archived as sent by {mailbox}; nothing added (asked for {})", folder.name));
            if !conn.audit_only(a).await {
                return unavailable(tag);
            }
            return tagged(
                tag,
                StatusKind::Ok,
                Some(Code::AppendUid { uid_validity: nz(uidvalidity), uid: nz(uid) }),
                &format!("APPEND done: {mailbox} sent this message and holds it already"),
            );
        }
        Ok(None) => {}
        Err(e) => return serverbug(tag, &e),
    }
    let own = conn.ctx.mailbox_addresses.get(&folder.mailbox).map(|a| crate::pec::normalize_address(a));
    let from = crate::pec::header_from_address(&bytes).map(|a| crate::pec::normalize_address(&a));
    if own.is_none() || from != own {
        return no_code(
            tag,
            "CANNOT",
            &format!(
                "{}/Sent holds only messages sent from {}; this one is from {}",
                folder.mailbox,
                own.as_deref().unwrap_or("its own address"),
                from.as_deref().unwrap_or("nobody (no From)")
            ),
        );
    }
    let blob: BlobRef = match store.put_blob(bytes).await {
        Ok(b) => b,
        Err(e) => return serverbug(tag, &e),
    };
    let shared: Vec<String> = flags
        .iter()
        .map(flag_string)
        .filter(|f| !f.eq_ignore_ascii_case("\\Seen") && !is_pec_keyword(f))
        .collect();
    let audit = user.audit(conn, "append").mailbox(&folder.mailbox).folder(view::SENT);
    let change = Change::Archive {
        mailbox: folder.mailbox.clone(),
        folder: view::SENT.into(),
        blob,
        internal_date: date.unwrap_or_else(Utc::now),
        flags: shared,
        provider: None,
        pec: None,
        handling: None,
    };
    let committed = match store.commit(audit, change).await {
        Ok(c) => c,
        Err(e) => return serverbug(tag, &e),
    };
    let StoreEvent::Archived { uid, folder: where_, .. } = committed.event else {
        return ok(tag, "APPEND done");
    };
    if flags.iter().any(|f| matches!(f, Flag::Seen)) {
        let ch = Change::SetSeen {
            user: view.user.name.clone(),
            mailbox: folder.mailbox.clone(),
            folder: where_.clone(),
            uids: vec![uid],
            seen: true,
        };
        if let Err(e) = store.commit(user.audit(conn, "store-seen").mailbox(&folder.mailbox).folder(&where_), ch).await {
            return serverbug(tag, &e);
        }
    }
    let uv = store.folder(&folder.mailbox, &where_).ok().flatten().map(|s| s.uidvalidity).unwrap_or(1);
    tagged(tag, StatusKind::Ok, Some(Code::AppendUid { uid_validity: nz(uv), uid: nz(uid) }), "APPEND done")
}

/// APPEND into a category: new bytes are archived there (filed there);
/// bytes the mailbox holds already become a message of their own in the
/// category, sharing the archived copy (each APPEND makes a message, RFC
/// 3501 §6.3.11).
async fn append_category(
    conn: &Conn,
    user: &Authed,
    tag: Tag<'static>,
    folder: &view::Folder,
    flags: &[Flag<'_>],
    date: Option<DateTime<Utc>>,
    bytes: Vec<u8>,
) -> Status<'static> {
    let store = &conn.ctx.store;
    let sf = folder.source().to_string();
    let mb = folder.mailbox.clone();
    let shared: Vec<String> = flags
        .iter()
        .map(flag_string)
        .filter(|f| !f.eq_ignore_ascii_case("\\Seen") && !is_pec_keyword(f))
        .collect();
    let internal_date = date.unwrap_or_else(Utc::now);
    let hash = crate::store::blobs::sha256_hex(&bytes);
    let held = match store.find_hash(&mb, &hash) {
        Ok(h) => h.is_some(),
        Err(e) => return serverbug(tag, &e),
    };
    let audit = user.audit(conn, "append").mailbox(&mb).folder(folder.audit_name());
    let change = if held {
        let size = bytes.len() as u64;
        Change::Label { mailbox: mb.clone(), folder: sf.clone(), hash, size, internal_date, flags: shared }
    } else {
        let blob: BlobRef = match store.put_blob(bytes).await {
            Ok(b) => b,
            Err(e) => return serverbug(tag, &e),
        };
        Change::Archive { mailbox: mb.clone(), folder: sf.clone(), blob, internal_date, flags: shared, provider: None, pec: None, handling: None }
    };
    let uid = match store.commit(audit, change).await {
        Ok(c) => match c.event {
            StoreEvent::Archived { uid, duplicate: false, .. } | StoreEvent::Labeled { uid, .. } => uid,
            _ => return no_code(tag, "CANNOT", "the archive took these bytes elsewhere meanwhile; APPEND again"),
        },
        Err(crate::store::StoreError::Conflict(why)) => return no_code(tag, "TRYCREATE", &why),
        Err(e) => return serverbug(tag, &e),
    };
    if flags.iter().any(|f| matches!(f, Flag::Seen)) {
        let ch = Change::SetSeen { user: user.view.user.name.clone(), mailbox: mb.clone(), folder: sf.clone(), uids: vec![uid], seen: true };
        if let Err(e) = store.commit(user.audit(conn, "store-seen").mailbox(&mb).folder(folder.audit_name()), ch).await {
            return serverbug(tag, &e);
        }
    }
    let uv = store.folder(&mb, &sf).ok().flatten().map(|s| s.uidvalidity).unwrap_or(1);
    tagged(tag, StatusKind::Ok, Some(Code::AppendUid { uid_validity: nz(uv), uid: nz(uid) }), "APPEND done")
}

/// Refresh hint for callers: APPEND may add to the selected folder.
pub fn changes_selected(body: &CommandBody<'_>) -> bool {
    matches!(body, CommandBody::Append { .. })
}

