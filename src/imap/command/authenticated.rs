//! Authenticated (and selected): SELECT/EXAMINE, LIST/LSUB, STATUS,
//! APPEND, NAMESPACE, ENABLE, the QUOTA commands, SUBSCRIBE and
//! UNSUBSCRIBE, and CREATE/DELETE/RENAME (`folders`).

use chrono::{DateTime, Utc};
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::command::SelectParameter;
use imap_next::imap_types::core::{QuotedChar, Tag, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::enable::CapabilityEnable;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{Code, CodeOther, Data, Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::super::extended::{ExtendedList, ListOptions};
use super::super::shared::Entries;

use super::super::io::Io;
use super::super::respond::*;
use super::super::subscriptions::{self, Subscriptions};
use super::super::view::{self, is_pec_keyword, ListEntry, View, PEC_KEYWORDS};
use super::{Allowed, Authed, Conn, Selected, Transition};
use crate::auth::Right;
use crate::handling;
use crate::store::{BlobRef, Change, Event as StoreEvent};

/// The handling keywords FLAGS names in INBOX and the handling views.
const HANDLING_KEYWORDS: [&str; 5] =
    [handling::KW_NEW, handling::KW_ASSIGNED, handling::KW_TAKEN, handling::KW_DONE, handling::KW_OVERDUE];

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
        CommandBody::Enable { capabilities } => {
            // RFC 5161: only what was not on yet is listed as enabled.
            let mut now_on = Vec::new();
            for c in capabilities.as_ref() {
                match c.to_string().to_ascii_uppercase().as_str() {
                    "CONDSTORE" if !user.enabled.condstore() => {
                        user.enabled.set_condstore();
                        now_on.push(CapabilityEnable::CondStore);
                    }
                    "QRESYNC" if !user.enabled.qresync() => {
                        user.enabled.set_qresync();
                        now_on.extend(CapabilityEnable::try_from("QRESYNC").ok());
                    }
                    _ => {}
                }
            }
            io.data(Data::Enabled { capabilities: now_on });
            io.status(ok(tag, "ENABLE done"));
        }
        CommandBody::Namespace => {
            let personal = vec![Namespace::new(istr(""), QuotedChar::try_from('/').ok())];
            io.data(Data::Namespace { personal, other: vec![], shared: vec![] });
            io.status(ok(tag, "NAMESPACE done"));
        }
        CommandBody::Select { mailbox, parameters } => {
            return select(conn, user, io, tag, &mailbox, true, &parameters).await
        }
        CommandBody::Examine { mailbox, parameters } => {
            return select(conn, user, io, tag, &mailbox, false, &parameters).await
        }
        CommandBody::Create { mailbox } => {
            super::folders::create(conn, user, io, tag, mailbox_name(&mailbox), allowed).await
        }
        CommandBody::Delete { mailbox } => {
            super::folders::delete(conn, user, io, tag, mailbox_name(&mailbox), allowed).await
        }
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
        CommandBody::Subscribe { mailbox } => subscribe(conn, user, io, tag, &mailbox_name(&mailbox), true).await,
        CommandBody::Unsubscribe { mailbox } => subscribe(conn, user, io, tag, &mailbox_name(&mailbox), false).await,
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
        LiteralOrLiteral8::Literal8(l) => super::super::fetch::nul_free(l.data.to_vec()),
    };
    let date = date.map(|d| d.as_ref().with_timezone(&Utc));
    append(conn, user, tag, allowed, &flags, date, bytes).await
}

/// MULTIAPPEND (RFC 3502): several messages in one APPEND, each with its
/// permission already checked. Every message is checked as its APPEND
/// would check it before any is stored, so a refusal stores nothing; the
/// tagged OK names all their UIDs (`APPENDUID uidvalidity 4:6`). Not
/// atomic against the archive failing between two of them (each is its
/// own durable commit): the NO then says how many were stored.
pub async fn multiappend(
    conn: &Conn,
    user: &Authed,
    tag: Tag<'static>,
    items: Vec<(CommandBody<'static>, Allowed)>,
) -> Status<'static> {
    for (body, allowed) in &items {
        let (CommandBody::Append { message, .. }, Some(folder)) = (body, allowed.target()) else {
            return bad(tag, "not an APPEND");
        };
        let bytes = match message {
            LiteralOrLiteral8::Literal(l) => l.data(),
            LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
        };
        if let Some(why) = append_refusal(conn, folder, bytes) {
            // A copy another mailbox already sent is answered with its UID
            // there (see `append`), whoever it is from.
            let hash = crate::store::blobs::sha256_hex(bytes);
            let mid = crate::pec::header_message_id(bytes);
            if !matches!(user.view.sent_copy(&hash, mid.as_deref()), Ok(Some(_))) {
                return no_code(tag, "CANNOT", &format!("{why} (nothing of this MULTIAPPEND was stored)"));
            }
        }
    }
    let (total, mut uids, mut uidvalidity) = (items.len(), Vec::new(), None);
    for (body, allowed) in items {
        let st = append_command(conn, user, tag.clone(), body, Some(allowed)).await;
        match &st {
            Status::Tagged(Tagged {
                body: StatusBody { kind: StatusKind::Ok, code: Some(Code::AppendUid { uid_validity, uid }), .. },
                ..
            }) => {
                uidvalidity = Some(*uid_validity);
                uids.push(uid.get());
            }
            // The first message refused: as its own APPEND answered.
            Status::Tagged(_) if uids.is_empty() => return st,
            Status::Tagged(Tagged { body, .. }) => {
                let text = format!("{} ({} of {total} messages were stored before this one)", body.text, uids.len());
                return tagged(tag, body.kind, body.code.clone(), &text);
            }
            _ => return st,
        }
    }
    match uidvalidity {
        Some(uv) => {
            let code = format!("APPENDUID {uv} {}", ranges(&uids));
            tagged(
                tag,
                StatusKind::Ok,
                Some(Code::Other(CodeOther::unvalidated(code.into_bytes()))),
                "MULTIAPPEND done",
            )
        }
        None => ok(tag, "MULTIAPPEND done"),
    }
}

/// Why an APPEND of `bytes` into `folder` would be refused before storing
/// anything (see [`append`]), or `None`.
fn append_refusal(conn: &Conn, folder: &view::Folder, bytes: &[u8]) -> Option<String> {
    if folder.category {
        return None;
    }
    if folder.store_folder.as_deref() != Some(view::SENT) {
        return Some("messages can be appended only to a mailbox's Sent folder or to folders people created".into());
    }
    let own = conn.ctx.mailbox_addresses.get(&folder.mailbox).map(|a| crate::pec::normalize_address(a));
    let from = crate::pec::header_from_address(bytes).map(|a| crate::pec::normalize_address(&a));
    (own.is_none() || from != own).then(|| {
        format!(
            "{}/Sent holds only messages sent from {}; this one is from {}",
            folder.mailbox,
            own.as_deref().unwrap_or("its own address"),
            from.as_deref().unwrap_or("nobody (no From)")
        )
    })
}

/// A changing command reached its handler without the permission table's
/// answer: a bug, refused rather than done unchecked.
pub fn refuse_unchecked(io: &mut Io, tag: Tag<'static>) -> Transition {
    tracing::error!("a state-changing IMAP command reached its handler without a permission check");
    io.status(no_code(tag, "SERVERBUG", "permission not checked; refused"));
    Transition::None
}

async fn select(
    conn: &Conn,
    user: &Authed,
    io: &mut Io,
    tag: Tag<'static>,
    mailbox: &Mailbox<'_>,
    rw: bool,
    params: &[SelectParameter],
) -> Transition {
    let view = &user.view;
    let mut resync = None;
    for p in params {
        match p {
            SelectParameter::CondStore => user.enabled.set_condstore(),
            // RFC 7162 §3.2.5: QRESYNC without ENABLE QRESYNC is BAD.
            SelectParameter::QResync { .. } if !user.enabled.qresync() => {
                io.status(bad(tag, "ENABLE QRESYNC first"));
                return Transition::Unselect;
            }
            SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                resync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()))
            }
        }
    }
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
    let a =
        user.audit(conn, if rw { "select" } else { "examine" }).mailbox(&folder.mailbox).folder(folder.audit_name());
    let (recorded, audit_after) = match missing {
        Some(sf) => {
            let ch = Change::EnsureFolder { mailbox: folder.mailbox.clone(), folder: sf.to_string() };
            (conn.ctx.store.commit(a, ch).await.is_ok(), None)
        }
        // Opening a folder shows counts and flags, no content: its record
        // takes its place in the chain once the answer is out, before the
        // session's next command, without waiting for the disk (a body
        // read waits, and with it everything before it). Queued before
        // the answer, it woke the journal's writer, whose work then shared
        // the cores with this answer. A store that takes no records
        // refuses the SELECT as before.
        None => (conn.ctx.store.failure().is_none(), Some(a)),
    };
    if !recorded {
        io.status(unavailable(tag));
        return Transition::Unselect;
    }
    // Read before the snapshot: a change applied meanwhile makes the next
    // refresh look again (see `selected::refresh`).
    let generation = conn.ctx.store.generation();
    // Off the runtime's workers: a large folder's snapshot takes a while,
    // and other sessions' commands should not wait for it. One answered
    // from its last entries takes a tenth of a millisecond, less than
    // moving off the worker does.
    let opened = match view.opens_lazily(&folder) {
        Ok(true) => guarded(|| view.open_with_facts(&folder)),
        _ => {
            let (view, folder) = (view.clone(), folder.clone());
            blocking(move || view.open_with_facts(&folder)).await
        }
    };
    let (counts, snap, facts) = match opened {
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
    let more = super::super::shared::new_keywords(&defined, facts.keywords.iter());
    defined.extend(more);
    io.data(Data::Flags(
        defined
            .iter()
            .filter_map(|f| Flag::try_from(f.as_str()).ok())
            .map(|f| imap_next::imap_types::ToStatic::to_static(&f))
            .collect(),
    ));
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
    if let Some(pos) = facts.first_unseen {
        io.status(untagged(StatusKind::Ok, Some(Code::Unseen(nz(pos as u32 + 1))), "first unseen"));
    }
    io.status(untagged(StatusKind::Ok, Some(Code::UidValidity(nz(counts.uidvalidity))), "UIDs valid"));
    io.status(untagged(StatusKind::Ok, Some(Code::UidNext(nz(counts.uidnext))), "next UID"));
    let modseq = counts.highest_modseq != view::NOMODSEQ;
    match modseq {
        true => io.status(untagged(StatusKind::Ok, Some(Code::HighestModSeq(nz64(counts.highest_modseq))), "MODSEQs")),
        false => io.status(untagged(StatusKind::Ok, Some(Code::NoModSeq), "a virtual folder keeps no MODSEQs")),
    }
    let keywords_pending = facts.partial;
    let (list, for_facts) = (msgs.clone(), seen.clone());
    let sel = Selected {
        folder,
        writable,
        msgs,
        seen,
        defined,
        keywords_pending,
        recent,
        generation,
        modseq,
        contexts: Vec::new(),
    };
    if let Some((_, since, known)) = resync.filter(|r| modseq && r.0 == counts.uidvalidity) {
        quick_resync(&sel, io, since, known.as_ref(), counts.uidnext);
    }
    let code = if writable { Code::ReadWrite } else { Code::ReadOnly };
    io.status(tagged(tag, StatusKind::Ok, Some(code), if rw { "SELECT done" } else { "EXAMINE done" }));
    if let Some(a) = audit_after {
        // A failed write shows again at the session's next one.
        let _ = io.drain().await;
        conn.audit_soon(a);
    }
    if !list.is_whole() {
        // A large folder's list is read on from here, once the answer is
        // out (the read competes for the cores), then its facts for the next
        // SELECT (see `shared::Entries`). A failed write shows again at
        // the session's next one.
        let _ = io.drain().await;
        let metas = view.metas.clone();
        list.read_in_background(move |list| drop(metas.facts(list, &for_facts)));
    }
    Transition::Select(Box::new(sel))
}

/// Run `f`, which may block for a while, without holding up the other
/// sessions: in place on a multi-threaded runtime (its worker's other
/// tasks move to another thread; no hand-over and wake-up to wait for),
/// else on the blocking pool.
/// A panic in `f` is an error, as from a task.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| guarded(f)),
        _ => tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string()),
    }
}

/// `f`, with a panic in it an error (as from a task) rather than the end of
/// the session.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| "a panic reading the folder".to_string())
}

/// SELECT (QRESYNC ...) with the folder's UIDVALIDITY unchanged (RFC 7162
/// §3.2.5): the UIDs the client may hold that are gone, as VANISHED
/// (EARLIER), then the flags of every message changed after its MODSEQ.
/// pecgate does not keep when each message left a folder, so every UID
/// below UIDNEXT that is gone is listed (of those the client names, if it
/// names some), which the RFC allows: the client drops what it does not
/// hold.
fn quick_resync(sel: &Selected, io: &mut Io, since: u64, known: Option<&SequenceSet>, uidnext: u32) {
    let last = uidnext.saturating_sub(1);
    let named = |u: u32| known.is_none_or(|k| super::super::search::in_set(k, u, last));
    vanished_earlier(io, &sel.msgs, last, named);
    for (i, (uid, m)) in sel.msgs.iter().enumerate() {
        if m.modseq > since && named(*uid) {
            let (seen, recent) = (sel.seen.contains(*uid), sel.recent.contains(*uid));
            flags_update(io, i, *uid, m, seen, recent, Some(m.modseq));
        }
    }
}

/// `* VANISHED (EARLIER)` of the UIDs up to `last` (that `named` keeps)
/// which `msgs` no longer holds.
pub fn vanished_earlier(io: &mut Io, msgs: &Entries, last: u32, named: impl Fn(u32) -> bool) {
    let mut gone = Vec::new();
    let mut next = 1u32;
    for &(uid, _) in msgs.iter().take_while(|(u, _)| *u <= last) {
        gone.extend((next..uid).filter(|u| named(*u)));
        next = uid.saturating_add(1);
    }
    if next <= last {
        gone.extend((next..=last).filter(|u| named(*u)));
    }
    if let Some(uids) = sequence_set(gone.into_iter()) {
        io.data(Data::Vanished { earlier: true, known_uids: uids });
    }
}

/// SUBSCRIBE (`on`) or UNSUBSCRIBE `name`: the user's own choice, a
/// journal record (see [`subscriptions`]). SUBSCRIBE takes the names the
/// user has (a folder, or a mailbox's parent), which RFC 3501 §6.3.6 lets
/// a server require; UNSUBSCRIBE any subscribed name, a deleted folder's
/// too. Asking for what already is changes nothing and records nothing.
async fn subscribe(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, name: &str, on: bool) {
    let view = &user.view;
    let name = view::normalize(name);
    if on && view.resolve(&name).is_err() && !view.is_parent(&name) {
        return io.status(no_code(tag, "NONEXISTENT", "no such folder"));
    }
    let done = if on { "SUBSCRIBE done" } else { "UNSUBSCRIBE done" };
    let subs = match subscriptions_of(view, &view.tree()) {
        Ok(s) => s,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    if subs.is_subscribed(&name) == on {
        let already = if on { "subscribed already" } else { "not subscribed" };
        return io.status(ok(tag, &format!("{done} ({already}; nothing changed)")));
    }
    let mut a = user.audit(conn, if on { "subscribe" } else { "unsubscribe" });
    a = match view.mailbox_of(&name) {
        Some(mb) => a.folder(&name[mb.len() + 1..]).mailbox(&mb),
        None => a.folder(&name),
    };
    let ch = Change::Subscribe { user: view.user.name.clone(), name, subscribed: on };
    match conn.ctx.store.commit(a, ch).await {
        Ok(_) => io.status(ok(tag, done)),
        Err(e) => io.status(serverbug(tag, &e)),
    }
}

/// The user's subscriptions over the folders of `tree`.
fn subscriptions_of(view: &View, tree: &[ListEntry]) -> Result<Subscriptions, crate::store::StoreError> {
    Ok(Subscriptions::new(tree, view.store.subscriptions(&view.user.name)?))
}

fn list(io: &mut Io, tag: Tag<'static>, view: &View, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) {
    if let Err(e) = list_names(io, view, &[(reference, pattern)], lsub, &ListOptions::default()) {
        return io.status(serverbug(tag, &e));
    }
    io.status(ok(tag, if lsub { "LSUB done" } else { "LIST done" }));
}

/// An extended LIST (RFC 5258, 5819): several patterns, `\Subscribed`,
/// only the special-use folders, a STATUS after each selectable name.
pub fn list_extended(io: &mut Io, tag: Tag<'static>, view: &View, ext: &ExtendedList) {
    let pats: Vec<(&Mailbox<'_>, &ListMailbox<'_>)> = ext
        .lists
        .iter()
        .filter_map(|c| match &c.body {
            CommandBody::List { reference, mailbox_wildcard } => Some((reference, mailbox_wildcard)),
            _ => None,
        })
        .collect();
    if let Err(e) = list_names(io, view, &pats, false, &ext.options) {
        return io.status(serverbug(tag, &e));
    }
    io.status(ok(tag, "LIST done"));
}

/// The LIST (or LSUB) responses of the names that match any of `pats`
/// (reference, pattern), each once, in the tree's order. LSUB and `LIST
/// (SUBSCRIBED)` list subscribed names (see [`subscriptions::lines`]),
/// the others the user's folders.
fn list_names(
    io: &mut Io,
    view: &View,
    pats: &[(&Mailbox<'_>, &ListMailbox<'_>)],
    lsub: bool,
    opts: &ListOptions,
) -> Result<(), crate::store::StoreError> {
    let mut fulls: Vec<Vec<u8>> = Vec::new();
    for (reference, pattern) in pats {
        let pat: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        if pat.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            if !lsub && pats.len() == 1 {
                io.data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: QuotedChar::try_from('/').ok(),
                    mailbox: mbox(""),
                });
            }
            continue;
        }
        let mut full = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(_) => mailbox_name(reference),
        }
        .into_bytes();
        full.extend_from_slice(&pat);
        fulls.push(if full.eq_ignore_ascii_case(b"inbox") { b"INBOX".to_vec() } else { full });
    }
    if fulls.is_empty() {
        return Ok(());
    }
    let tree = view.tree();
    let parents: std::collections::HashSet<&str> =
        tree.iter().filter_map(|e| e.name.rsplit_once(view::DELIMITER).map(|(p, _)| p)).collect();
    let matches = |name: &str| fulls.iter().any(|f| view::pattern_matches(f, name.as_bytes()));
    let subs = match lsub || opts.subscribed {
        true => subscriptions_of(view, &tree)?,
        false => Subscriptions::default(),
    };
    let special = |e: Option<&ListEntry>| e.and_then(|e| e.folder.as_ref()).is_some_and(|f| f.special_use.is_some());
    if lsub || opts.select_subscribed {
        // RFC 3501 §6.3.9: LSUB's `%` shows an unsubscribed parent of a
        // subscribed inferior as `\Noselect`; RFC 5258: RECURSIVEMATCH.
        let recursive = if lsub { fulls.iter().any(|f| f.contains(&b'%')) } else { opts.recursive };
        let entries: std::collections::HashMap<&str, &ListEntry> = tree.iter().map(|e| (e.name.as_str(), e)).collect();
        for l in subscriptions::lines(&tree, &subs, &matches, recursive) {
            let e = entries.get(l.name.as_str()).copied();
            if opts.special_use_only && !special(e) {
                continue;
            }
            // LSUB: `\Noselect` for a name listed for its inferior or one
            // that cannot be selected; LIST: the folder's attributes, or
            // `\NonExistent` for a name without one (RFC 5258 §3.4).
            let mut items = match (lsub, e) {
                (true, _) if !l.subscribed || e.is_some_and(|e| e.folder.is_none()) => {
                    vec![FlagNameAttribute::Noselect]
                }
                (true, _) => vec![],
                (false, Some(e)) => attributes(e, &parents),
                (false, None) => attr("NonExistent").into_iter().collect(),
            };
            if !lsub && l.subscribed {
                items.extend(attr("Subscribed"));
            }
            list_line(io, lsub, items, &l.name, !lsub && l.childinfo);
            if let (false, Some(names), Some(f)) = (lsub, &opts.status, e.and_then(|e| e.folder.as_ref())) {
                list_status(io, view, f, names);
            }
        }
        return Ok(());
    }
    for e in &tree {
        if !matches(&e.name) || (opts.special_use_only && !special(Some(e))) {
            continue;
        }
        let mut items = attributes(e, &parents);
        if opts.subscribed && subs.is_subscribed(&e.name) {
            items.extend(attr("Subscribed"));
        }
        list_line(io, false, items, &e.name, false);
        if let (Some(names), Some(f)) = (&opts.status, &e.folder) {
            list_status(io, view, f, names);
        }
    }
    Ok(())
}

/// A folder's LIST attributes: `\Noselect` for a mailbox's parent,
/// children, special use.
fn attributes(e: &ListEntry, parents: &std::collections::HashSet<&str>) -> Vec<FlagNameAttribute<'static>> {
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
    items
}

/// `* LIST` (or `* LSUB`) of `name`; `childinfo`: with RFC 5258's
/// `("CHILDINFO" ("SUBSCRIBED"))`, which imap-types cannot say.
fn list_line(io: &mut Io, lsub: bool, items: Vec<FlagNameAttribute<'static>>, name: &str, childinfo: bool) {
    use imap_codec::encode::Encoder;
    let (delimiter, mailbox) = (QuotedChar::try_from('/').ok(), mbox(name));
    let data = if lsub { Data::Lsub { items, delimiter, mailbox } } else { Data::List { items, delimiter, mailbox } };
    if !childinfo {
        return io.data(data);
    }
    let mut line =
        imap_codec::ResponseCodec::default().encode(&imap_next::imap_types::response::Response::Data(data)).dump();
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
    }
    line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
    io.raw(&line);
}

/// LIST-STATUS (RFC 5819): `* STATUS` after a selectable name.
fn list_status(io: &mut Io, view: &View, f: &view::Folder, names: &[StatusDataItemName]) {
    match status_data(view, f, names) {
        Ok(d) => io.data(d),
        Err(e) => tracing::warn!(error = %e, folder = %f.name, "LIST-STATUS: no STATUS for this folder"),
    }
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
    match status_data(view, &folder, names) {
        Ok(d) => io.data(d),
        Err(e) => return io.status(serverbug(tag, &e)),
    }
    io.status(ok(tag, "STATUS done"));
}

/// `* STATUS folder (items)`.
fn status_data(
    view: &View,
    folder: &view::Folder,
    names: &[StatusDataItemName],
) -> Result<Data<'static>, view::ViewError> {
    let (c, snap) = view.open(folder)?;
    let recent = u32::try_from(view.recent_peek(folder).count_in(&snap.0)).unwrap_or(u32::MAX);
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
    Ok(Data::Status { mailbox: mbox(&folder.name), items: items.into() })
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
        return no_code(
            tag,
            "CANNOT",
            "messages can be appended only to a mailbox's Sent folder or to folders people created",
        );
    }
    let store = &conn.ctx.store;
    let hash = crate::store::blobs::sha256_hex(&bytes);
    let mid = crate::pec::header_message_id(&bytes);
    match view.sent_copy(&hash, mid.as_deref()) {
        Ok(Some((mailbox, uidvalidity, uid))) => {
            let a =
                user.audit(conn, "append").mailbox(&mailbox).folder(view::SENT).uids(vec![uid]).outcome(format!(
                    "already archived as sent by {mailbox}; nothing added (asked for {})",
                    folder.name
                ));
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
    if let Some(why) = append_refusal(conn, &folder, &bytes) {
        return no_code(tag, "CANNOT", &why);
    }
    let blob: BlobRef = match store.put_blob(bytes).await {
        Ok(b) => b,
        Err(e) => return serverbug(tag, &e),
    };
    let shared: Vec<String> =
        flags.iter().map(flag_string).filter(|f| !f.eq_ignore_ascii_case("\\Seen") && !is_pec_keyword(f)).collect();
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
        if let Err(e) = store.commit(user.audit(conn, "store-seen").mailbox(&folder.mailbox).folder(&where_), ch).await
        {
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
    let shared: Vec<String> =
        flags.iter().map(flag_string).filter(|f| !f.eq_ignore_ascii_case("\\Seen") && !is_pec_keyword(f)).collect();
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
        Change::Archive {
            mailbox: mb.clone(),
            folder: sf.clone(),
            blob,
            internal_date,
            flags: shared,
            provider: None,
            pec: None,
            handling: None,
        }
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
        let ch = Change::SetSeen {
            user: user.view.user.name.clone(),
            mailbox: mb.clone(),
            folder: sf.clone(),
            uids: vec![uid],
            seen: true,
        };
        if let Err(e) = store.commit(user.audit(conn, "store-seen").mailbox(&mb).folder(folder.audit_name()), ch).await
        {
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
