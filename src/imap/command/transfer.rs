//! COPY and MOVE: between folders of a mailbox, across mailboxes, into a
//! handling view (a transition), and into or out of Trash (hide, unhide).

use std::collections::{BTreeMap, HashMap, HashSet};

use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::{Code, Status, StatusKind};
use imap_next::imap_types::sequence::SequenceSet;

use super::super::io::Io;
use super::super::respond::*;
use super::super::view::{self, is_pec_keyword, Folder};
use super::selected::{refresh, split_filed, targets};
use super::{Allowed, Authed, Conn, Selected};
use crate::handling::{Refusal, Transition, ViewKind};
use super::super::shared::Msg;
use crate::store::{BlobRef, Change, Event as StoreEvent};

fn cannot(tag: Tag<'static>, t: &str) -> Status<'static> {
    no_code(tag, "CANNOT", t)
}

/// COPY (and UID COPY), conservatively:
///
/// * Within one PEC mailbox: `NO [CANNOT]`. The archive holds each
///   message once per mailbox (content-addressed evidence, de-duplicated
///   by hash), so a second folder of the same mailbox cannot hold it
///   too; refiling is MOVE.
/// * Into another PEC mailbox: allowed into the folder of the same kind
///   (INBOX → INBOX, Receipts → Receipts, Anomalies → Anomalies) to a
///   user holding `triage` on the target, e.g. handing a received PEC to
///   another office with its signed envelope intact. The copy shares the
///   blob and keeps shared flags and PEC metadata; the audit record names
///   the source mailbox, folder and UIDs, the archived event the target.
///   A message the target already holds is not filed twice (COPYUID
///   names the UID it has).
/// * Never into `Sent` (a copy would claim the target mailbox sent it
///   and feed its delivery-state reconciliation) nor into a virtual
///   folder, nor across kinds (a receipt in another INBOX would misfile
///   it): `NO [CANNOT]` saying why.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    uid: bool,
) {
    let Some(target) = allowed.target().cloned() else { return io.status(no(tag, "no such folder")) };
    if target.handling.is_some() {
        return drop_into_view(conn, user, sel, io, tag, set, uid, &target, false).await;
    }
    if target.trash {
        return io.status(cannot(tag, "to hide messages, MOVE them into Trash (a copy there would hide nothing)"));
    }
    if sel.folder.trash {
        return io.status(cannot(tag, "messages in Trash are hidden; MOVE them out to show them again"));
    }
    if sel.folder.all {
        return io.status(cannot(tag, "All shows each message where it is filed: select that folder to copy from it"));
    }
    if sel.folder.campaign.is_some() {
        return io.status(cannot(tag, "a campaign's folder shows its notices as rendered; their sent copies are in Sent"));
    }
    if target.category {
        return label(conn, user, sel, io, tag, set, uid, &target).await;
    }
    let targets = targets(sel, set, uid);
    let from = sel.folder.source();
    if target.mailbox == sel.folder.mailbox {
        return io.status(cannot(
            tag,
            "this PEC mailbox already holds these messages: the archive keeps each message once per mailbox; use MOVE to refile",
        ));
    }
    let Some(to) = target.store_folder.as_deref() else {
        return io.status(cannot(tag, "virtual folders cannot hold copied messages"));
    };
    if to == view::SENT {
        return io.status(cannot(tag, "Sent holds only what its own mailbox sent; a copy cannot go there"));
    }
    if to != from {
        return io.status(cannot(
            tag,
            "across PEC mailboxes a message is copied only into the folder of the same kind (INBOX to INBOX, Receipts to Receipts, Anomalies to Anomalies)",
        ));
    }
    let by_uid: HashMap<u32, &Msg> = sel.msgs.iter().map(|(u, m)| (*u, m)).collect();
    let src_mailbox = sel.folder.mailbox.clone();
    let store = &conn.ctx.store;
    let mut src_uids = Vec::new();
    let mut batch = Vec::new();
    for (_, u) in &targets {
        let Some(m) = by_uid.get(u) else { continue };
        src_uids.push(*u);
        let a = user.audit(conn, "copy").mailbox(&src_mailbox).folder(from).uids(sel.source_uids(&[*u]));
        let ch = Change::Archive {
            mailbox: target.mailbox.clone(),
            folder: to.to_string(),
            blob: BlobRef { hash: m.hash.hex(), size: m.size },
            internal_date: m.internal_date,
            flags: m.flags.iter().filter(|f| !is_pec_keyword(f)).cloned().collect(),
            provider: None,
            // Session snapshots carry no PEC metadata: from the index.
            pec: sel
                .source_uids(&[*u])
                .first()
                .and_then(|su| store.message(&src_mailbox, from, *su).ok().flatten())
                .and_then(|x| x.pec),
            handling: None,
        };
        batch.push((a, ch));
    }
    if batch.is_empty() {
        return io.status(ok(tag, "COPY done (no messages)"));
    }
    let committed = match store.commit_batch(batch).await {
        Ok(c) => c,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    let mut pairs = Vec::new();
    for (su, c) in src_uids.iter().zip(&committed) {
        if let StoreEvent::Archived { uid, .. } = &c.event {
            pairs.push((*su, *uid));
        }
    }
    let uv = store.folder(&target.mailbox, to).ok().flatten().map(|s| s.uidvalidity).unwrap_or(1);
    let code = uid_set(pairs.iter().map(|p| p.0))
        .zip(uid_set(pairs.iter().map(|p| p.1)))
        .map(|(source, destination)| Code::CopyUid { uid_validity: nz(uv), source, destination });
    io.status(tagged(tag, StatusKind::Ok, code, "COPY done"));
}

/// MOVE (and UID MOVE) between folders of one mailbox; into a handling
/// view it is that view's transition; into Trash it hides, out of Trash
/// it brings messages back where they were hidden from.
#[allow(clippy::too_many_arguments)]
pub async fn r#move(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    uid: bool,
) {
    let Some(target) = allowed.target().cloned() else { return io.status(no(tag, "no such folder")) };
    if target.handling.is_some() {
        return drop_into_view(conn, user, sel, io, tag, set, uid, &target, true).await;
    }
    if target.mailbox != sel.folder.mailbox {
        return io.status(cannot(tag, "messages move only between folders of one PEC mailbox"));
    }
    if sel.folder.trash {
        return unhide(conn, user, sel, io, tag, allowed, set, uid, &target).await;
    }
    if target.trash {
        return hide(conn, user, sel, io, tag, allowed, set, uid).await;
    }
    if sel.folder.category && !target.category {
        return unfile(conn, user, sel, io, tag, allowed, set, uid, &target).await;
    }
    let (Some(from), Some(to)) = (sel.folder.writable_source().map(str::to_string), target.store_folder.clone()) else {
        return io.status(cannot(tag, "virtual folders cannot hold moved messages"));
    };
    let (from, to) = (from.as_str(), to.as_str());
    if from == to && sel.folder.handling.is_some() {
        return io.status(cannot(
            tag,
            "the messages of a handling view are in INBOX already; to change their handling, move them into To handle, Mine, Offices/<office> or Done",
        ));
    }
    // A MOVE into the folder itself gives the messages new UIDs (RFC 6851).
    let shown: Vec<u32> = targets(sel, set, uid).iter().map(|t| t.1).collect();
    let uids: Vec<u32> = sel.source_uids(&shown);
    if !uids.is_empty() {
        let shown_of: HashMap<u32, u32> = uids.iter().copied().zip(shown.iter().copied()).collect();
        let mb = allowed.mailbox().to_string();
        let ch = Change::Move { mailbox: mb.clone(), from: from.into(), to: to.into(), uids: uids.clone() };
        let a = user.audit(conn, "move").mailbox(&mb).folder(sel.folder.audit_name()).uids(uids);
        let moves = match conn.ctx.store.commit(a, ch).await {
            Ok(c) => match c.event {
                StoreEvent::Moved { moves, .. } => moves,
                _ => vec![],
            },
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        // COPYUID before the EXPUNGEs (RFC 6851 §4.3).
        let uv = conn.ctx.store.folder(&mb, to).ok().flatten().map(|s| s.uidvalidity).unwrap_or(1);
        if let Some((source, destination)) =
            uid_set(moves.iter().map(|m| shown_of.get(&m.0).copied().unwrap_or(m.0))).zip(uid_set(moves.iter().map(|m| m.1)))
        {
            io.status(untagged(StatusKind::Ok, Some(Code::CopyUid { uid_validity: nz(uv), source, destination }), "moved"));
        }
    }
    refresh(user, sel, io, true, &HashSet::new());
    io.status(ok(tag, "MOVE done"));
}

/// COPY into a category of the same PEC mailbox: the messages are
/// labelled there too and stay where they are filed.
#[allow(clippy::too_many_arguments)]
async fn label(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    set: &SequenceSet,
    uid: bool,
    target: &Folder,
) {
    if target.mailbox != sel.folder.mailbox {
        return io.status(cannot(tag, "a folder people created holds messages of its own PEC mailbox only"));
    }
    let Some(to) = target.store_folder.clone() else { return io.status(no(tag, "no such folder")) };
    let from = sel.folder.source().to_string();
    let shown: Vec<u32> = targets(sel, set, uid).iter().map(|t| t.1).collect();
    let uids = sel.source_uids(&shown);
    if uids.is_empty() {
        return io.status(ok(tag, "COPY done (no messages)"));
    }
    // A handling view shows INBOX messages under UIDs of its own.
    let shown_of: HashMap<u32, u32> = uids.iter().copied().zip(shown.iter().copied()).collect();
    let mb = sel.folder.mailbox.clone();
    let ch = Change::Copy { mailbox: mb.clone(), from: from.clone(), to: to.clone(), uids: uids.clone() };
    let a = user.audit(conn, "copy").mailbox(&mb).folder(sel.folder.audit_name()).uids(uids);
    let committed = match conn.ctx.store.commit(a, ch).await {
        Ok(c) => c,
        Err(crate::store::StoreError::Conflict(why)) => return io.status(no_code(tag, "TRYCREATE", &why)),
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    let StoreEvent::Copied { copies, .. } = committed.event else { return io.status(ok(tag, "COPY done")) };
    let uv = conn.ctx.store.folder(&mb, &to).ok().flatten().map(|s| s.uidvalidity).unwrap_or(1);
    let code = uid_set(copies.iter().map(|p| shown_of.get(&p.0).copied().unwrap_or(p.0)))
        .zip(uid_set(copies.iter().map(|p| p.1)))
        .map(|(source, destination)| Code::CopyUid { uid_validity: nz(uv), source, destination });
    io.status(tagged(tag, StatusKind::Ok, code, "COPY done"));
}

/// MOVE from a category to one of the gateway's folders: a label is
/// removed (the message is filed elsewhere already); a message filed in
/// the category moves there.
#[allow(clippy::too_many_arguments)]
async fn unfile(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    uid: bool,
    target: &Folder,
) {
    let Some(to) = target.store_folder.clone() else {
        return io.status(cannot(tag, "virtual folders cannot hold moved messages"));
    };
    let from = sel.folder.source().to_string();
    let uids: Vec<u32> = targets(sel, set, uid).iter().map(|t| t.1).collect();
    let (labels, filed) = match split_filed(conn, sel, &uids) {
        Ok(x) => x,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    let mb = allowed.mailbox().to_string();
    if !labels.is_empty() {
        let ch = Change::Unlabel { mailbox: mb.clone(), folder: from.clone(), uids: labels.clone() };
        if let Err(e) = user.record(conn, "move", &mb, sel.folder.audit_name(), labels, ch).await {
            return io.status(serverbug(tag, &e));
        }
    }
    if !filed.is_empty() {
        let ch = Change::Move { mailbox: mb.clone(), from: from.clone(), to, uids: filed.clone() };
        if let Err(e) = user.record(conn, "move", &mb, sel.folder.audit_name(), filed, ch).await {
            return io.status(serverbug(tag, &e));
        }
    }
    refresh(user, sel, io, true, &HashSet::new());
    io.status(ok(tag, "MOVE done"));
}

/// MOVE into Trash: the messages are hidden from their folder (the
/// original stays in the archive, as after EXPUNGE), audited as a hide.
#[allow(clippy::too_many_arguments)]
async fn hide(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    uid: bool,
) {
    let Some(from) = sel.folder.writable_source().map(str::to_string) else {
        return io.status(cannot(tag, "messages of a virtual folder are hidden from the folder that holds them"));
    };
    let from = from.as_str();
    let mut uids = sel.source_uids(&targets(sel, set, uid).iter().map(|t| t.1).collect::<Vec<_>>());
    if sel.folder.category {
        // Labels go; what the category alone files is hidden.
        let (labels, filed) = match split_filed(conn, sel, &uids) {
            Ok(x) => x,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        if !labels.is_empty() {
            let mb = allowed.mailbox().to_string();
            let ch = Change::Unlabel { mailbox: mb.clone(), folder: from.into(), uids: labels.clone() };
            if let Err(e) = user.record(conn, "hide", &mb, sel.folder.audit_name(), labels, ch).await {
                return io.status(serverbug(tag, &e));
            }
        }
        uids = filed;
    }
    // Hiding needs delete, which the table checked for a MOVE into Trash.
    if !uids.is_empty() {
        let mb = allowed.mailbox().to_string();
        let ch = Change::Hide { mailbox: mb.clone(), folder: from.into(), uids: uids.clone() };
        if let Err(e) = user.record(conn, "hide", &mb, from, uids, ch).await {
            return io.status(serverbug(tag, &e));
        }
    }
    refresh(user, sel, io, true, &HashSet::new());
    io.status(ok(tag, "MOVE done: hidden (the archive keeps the original; move it out of Trash to show it again)"));
}

/// MOVE out of Trash: each message returns, with a new UID, to the folder
/// it was hidden from (whatever the target of the MOVE in its mailbox).
#[allow(clippy::too_many_arguments)]
async fn unhide(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    uid: bool,
    target: &Folder,
) {
    let shown: Vec<u32> = targets(sel, set, uid).iter().map(|t| t.1).collect();
    let mb = allowed.mailbox().to_string();
    let sources = match user.view.trash_sources(&mb, &shown) {
        Ok(s) => s,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    let mut by_folder: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (folder, u) in sources {
        by_folder.entry(folder).or_default().push(u);
    }
    let mut elsewhere = false;
    for folder in by_folder.keys() {
        if !matches!(conn.ctx.store.folder(&mb, folder), Ok(Some(_))) {
            return io.status(cannot(
                tag,
                "some of these messages were filed in a folder that was deleted since; they stay in Trash (the archive keeps them)",
            ));
        }
    }
    for (folder, uids) in by_folder {
        elsewhere |= target.store_folder.as_deref() != Some(folder.as_str());
        let ch = Change::Unhide { mailbox: mb.clone(), folder: folder.clone(), uids: uids.clone() };
        if let Err(e) = user.record(conn, "unhide", &mb, &folder, uids, ch).await {
            return io.status(serverbug(tag, &e));
        }
    }
    refresh(user, sel, io, true, &HashSet::new());
    io.status(ok(
        tag,
        if elsewhere {
            "MOVE done: shown again in the folders they were hidden from"
        } else {
            "MOVE done: shown again"
        },
    ));
}

/// COPY or MOVE into a handling view: the transition the view means
/// (`Mine` takes, `Done` completes, `Offices/<name>` assigns, `To
/// handle` reopens) on INBOX messages of the same mailbox. The messages
/// stay in INBOX; after a MOVE they leave the selected view if they no
/// longer belong there.
#[allow(clippy::too_many_arguments)]
async fn drop_into_view(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    set: &SequenceSet,
    uid: bool,
    target: &Folder,
    is_move: bool,
) {
    let Some(kind) = target.handling.clone() else { return };
    let targets = targets(sel, set, uid);
    if sel.folder.mailbox != target.mailbox || sel.folder.source() != view::INBOX || sel.folder.trash {
        return io.status(cannot(
            tag,
            "only messages of the same PEC mailbox's INBOX (or its handling views) have a handling state",
        ));
    }
    let shown: Vec<u32> = targets.iter().map(|t| t.1).collect();
    let uids = sel.source_uids(&shown);
    let hashes = sel.hashes(&shown);
    if hashes.is_empty() {
        return io.status(ok(tag, "done (no messages)"));
    }
    let t = kind.transition(&user.view.user.name);
    let (folder, mailbox) = (sel.folder.clone(), sel.folder.mailbox.clone());
    if let Err(refusal) = transition(conn, user, &folder, &mailbox, uids, hashes, t).await {
        return io.status(refusal(tag));
    }
    refresh(user, sel, io, is_move, &HashSet::new());
    io.status(ok(tag, &format!("{} done: {}", if is_move { "MOVE" } else { "COPY" }, kind_done(&kind))));
}

/// The tagged answer to give instead of OK.
pub type Refused = Box<dyn FnOnce(Tag<'static>) -> Status<'static> + Send>;

/// Record a handling transition (refused ones are audited too).
pub async fn transition(
    conn: &Conn,
    user: &Authed,
    folder: &Folder,
    mailbox: &str,
    uids: Vec<u32>,
    hashes: Vec<String>,
    t: Transition,
) -> Result<(), Refused> {
    let op = t.action.as_str();
    let a = user.audit(conn, op).mailbox(mailbox).folder(folder.source()).uids(uids);
    let ch = Change::Handle { mailbox: mailbox.to_string(), hashes, transition: t };
    // The store's writer decides, against the state at commit time
    // (two simultaneous takes: one wins, the other is refused here).
    match conn.ctx.store.commit(a.clone(), ch).await {
        Ok(_) => Ok(()),
        Err(crate::store::StoreError::Refused(r)) => {
            let (code, why) = match r {
                Refusal::NotTracked => (
                    "CANNOT",
                    "not all of these messages have a handling state (only certified messages received in INBOX do)".to_string(),
                ),
                r => ("INUSE", r.to_string()),
            };
            conn.audit_only(a.outcome(format!("refused: {why}"))).await;
            Err(Box::new(move |tag| no_code(tag, code, &why)))
        }
        Err(e) => {
            let msg = e.to_string();
            Err(Box::new(move |tag| serverbug(tag, &msg)))
        }
    }
}

fn kind_done(kind: &ViewKind) -> String {
    match kind {
        ViewKind::ToHandle => "reopened".into(),
        ViewKind::Mine => "taken in charge".into(),
        ViewKind::Office(o) => format!("assigned to {o}"),
        ViewKind::Done => "completed".into(),
    }
}
