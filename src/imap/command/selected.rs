//! Selected state: FETCH, STORE, SEARCH, SORT, THREAD, EXPUNGE,
//! CLOSE/UNSELECT, and the refresh that tells the client what changed in
//! the folder (EXPUNGE, EXISTS, FETCH FLAGS) at the moments RFC 3501
//! allows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use imap_next::imap_types::command::{CommandBody, FetchModifier, StoreModifier};
use imap_next::imap_types::core::{Charset, Tag, Vec1};
use imap_next::imap_types::extensions::sort::SortCriterion;
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName};
use imap_next::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_next::imap_types::response::{Code, Data, StatusKind};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;

use super::super::extended::SearchReturn;
use super::super::io::{Io, IoError};
use super::super::respond::*;
use super::super::shared::{Entries, Msg};
use super::super::uidset::UidSet;
use super::super::view::{self, is_pec_keyword};
use super::super::{anatomy, context, search, sort, thread};
use super::{transfer, Allowed, Authed, Conn, Selected, Transition};
use crate::auth::Right;
use crate::handling::{self, Transition as HTransition};
use crate::store::{Change, FlagOp};

/// Messages per FETCH batch (each batch is drained before the next).
const FETCH_BATCH: usize = 16;
/// Bytes of blobs one blocking read of a batch gathers before handing
/// them over (big messages are read a few at a time).
const FETCH_BATCH_BYTES: usize = 8 << 20;

/// Is `body` a command of the selected state (not of the authenticated
/// state, which is valid here too)?
pub fn is_selected_command(body: &CommandBody<'_>) -> bool {
    matches!(
        body,
        CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Search { .. }
            | CommandBody::Sort { .. }
            | CommandBody::Thread { .. }
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
            | CommandBody::Close
            | CommandBody::Unselect
    )
}

pub async fn handle(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    body: CommandBody<'static>,
    allowed: Option<Allowed>,
) -> Result<Transition, IoError> {
    // The table covers every command below but CLOSE (checked only when
    // it may hide) and UNSELECT.
    let needs_check = !matches!(body, CommandBody::Close | CommandBody::Unselect);
    let allowed = match (needs_check, allowed) {
        (false, a) => a,
        (true, Some(a)) => Some(a),
        (true, None) => return Ok(super::authenticated::refuse_unchecked(io, tag)),
    };
    // FETCH of the newest messages needs no more of a large folder's
    // list than is read with SELECT; any other command waits for it here
    // rather than on the runtime's workers.
    let quick = match &body {
        CommandBody::Fetch { sequence_set, uid, .. } => names_known(sel, sequence_set, *uid),
        CommandBody::Unselect => true,
        _ => false,
    };
    if !quick {
        whole(sel).await;
    }
    announce_keywords(user, sel, io);
    match body {
        CommandBody::Close => {
            // With the delete right, \Deleted messages are hidden, silently.
            if let Some(a) = allowed {
                if let Err(e) = hide_deleted(conn, user, sel, &a, None).await.map(|_| ()) {
                    io.status(serverbug(tag, &e));
                    return Ok(Transition::Unselect);
                }
            }
            io.status(ok(tag, "no folder selected now"));
            return Ok(Transition::Unselect);
        }
        CommandBody::Unselect => {
            io.status(ok(tag, "no folder selected now"));
            return Ok(Transition::Unselect);
        }
        CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
            fetch(conn, user, sel, io, tag, &sequence_set, macro_or_item_names, uid, &modifiers).await?
        }
        CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
            if let Some(a) = allowed {
                let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(n)| *n).next();
                if unchanged_since.is_some() && !use_modseq(user, sel, io, &tag) {
                    return Ok(Transition::None);
                }
                let how = StoreHow { kind, response, unchanged_since };
                store(conn, user, sel, io, tag, a, &sequence_set, how, &flags, uid).await
            }
        }
        CommandBody::Search { criteria, uid, .. } => {
            search(conn, user, sel, io, tag, criteria.as_ref(), uid, None).await?
        }
        CommandBody::Sort { sort_criteria, charset, search_criteria, uid } => {
            sort(conn, sel, io, tag, sort_criteria.as_ref(), &charset, search_criteria.as_ref(), uid, None).await
        }
        CommandBody::Thread { algorithm, charset, search_criteria, uid } => {
            thread(conn, sel, io, tag, &algorithm, &charset, search_criteria.as_ref(), uid).await
        }
        CommandBody::Expunge => {
            if let Some(a) = allowed {
                expunge(conn, user, sel, io, tag, a, None).await
            }
        }
        CommandBody::ExpungeUid { sequence_set } => {
            if let Some(a) = allowed {
                expunge(conn, user, sel, io, tag, a, Some(sequence_set)).await
            }
        }
        CommandBody::Copy { sequence_set, uid, .. } => {
            if let Some(a) = allowed {
                transfer::copy(conn, user, sel, io, tag, a, &sequence_set, uid).await
            }
        }
        CommandBody::Move { sequence_set, uid, .. } => {
            if let Some(a) = allowed {
                transfer::r#move(conn, user, sel, io, tag, a, &sequence_set, uid).await
            }
        }
        other => io.status(bad(tag, &format!("{} is not a selected-state command", other.name()))),
    }
    Ok(Transition::None)
}

/// A command that uses a MODSEQ: in a folder without them (RFC 7162
/// §3.1.2.2) it is answered BAD and `false` returned; otherwise CONDSTORE
/// is on from now.
fn use_modseq(user: &Authed, sel: &Selected, io: &mut Io, tag: &Tag<'static>) -> bool {
    if !sel.modseq {
        io.status(bad(tag.clone(), "this folder keeps no MODSEQs (NOMODSEQ): it is a view of other folders"));
        return false;
    }
    enable_condstore(user, sel, io);
    true
}

/// Turn CONDSTORE on for a command that uses a MODSEQ. The first time,
/// the selected folder's HIGHESTMODSEQ is told before anything else (RFC
/// 7162 §3.1: a CONDSTORE enabling command in a folder selected without
/// it), as SELECT (CONDSTORE) would have.
fn enable_condstore(user: &Authed, sel: &Selected, io: &mut Io) {
    if user.enabled.condstore() {
        return;
    }
    user.enabled.set_condstore();
    let (mailbox, folder) = (&sel.folder.mailbox, sel.folder.source());
    let stored = user.view.store.folder(mailbox, folder).ok().flatten().map_or(0, |st| st.highest_modseq);
    let highest = sel.msgs.iter().map(|(_, m)| m.modseq).fold(stored, u64::max);
    io.status(untagged(StatusKind::Ok, Some(Code::HighestModSeq(nz64(highest))), "CONDSTORE on"));
}

/// SELECT named the keywords of the newest messages only (a large
/// folder's list was being read): once it is whole, the others' are
/// named too, before any FETCH shows them (RFC 3501 §7.2.6).
fn announce_keywords(user: &Authed, sel: &mut Selected, io: &mut Io) {
    if !sel.keywords_pending || !sel.msgs.is_whole() {
        return;
    }
    sel.keywords_pending = false;
    let facts = user.view.facts(&(sel.msgs.clone(), sel.seen.clone()));
    let more = super::super::shared::new_keywords(&sel.defined, facts.keywords.iter());
    if !more.is_empty() {
        sel.defined.extend(more);
        let flags = sel.defined.iter().filter_map(|f| Flag::try_from(f.as_str()).ok());
        io.data(Data::Flags(flags.map(|f| imap_next::imap_types::ToStatic::to_static(&f)).collect()));
    }
}

/// Bring the selected folder's snapshot up to date, telling the client:
/// EXPUNGE (only if `expunge` is allowed now), EXISTS, and FETCH FLAGS
/// for messages whose flags changed (except those in `quiet`).
pub fn refresh(user: &Authed, sel: &mut Selected, io: &mut Io, expunge: bool, quiet: &HashSet<u32>) {
    // Nothing was applied since this session's list was read, and the
    // folder shows nothing that changes with the clock: the list is
    // current (a million-message folder is not read again after every
    // command).
    announce_keywords(user, sel, io);
    let generation = user.view.store.generation();
    if generation == sel.generation && !user.view.changes_with_time(&sel.folder) {
        return;
    }
    let (new, seen) = match user.view.snapshot(&sel.folder) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "refreshing the selected folder");
            return;
        }
    };
    if Arc::ptr_eq(&sel.msgs, &new) {
        // The very list this session holds (the usual case when a
        // change elsewhere woke it): only this user's \Seen can differ.
        if !Arc::ptr_eq(&seen, &sel.seen) && *seen != *sel.seen {
            for (i, (uid, meta)) in sel.msgs.iter().enumerate() {
                let is_seen = seen.contains(*uid);
                if sel.seen.contains(*uid) != is_seen {
                    let (recent, modseq) = (sel.recent.contains(*uid), sel.show_modseq(user, meta));
                    announce(io, i, *uid, meta, is_seen, recent, modseq, quiet.contains(uid));
                }
            }
        }
        let seen_changed = !Arc::ptr_eq(&seen, &sel.seen);
        sel.seen = seen;
        sel.generation = generation;
        if seen_changed {
            update_contexts(user, sel, io);
        }
        return;
    }
    let d = diff(&sel.msgs, &new, expunge);
    let changed = d.changed.iter().map(|&(_, j)| &new[j].1);
    let added = new[d.added..].iter().map(|(_, m)| m);
    let more = super::super::shared::new_keywords(&sel.defined, changed.chain(added).flat_map(|m| m.flags.iter()));
    if !more.is_empty() {
        sel.defined.extend(more);
        let flags = sel.defined.iter().filter_map(|f| Flag::try_from(f.as_str()).ok());
        io.data(Data::Flags(flags.map(|f| imap_next::imap_types::ToStatic::to_static(&f)).collect()));
    }
    if !d.expunged.is_empty() && !sel.contexts.is_empty() {
        // REMOVEFROM before the EXPUNGEs, in the numbers the client still
        // has (RFC 5267 §4.3).
        let gone: HashMap<u32, u32> = d.expunged.iter().map(|&i| (sel.msgs[i].0, i as u32 + 1)).collect();
        for c in &mut sel.contexts {
            if let Some(line) = c.expunged(&|u| gone.get(&u).copied()) {
                io.raw(line.as_bytes());
            }
        }
    }
    if user.enabled.qresync() {
        // RFC 7162 §3.2.10: UIDs, not numbers, once QRESYNC is on.
        if let Some(uids) = sequence_set(d.expunged.iter().map(|&i| sel.msgs[i].0)) {
            io.data(Data::Vanished { earlier: false, known_uids: uids });
        }
    } else {
        for &i in d.expunged.iter().rev() {
            io.data(Data::Expunge(nz(i as u32 + 1)));
        }
    }
    for &(i, j) in &d.seen_or_changed(&new, &sel.seen, &seen) {
        let (uid, m) = (new[j].0, &new[j].1);
        let (recent, modseq) = (sel.recent.contains(uid), sel.show_modseq(user, m));
        announce(io, i, uid, m, seen.contains(uid), recent, modseq, quiet.contains(&uid));
    }
    let before = sel.msgs.len() - d.expunged.len();
    let count = before + (new.len() - d.added);
    if d.exact {
        // What this session now shows is the store's list: share it.
        sel.msgs = new.clone();
    } else {
        // EXPUNGEs held back, or messages below the last UID this session
        // knows appeared (a view's older message): a list of its own.
        let msgs = Arc::make_mut(&mut sel.msgs);
        let by_uid: HashMap<u32, &Msg> = new.iter().map(|(u, m)| (*u, m)).collect();
        for (u, m) in msgs.iter_mut() {
            if let Some(n) = by_uid.get(u) {
                if *m != **n {
                    *m = (*n).clone();
                }
            }
        }
        if expunge {
            msgs.retain(|(u, _)| by_uid.contains_key(u));
        }
        msgs.extend(new[d.added..].iter().cloned());
    }
    if count != before {
        io.data(Data::Exists(u32::try_from(count).unwrap_or(u32::MAX)));
        let upto = new.last().map_or(0, |m| m.0);
        let fresh =
            if sel.writable { user.view.recent_claim(&sel.folder, upto) } else { user.view.recent_peek(&sel.folder) };
        let was = sel.recent.count_in(&sel.msgs);
        sel.recent.extend(fresh);
        let now = sel.recent.count_in(&sel.msgs);
        if now != was {
            io.data(Data::Recent(u32::try_from(now).unwrap_or(u32::MAX)));
        }
    }
    sel.seen = seen;
    // Unless EXPUNGEs were held back: then the list still differs from
    // the store's, and the next refresh must look again.
    if expunge || d.expunged.is_empty() && d.kept_gone == 0 {
        sel.generation = generation;
    }
    update_contexts(user, sel, io);
}

/// Search each update context again over the folder as the session now
/// shows it and tell the client what left and joined its result (RFC
/// 5267 §4.3). HYPOTHESIS: on the session's task, since `refresh` is
/// synchronous; bounded by [`context::MAX_CONTEXTS`] and, for keys that
/// read messages, [`context::MAX_READING_CONTEXT`].
fn update_contexts(user: &Authed, sel: &mut Selected, io: &mut Io) {
    if sel.contexts.is_empty() {
        return;
    }
    let mut contexts = std::mem::take(&mut sel.contexts);
    let number: HashMap<u32, u32> = sel.msgs.iter().enumerate().map(|(i, (u, _))| (*u, i as u32 + 1)).collect();
    for c in &mut contexts {
        let now = context_result(&user.view.store, sel, &c.keys, c.sort.as_deref());
        for line in c.update(now, &|u| number.get(&u).copied().unwrap_or(0)) {
            io.raw(line.as_bytes());
        }
    }
    sel.contexts = contexts;
}

/// A context's result over the selected folder: UIDs, ascending for
/// SEARCH, in sort order for SORT. Without the full-text index (its
/// answers would not include what arrived since), as the context's first
/// result was.
fn context_result(
    store: &crate::store::Store,
    sel: &Selected,
    keys: &[SearchKey<'static>],
    sort: Option<&[sort::Criterion]>,
) -> Vec<u32> {
    let ft = search::FullTextHits::default();
    match sort {
        None => search::run(store, &sel.msgs, &sel.seen, &sel.recent, keys, true, &ft),
        Some(criteria) => sorted(store, &sel.msgs, &sel.seen, &sel.recent, keys, &ft, criteria, true),
    }
}

/// A context already kept under `tag`: a second with the same tag is a
/// BAD (as Dovecot: the tag is how the client tells them apart).
fn duplicate_context(sel: &Selected, io: &mut Io, tag: &Tag<'static>, ret: Option<SearchReturn>) -> bool {
    let dup = ret.is_some_and(|r| r.update) && sel.contexts.iter().any(|c| c.tag == tag.as_ref());
    if dup {
        io.status(bad(tag.clone(), "a search is already kept up to date under this tag; CANCELUPDATE it first"));
    }
    dup
}

/// May `ret` (with UPDATE) start a context for `keys` here? If not, the
/// client is told `NO [NOUPDATE "tag"]` (RFC 5267 §4.2) and gets the
/// result once.
fn may_update(sel: &mut Selected, io: &mut Io, tag: &Tag<'static>, keys: &[SearchKey<'_>]) -> bool {
    let reads = keys.iter().map(search::need).max().is_some_and(|n| n >= search::Need::Blob);
    let why = if sel.contexts.len() >= context::MAX_CONTEXTS {
        format!("at most {} searches are kept up to date at once; CANCELUPDATE one", context::MAX_CONTEXTS)
    } else if reads && sel.msgs.len() > context::MAX_READING_CONTEXT {
        format!(
            "keys that read messages are kept up to date in folders of up to {} messages",
            context::MAX_READING_CONTEXT
        )
    } else {
        return true;
    };
    io.raw(format!("* NO [NOUPDATE \"{}\"] {why}\r\n", tag.as_ref()).as_bytes());
    false
}

/// Start a context with the result just returned (`results` in the
/// command's numbers and order).
fn start_context(
    sel: &mut Selected,
    tag: &Tag<'static>,
    uid: bool,
    keys: &[SearchKey<'static>],
    sort: Option<Vec<sort::Criterion>>,
    results: &[u32],
) {
    let uids = match uid {
        true => results.to_vec(),
        false => results.iter().filter_map(|n| sel.msgs.get((*n as usize).wrapping_sub(1)).map(|m| m.0)).collect(),
    };
    sel.contexts.push(context::UpdateContext { tag: tag.as_ref().to_string(), uid, keys: keys.to_vec(), sort, uids });
}

/// Tell the client a message's flags changed; for one it asked not to be
/// told (STORE .SILENT, the FETCH that set `\Seen`), only the new MODSEQ
/// to a CONDSTORE client (RFC 7162 §3.1.3).
#[allow(clippy::too_many_arguments)]
fn announce(io: &mut Io, i: usize, uid: u32, m: &Msg, seen: bool, recent: bool, modseq: Option<u64>, quiet: bool) {
    match (quiet, modseq) {
        (false, _) => flags_update(io, i, uid, m, seen, recent, modseq),
        (true, Some(ms)) => {
            let items = vec![MessageDataItem::Uid(nz(uid)), MessageDataItem::ModSeq(nz64(ms))];
            if let Ok(items) = Vec1::try_from(items) {
                io.data(Data::Fetch { seq: nz(u32::try_from(i + 1).unwrap_or(u32::MAX)), items });
            }
        }
        (true, None) => {}
    }
}

/// How a session's list (`old`) differs from the store's (`new`), both
/// in UID order, found in one merge walk (no copy of either).
struct Diff {
    /// Indexes in `old` of messages gone, to announce (only when EXPUNGE
    /// may be sent).
    expunged: Vec<usize>,
    /// Gone, but kept because EXPUNGE may not be sent now.
    kept_gone: usize,
    /// (index in the list as it will be shown, index in `new`) of
    /// messages in both whose entry differs.
    changed: Vec<(usize, usize)>,
    /// Messages in both, (index shown, index in `new`), to look at for a
    /// change of this user's `\Seen`.
    both: Vec<(usize, usize)>,
    /// Index in `new` from which its messages are new to this session
    /// (UIDs above the last one it knows).
    added: usize,
    /// The list shown after announcing is exactly `new`.
    exact: bool,
}

impl Diff {
    /// Messages whose entry or whose `\Seen` changed: (index shown,
    /// index in `new`).
    fn seen_or_changed(&self, new: &Entries, was: &UidSet, is: &UidSet) -> Vec<(usize, usize)> {
        if was == is {
            return self.changed.clone();
        }
        self.both
            .iter()
            .copied()
            .filter(|&(i, j)| {
                let u = new[j].0;
                self.changed.binary_search(&(i, j)).is_ok() || was.contains(u) != is.contains(u)
            })
            .collect()
    }
}

fn diff(old: &Entries, new: &Entries, expunge: bool) -> Diff {
    let last = old.last().map_or(0, |m| m.0);
    let added = new.partition_point(|m| m.0 <= last);
    let mut d = Diff { expunged: vec![], kept_gone: 0, changed: vec![], both: vec![], added, exact: true };
    let (mut i, mut j, mut shown) = (0, 0, 0);
    while i < old.len() || j < added {
        match (old.get(i), new[..added].get(j)) {
            (Some(o), Some(n)) if o.0 == n.0 => {
                if o.1 != n.1 {
                    d.changed.push((shown, j));
                }
                d.both.push((shown, j));
                (i, j, shown) = (i + 1, j + 1, shown + 1);
            }
            (Some(o), n) if n.is_none_or(|n| o.0 < n.0) => {
                if expunge {
                    d.expunged.push(i);
                } else {
                    d.kept_gone += 1;
                    d.exact = false;
                    shown += 1;
                }
                i += 1;
            }
            _ => {
                // In `new` below the last UID this session knows: not
                // shown until the folder is selected again.
                d.exact = false;
                j += 1;
            }
        }
    }
    d
}

/// (seq, uid) of the messages a sequence set names.
pub fn targets(sel: &Selected, set: &SequenceSet, uid: bool) -> Vec<(u32, u32)> {
    let max_seq = u32::try_from(sel.msgs.len()).unwrap_or(u32::MAX);
    let max_uid = sel.msgs.last().map(|m| m.0).unwrap_or(0);
    let (at, part) = match names_known(sel, set, uid) {
        true => sel.msgs.known(),
        false => (0, sel.msgs.whole().as_slice()),
    };
    part.iter()
        .enumerate()
        .map(|(i, (u, _))| ((at + i) as u32 + 1, *u))
        .filter(|(s, u)| if uid { search::in_set(set, *u, max_uid) } else { search::in_set(set, *s, max_seq) })
        .collect()
}

/// Does `set` name only messages of the selected list that are read
/// already (the newest, while a large folder's list is read)?
fn names_known(sel: &Selected, set: &SequenceSet, uid: bool) -> bool {
    let (at, part) = sel.msgs.known();
    if at == 0 {
        return true;
    }
    let Some(lowest) = part.first() else { return false };
    match uid {
        true => search::set_min(set, sel.msgs.last().map_or(0, |m| m.0)) >= lowest.0,
        false => search::set_min(set, u32::try_from(sel.msgs.len()).unwrap_or(u32::MAX)) as usize > at,
    }
}

/// Wait, off the runtime's workers, until the selected folder's list is
/// whole (a large folder's is read in the background after SELECT).
pub async fn whole(sel: &Selected) {
    if sel.msgs.is_whole() {
        return;
    }
    let msgs = sel.msgs.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || {
        msgs.whole();
    })
    .await
    {
        tracing::error!(error = %e, "reading the selected folder's list");
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    set: &SequenceSet,
    items: MacroOrMessageDataItemNames<'static>,
    uid: bool,
    modifiers: &[FetchModifier],
) -> Result<(), IoError> {
    let mut names: Vec<MessageDataItemName<'static>> = match items {
        MacroOrMessageDataItemNames::Macro(m) => {
            m.expand().into_iter().map(|n| imap_next::imap_types::ToStatic::to_static(&n)).collect()
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
    };
    if uid && !names.contains(&MessageDataItemName::Uid) {
        names.insert(0, MessageDataItemName::Uid);
    }
    // RFC 7162: CHANGEDSINCE keeps the messages changed after a MODSEQ
    // and shows theirs; VANISHED (UID FETCH, QRESYNC on, with
    // CHANGEDSINCE) first lists the UIDs of the set that are gone.
    let since = modifiers.iter().find_map(|m| match m {
        FetchModifier::ChangedSince(n) => Some(n.get()),
        FetchModifier::Vanished => None,
    });
    let vanished = modifiers.contains(&FetchModifier::Vanished);
    if vanished && !(uid && since.is_some() && user.enabled.qresync()) {
        io.status(bad(tag, "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC"));
        return Ok(());
    }
    if (since.is_some() || names.contains(&MessageDataItemName::ModSeq)) && !use_modseq(user, sel, io, &tag) {
        return Ok(());
    }
    let with_modseq =
        sel.modseq && user.enabled.condstore() && (since.is_some() || names.contains(&MessageDataItemName::Flags));
    if with_modseq && !names.contains(&MessageDataItemName::ModSeq) {
        names.push(MessageDataItemName::ModSeq);
    }
    let mut targets = targets(sel, set, uid);
    if let Some(since) = since {
        targets.retain(|&(seq, _)| sel.msgs.get(seq as usize - 1).is_some_and(|(_, m)| m.modseq > since));
    }
    if vanished {
        let max_uid = sel.msgs.last().map_or(0, |m| m.0);
        let last = search::set_max(set, max_uid);
        super::authenticated::vanished_earlier(io, &sel.msgs, last, |u| search::in_set(set, u, max_uid));
    }
    let reads_body = names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Binary { .. }
        )
    });
    let sets_seen = names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Binary { peek: false, .. }
        )
    });
    let mailbox = sel.folder.mailbox.clone();
    let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
    // Reading is recorded (durably) before any byte is sent.
    if reads_body && !uids.is_empty() {
        let a = user.audit(conn, "read").mailbox(&mailbox).folder(sel.audit_folder()).uids(sel.source_uids(&uids));
        if !conn.audit_only(a).await {
            io.status(unavailable(tag));
            return Ok(());
        }
    }
    let mut newly_seen = HashSet::new();
    if sets_seen && sel.writable {
        if let Some(f) = sel.folder.writable_source() {
            let unseen: Vec<u32> = uids.iter().copied().filter(|u| !sel.seen.contains(*u)).collect();
            if !unseen.is_empty() {
                let ch = Change::SetSeen {
                    user: user.view.user.name.clone(),
                    mailbox: mailbox.clone(),
                    folder: f.into(),
                    uids: sel.source_uids(&unseen),
                    seen: true,
                };
                if let Err(e) =
                    conn.ctx.store.commit(user.audit(conn, "store-seen").mailbox(&mailbox).folder(f), ch).await
                {
                    io.status(serverbug(tag, &e));
                    return Ok(());
                }
                newly_seen.extend(unseen);
            }
        }
    }
    Arc::make_mut(&mut sel.seen).extend(newly_seen.iter().copied());
    let needs_raw = names.iter().any(|n| {
        !matches!(
            n,
            MessageDataItemName::Uid
                | MessageDataItemName::Flags
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::ModSeq
        )
    });
    let from_anatomy = from_anatomy(&names);
    // A partial BINARY answers with its origin (see `fetch_line`).
    let origins: Vec<Option<u32>> = names
        .iter()
        .map(|n| match n {
            MessageDataItemName::Binary { partial: Some((origin, _)), .. } => Some(*origin),
            _ => None,
        })
        .collect();
    let (mut failed, mut unknown_cte) = (0usize, 0usize);
    for chunk in targets.chunks(FETCH_BATCH) {
        // The chunk's blobs read by one blocking task (or a few, for big
        // messages), not one each: a task per message cost as much in
        // scheduling and wake-ups as the reads.
        // Structure and header items of a message whose anatomy is cached
        // need no read.
        let kept: Vec<Option<Arc<anatomy::Anatomy>>> = chunk
            .iter()
            .map(|(seq, _)| match (from_anatomy, sel.msgs.get(*seq as usize - 1)) {
                (Some(header), Some((_, m))) => anatomy::cached(&m.hash).filter(|a| !header || a.header.is_some()),
                _ => None,
            })
            .collect();
        let reads: Vec<bool> = kept.iter().map(|k| needs_raw && k.is_none()).collect();
        let mut raws: Vec<Option<Vec<u8>>> = Vec::with_capacity(chunk.len());
        if reads.contains(&true) {
            let hashes: Vec<String> = chunk
                .iter()
                .zip(&reads)
                .filter(|(_, read)| **read)
                .filter_map(|((seq, _), _)| sel.msgs.get(*seq as usize - 1))
                .map(|(_, m)| m.hash.hex())
                .collect();
            let mut from = 0;
            while from < hashes.len() {
                let store = conn.ctx.store.clone();
                let part = hashes[from..].to_vec();
                let read = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    let mut bytes = 0usize;
                    for h in &part {
                        let b = store.get_blob(h).ok();
                        bytes += b.as_ref().map_or(0, Vec::len);
                        out.push(b);
                        if bytes >= FETCH_BATCH_BYTES {
                            break;
                        }
                    }
                    out
                })
                .await
                .unwrap_or_default();
                if read.is_empty() {
                    raws.extend(std::iter::repeat_with(|| None).take(hashes.len() - from));
                    break;
                }
                from += read.len();
                raws.extend(read);
            }
        }
        let mut raws = raws.into_iter();
        for (((seq, u), read), kept) in chunk.iter().zip(reads).zip(kept) {
            let Some((_, meta)) = sel.msgs.get(*seq as usize - 1) else { continue };
            let meta = meta.clone();
            let seen = sel.seen.contains(*u);
            let raw = if read {
                match raws.next().flatten() {
                    Some(b) => Some(b),
                    None => {
                        failed += 1;
                        continue;
                    }
                }
            } else {
                None
            };
            let recent = sel.recent.contains(*u);
            let content = Content { raw: raw.as_deref(), kept: kept.as_deref() };
            let items = message_items(&names, *u, &meta, seen, recent, newly_seen.contains(u), content);
            match items.map(Vec1::try_from) {
                Ok(Ok(items)) if origins.iter().any(Option::is_some) => io.raw(&fetch_line(*seq, items, &origins)),
                Ok(Ok(items)) => io.data(Data::Fetch { seq: nz(*seq), items }),
                Ok(Err(_)) => {}
                Err(_) => unknown_cte += 1,
            }
        }
        io.drain().await?;
    }
    refresh(user, sel, io, uid, &newly_seen);
    if unknown_cte > 0 {
        io.status(tagged(
            tag,
            StatusKind::No,
            Some(Code::UnknownCte),
            "a part's Content-Transfer-Encoding is not one BINARY can undo (BODY[] gives it as it is)",
        ));
    } else if failed > 0 {
        io.status(no_code(tag, "SERVERBUG", "some messages could not be read from the archive"));
    } else {
        io.status(ok(tag, "FETCH done"));
    }
    Ok(())
}

/// `* n FETCH (...)` with each partial BINARY's origin after its section
/// (`BINARY[5]<0> ~{7}`, as `BODY[]<0>` in RFC 3501 §7.4.2; RFC 3516
/// erratum 7246): imap-types' `MessageDataItem::Binary` has no field for
/// it, so each item is encoded alone (`origins[i]`: the origin of the
/// i-th item) and the line put together here.
fn fetch_line(seq: u32, items: Vec1<MessageDataItem<'static>>, origins: &[Option<u32>]) -> Vec<u8> {
    use imap_codec::encode::Encoder;
    use imap_next::imap_types::response::Response;
    let head = format!("* {seq} FETCH (");
    let mut out = head.clone().into_bytes();
    for (i, item) in items.into_iter().enumerate() {
        let Ok(one) = Vec1::try_from(vec![item]) else { continue };
        let bytes = imap_codec::ResponseCodec::default()
            .encode(&Response::Data(Data::Fetch { seq: nz(seq), items: one }))
            .dump();
        let Some(body) = bytes.get(head.len()..bytes.len().saturating_sub(3)) else { continue };
        if i > 0 {
            out.push(b' ');
        }
        let close = body.iter().position(|b| *b == b']');
        match (origins.get(i).copied().flatten(), close) {
            (Some(origin), Some(close)) if body.starts_with(b"BINARY[") => {
                out.extend_from_slice(&body[..=close]);
                out.extend_from_slice(format!("<{origin}>").as_bytes());
                out.extend_from_slice(&body[close + 1..]);
            }
            _ => out.extend_from_slice(body),
        }
    }
    out.extend_from_slice(b")\r\n");
    out
}

#[allow(clippy::too_many_arguments)]
async fn store(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: &SequenceSet,
    how: StoreHow,
    flags: &[Flag<'_>],
    uid: bool,
) {
    let StoreHow { kind, response, unchanged_since } = how;
    let mut targets = targets(sel, set, uid);
    // UNCHANGEDSINCE (RFC 7162 §3.1.3): a message changed after the
    // client's MODSEQ is left alone and named in MODIFIED.
    let mut modified = Vec::new();
    if let Some(n) = unchanged_since {
        targets.retain(|&(seq, u)| {
            let fresh = sel.msgs.get(seq as usize - 1).is_some_and(|(_, m)| m.modseq <= n);
            if !fresh {
                modified.push(if uid { u } else { seq });
            }
            fresh
        });
    }
    let done = |io: &mut Io, tag: Tag<'static>| match sequence_set(modified.iter().copied()) {
        Some(set) => {
            io.status(tagged(tag, StatusKind::Ok, Some(Code::Modified(set)), "STORE done, but not where MODIFIED"))
        }
        None => io.status(ok(tag, "STORE done")),
    };
    let Some(sfolder) = sel.folder.writable_source() else {
        return io.status(no_code(tag, "CANNOT", "messages here cannot change (move them out of Trash first)"));
    };
    let view = &user.view;
    let mailbox = sel.folder.mailbox.clone();
    let shown: Vec<u32> = targets.iter().map(|t| t.1).collect();
    let uids = sel.source_uids(&shown);
    let op = match kind {
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
        StoreType::Replace => FlagOp::Replace,
    };
    let mut strs: Vec<String> = flags.iter().map(flag_string).collect();
    // $PecTaken / $PecDone set or cleared: a handling transition, the
    // same as dropping the message into Mine / Done / To handle.
    if sfolder == view::INBOX && strs.iter().any(|f| handling::is_settable_keyword(f)) {
        let has = |k: &str| strs.iter().any(|f| f.eq_ignore_ascii_case(k));
        let action = match op {
            FlagOp::Add | FlagOp::Replace if has(handling::KW_DONE) => handling::Action::Done,
            FlagOp::Add | FlagOp::Replace => handling::Action::Take,
            FlagOp::Remove => handling::Action::Reopen,
        };
        strs.retain(|f| !handling::is_settable_keyword(f));
        let t = HTransition::new(action, &view.user.name);
        let hashes = sel.hashes(&shown);
        if let Err(refusal) = transfer::transition(conn, user, &sel.folder, &mailbox, uids.clone(), hashes, t).await {
            return io.status(refusal(tag));
        }
        if op == FlagOp::Replace {
            // The other flags as written (computed keywords dropped).
            strs.retain(|f| !is_pec_keyword(f));
        }
    }
    if strs.iter().any(|f| is_pec_keyword(f)) {
        if op != FlagOp::Replace {
            return io.status(no_code(
                tag,
                "CANNOT",
                "$Pec* keywords show the PEC delivery and handling state; only the gateway sets them (but $PecTaken and $PecDone in INBOX and the handling views)",
            ));
        }
        // A client that writes back every flag it saw: the computed
        // keywords stay what the receipts say.
        strs.retain(|f| !is_pec_keyword(f));
    }
    let has_seen = flags.iter().any(|f| matches!(f, Flag::Seen));
    let shared: Vec<String> = strs.iter().filter(|f| !f.eq_ignore_ascii_case("\\Seen")).cloned().collect();
    let mut batch = Vec::new();
    if !uids.is_empty() && (!shared.is_empty() || op == FlagOp::Replace) {
        // The table checked triage (and delete for \Deleted) already.
        debug_assert!(allowed.holds(Right::Triage) || allowed.holds(Right::Delete));
        let a = user.audit(conn, "store").mailbox(&mailbox).folder(sfolder).uids(uids.clone());
        batch.push((
            a,
            Change::SetFlags {
                mailbox: mailbox.clone(),
                folder: sfolder.into(),
                uids: uids.clone(),
                op,
                flags: shared,
            },
        ));
    }
    let seen_to = match (op, has_seen) {
        (FlagOp::Add, true) => Some(true),
        (FlagOp::Remove, true) => Some(false),
        (FlagOp::Replace, s) => Some(s),
        _ => None,
    };
    if let (Some(seen), false) = (seen_to, uids.is_empty()) {
        let a = user.audit(conn, "store-seen").mailbox(&mailbox).folder(sfolder).uids(uids.clone());
        batch.push((
            a,
            Change::SetSeen {
                user: view.user.name.clone(),
                mailbox: mailbox.clone(),
                folder: sfolder.into(),
                uids: uids.clone(),
                seen,
            },
        ));
    }
    if !batch.is_empty() {
        if let Err(e) = conn.ctx.store.commit_batch(batch).await {
            return io.status(serverbug(tag, &e));
        }
    }
    let quiet: HashSet<u32> =
        if matches!(response, StoreResponse::Silent) { shown.iter().copied().collect() } else { HashSet::new() };
    refresh(user, sel, io, false, &quiet);
    done(io, tag);
}

/// A STORE's kind, answer and condition.
pub struct StoreHow {
    kind: StoreType,
    response: StoreResponse,
    unchanged_since: Option<u64>,
}

/// Does a search key use a MODSEQ (RFC 7162 SEARCH MODSEQ)?
fn uses_modseq(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(ks) => ks.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

/// SEARCH, and `SEARCH RETURN (...)` (`ret`: ESEARCH, RFC 4731).
#[allow(clippy::too_many_arguments)]
pub async fn search(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    keys: &[SearchKey<'static>],
    uid: bool,
    ret: Option<SearchReturn>,
) -> Result<(), IoError> {
    if duplicate_context(sel, io, &tag, ret) {
        return Ok(());
    }
    let modseq = keys.iter().any(uses_modseq);
    if modseq && !use_modseq(user, sel, io, &tag) {
        return Ok(());
    }
    let update = ret.is_some_and(|r| r.update) && may_update(sel, io, &tag, keys);
    let context_keys = update.then(|| keys.to_vec());
    // One blocking task for the whole folder: the keys may read the
    // store for every message.
    let (store, msgs, seen, recent, keys) =
        (conn.ctx.store.clone(), sel.msgs.clone(), sel.seen.clone(), sel.recent.clone(), keys.to_vec());
    // A context is searched again without the index (see
    // `context_result`): its first result is too.
    let (ft, mailbox) =
        (conn.ctx.fulltext.clone().filter(|_| conn.ctx.cfg.fulltext_search && !update), sel.folder.mailbox.clone());
    let hits = match tokio::task::spawn_blocking(move || {
        let ft = search::FullTextHits::prepare(&store, ft.as_deref(), &mailbox, &keys, msgs.len());
        search::run(&store, &msgs, &seen, &recent, &keys, uid, &ft)
    })
    .await
    {
        Ok(h) => h,
        Err(e) => {
            io.status(serverbug(tag, &e));
            return Ok(());
        }
    };
    // With MODSEQ in the keys, the highest MODSEQ of what was found (RFC
    // 7162 §3.1.5); with only MIN and/or MAX asked, of those messages (RFC
    // 4731 §3.2).
    let of = |n: &u32| match uid {
        true => sel.msgs.binary_search_by_key(n, |m| m.0).ok().map(|i| sel.msgs[i].1.modseq),
        false => sel.msgs.get(*n as usize - 1).map(|m| m.1.modseq),
    };
    let highest = modseq
        .then(|| match ret {
            Some(r) if !r.all && !r.count => [r.min.then(|| hits.iter().min()), r.max.then(|| hits.iter().max())]
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(of)
                .max(),
            _ => hits.iter().filter_map(of).max(),
        })
        .flatten()
        .map(nz64);
    match ret {
        None => io.data(Data::Search(hits.into_iter().map(nz).collect(), highest)),
        Some(r) => {
            io.raw(context::esearch(tag.as_ref(), uid, &r, &hits, highest.map(|m| m.get())).as_bytes());
            if let Some(keys) = context_keys {
                start_context(sel, &tag, uid, &keys, None, &hits);
            }
        }
    }
    io.status(ok(tag, "SEARCH done"));
    Ok(())
}

/// The charsets SORT and THREAD take (RFC 5256 requires both): search
/// strings are matched as UTF-8, of which US-ASCII is a part.
const CHARSETS: [&str; 2] = ["UTF-8", "US-ASCII"];

/// `NO [BADCHARSET (UTF-8 US-ASCII)]` for another charset (RFC 3501
/// §7.1), `None` for one of [`CHARSETS`].
fn refuse_charset(
    tag: &Tag<'static>,
    charset: &Charset<'_>,
) -> Option<imap_next::imap_types::response::Status<'static>> {
    if CHARSETS.iter().any(|c| c.eq_ignore_ascii_case(charset.as_ref())) {
        return None;
    }
    let allowed = CHARSETS.iter().filter_map(|c| Charset::try_from(*c).ok()).collect();
    Some(tagged(
        tag.clone(),
        StatusKind::No,
        Some(Code::BadCharset { allowed }),
        "the charsets taken are UTF-8 and US-ASCII",
    ))
}

/// The cached header fields of a message SORT or THREAD needs, when the
/// search did not read them; a message whose fields cannot be read sorts
/// with empty header keys (logged), as it would without those headers.
fn fields_of(
    store: &crate::store::Store,
    reader: Option<&crate::store::FieldsReader>,
    meta: &Msg,
) -> Option<crate::store::fields::SearchFields> {
    let hash = meta.hash.hex();
    match reader {
        Some(r) => r.get(&hash),
        None => store.search_fields(&hash),
    }
    .map_err(|e| tracing::warn!(error = %e, hash = %meta.hash, "SORT/THREAD cannot read a message's fields"))
    .ok()
}

/// SORT and UID SORT (RFC 5256): SEARCH's matches, ordered by the keys the
/// index and the cached header fields hold (no message is read). With
/// `ret`, `SORT RETURN (...)` (ESORT, RFC 5267 §3): answered `* ESEARCH`,
/// and with UPDATE kept up to date (CONTEXT=SORT).
#[allow(clippy::too_many_arguments)]
pub async fn sort(
    conn: &Conn,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    criteria: &[SortCriterion],
    charset: &Charset<'_>,
    keys: &[SearchKey<'static>],
    uid: bool,
    ret: Option<SearchReturn>,
) {
    if let Some(no) = refuse_charset(&tag, charset) {
        return io.status(no);
    }
    let criteria = match sort::criteria(criteria) {
        Ok(c) => c,
        Err(why) => return io.status(bad(tag, &why)),
    };
    if duplicate_context(sel, io, &tag, ret) {
        return;
    }
    let update = ret.is_some_and(|r| r.update) && may_update(sel, io, &tag, keys);
    let context_keys = update.then(|| keys.to_vec());
    let (store, msgs, seen, recent, keys) =
        (conn.ctx.store.clone(), sel.msgs.clone(), sel.seen.clone(), sel.recent.clone(), keys.to_vec());
    let (ft, mailbox) =
        (conn.ctx.fulltext.clone().filter(|_| conn.ctx.cfg.fulltext_search && !update), sel.folder.mailbox.clone());
    let by = criteria.clone();
    let order = tokio::task::spawn_blocking(move || {
        let ft = search::FullTextHits::prepare(&store, ft.as_deref(), &mailbox, &keys, msgs.len());
        sorted(&store, &msgs, &seen, &recent, &keys, &ft, &by, uid)
    })
    .await;
    let order = match order {
        Ok(o) => o,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    match ret {
        None => io.data(Data::Sort(order.into_iter().map(nz).collect(), None)),
        Some(r) => {
            io.raw(context::esearch(tag.as_ref(), uid, &r, &order, None).as_bytes());
            if let Some(keys) = context_keys {
                start_context(sel, &tag, uid, &keys, Some(criteria), &order);
            }
        }
    }
    io.status(ok(tag, "SORT done"));
}

/// The messages `keys` match, as UIDs (`uid`) or sequence numbers, in
/// the order of `criteria`.
#[allow(clippy::too_many_arguments)]
fn sorted(
    store: &crate::store::Store,
    msgs: &Entries,
    seen: &UidSet,
    recent: &super::super::recent::Recent,
    keys: &[SearchKey<'_>],
    ft: &search::FullTextHits,
    criteria: &[sort::Criterion],
    uid: bool,
) -> Vec<u32> {
    let with_fields = sort::needs_fields(criteria);
    let reader = store.fields_reader().ok();
    let mut items = Vec::new();
    search::each_match(store, msgs, seen, recent, keys, ft, |i, fields| {
        let (u, meta) = &msgs[i];
        let fields = if with_fields { fields.or_else(|| fields_of(store, reader.as_ref(), meta)) } else { None };
        let n = if uid { *u } else { u32::try_from(i + 1).unwrap_or(u32::MAX) };
        items.push((sort::Keys::new(criteria, meta.internal_date, meta.size, fields.as_ref()), n));
    });
    sort::sort(&mut items, criteria);
    items.into_iter().map(|(_, n)| n).collect()
}

/// THREAD and UID THREAD (RFC 5256): SEARCH's matches threaded by
/// ORDEREDSUBJECT or REFERENCES, from the cached header fields.
#[allow(clippy::too_many_arguments)]
async fn thread(
    conn: &Conn,
    sel: &Selected,
    io: &mut Io,
    tag: Tag<'static>,
    algorithm: &ThreadingAlgorithm<'_>,
    charset: &Charset<'_>,
    keys: &[SearchKey<'static>],
    uid: bool,
) {
    let by_references = match algorithm {
        ThreadingAlgorithm::OrderedSubject => false,
        ThreadingAlgorithm::References => true,
        ThreadingAlgorithm::Other(a) => {
            return io.status(bad(
                tag,
                &format!("unknown threading algorithm {}; ORDEREDSUBJECT and REFERENCES are offered", a.as_ref()),
            ))
        }
    };
    if let Some(no) = refuse_charset(&tag, charset) {
        return io.status(no);
    }
    let (store, msgs, seen, recent, keys) =
        (conn.ctx.store.clone(), sel.msgs.clone(), sel.seen.clone(), sel.recent.clone(), keys.to_vec());
    let (ft, mailbox) =
        (conn.ctx.fulltext.clone().filter(|_| conn.ctx.cfg.fulltext_search), sel.folder.mailbox.clone());
    let threads = tokio::task::spawn_blocking(move || {
        let ft = search::FullTextHits::prepare(&store, ft.as_deref(), &mailbox, &keys, msgs.len());
        let reader = store.fields_reader().ok();
        let mut items = Vec::new();
        search::each_match(&store, &msgs, &seen, &recent, &keys, &ft, |i, fields| {
            let (u, meta) = &msgs[i];
            let fields = fields.or_else(|| fields_of(&store, reader.as_ref(), meta));
            let n = if uid { *u } else { u32::try_from(i + 1).unwrap_or(u32::MAX) };
            items.push(thread::Msg::new(n, meta.internal_date, fields.as_ref()));
        });
        if by_references {
            thread::references(&items)
        } else {
            thread::ordered_subject(&items)
        }
    })
    .await;
    match threads {
        Ok(t) => {
            io.data(Data::Thread(t));
            io.status(ok(tag, "THREAD done"));
        }
        Err(e) => io.status(serverbug(tag, &e)),
    }
}

async fn expunge(
    conn: &Conn,
    user: &Authed,
    sel: &mut Selected,
    io: &mut Io,
    tag: Tag<'static>,
    allowed: Allowed,
    set: Option<SequenceSet>,
) {
    let kept = match hide_deleted(conn, user, sel, &allowed, set.as_ref()).await {
        Ok(k) => k,
        Err(e) => return io.status(serverbug(tag, &e)),
    };
    refresh(user, sel, io, true, &HashSet::new());
    if kept > 0 {
        return io.status(ok(
            tag,
            &format!(
                "EXPUNGE done; kept {kept} message(s) filed only in this folder: hiding them needs the delete right"
            ),
        ));
    }
    io.status(ok(tag, "EXPUNGE done"));
}

/// Hide the selected folder's messages marked `\Deleted` (those in `set`,
/// if given): EXPUNGE, UID EXPUNGE, CLOSE. In a category, labels are
/// removed, and what the category alone files is hidden for a user with
/// the delete right; returns how many of those were kept for want of it.
async fn hide_deleted(
    conn: &Conn,
    user: &Authed,
    sel: &Selected,
    allowed: &Allowed,
    set: Option<&SequenceSet>,
) -> Result<usize, crate::store::StoreError> {
    let Some(sfolder) = sel.folder.store_folder.clone() else { return Ok(0) };
    let max_uid = sel.msgs.last().map(|m| m.0).unwrap_or(0);
    let uids: Vec<u32> = sel
        .msgs
        .iter()
        .filter(|(_, m)| m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
        .filter(|(u, _)| set.is_none_or(|s| search::in_set(s, *u, max_uid)))
        .map(|(u, _)| *u)
        .collect();
    if uids.is_empty() {
        return Ok(0);
    }
    let mailbox = allowed.mailbox().to_string();
    if sel.folder.private {
        // The user's own drafts: deleted, not hidden.
        let ch = Change::Purge { mailbox: mailbox.clone(), folder: sfolder, uids: uids.clone() };
        user.record(conn, "expunge", &mailbox, sel.folder.audit_name(), uids, ch).await?;
        return Ok(0);
    }
    let (uids, kept) = if sel.folder.category {
        let (labels, filed) = split_filed(conn, sel, &uids)?;
        if !labels.is_empty() {
            let ch = Change::Unlabel { mailbox: mailbox.clone(), folder: sfolder.clone(), uids: labels.clone() };
            user.record(conn, "expunge", &mailbox, sel.folder.audit_name(), labels, ch).await?;
        }
        let (hide, kept) = hideable(user, sel, filed);
        (hide, kept.len())
    } else {
        (uids, 0)
    };
    if !uids.is_empty() {
        let ch = Change::Hide { mailbox: mailbox.clone(), folder: sfolder, uids: uids.clone() };
        user.record(conn, "expunge", &mailbox, sel.folder.audit_name(), uids, ch).await?;
    }
    Ok(kept)
}

/// Of `uids` in the selected category: (labels, messages filed there).
/// A filed message appended by a client comes first among the filed ones
/// only in the sense that [`hideable`] tells them apart.
pub fn split_filed(
    conn: &Conn,
    sel: &Selected,
    uids: &[u32],
) -> Result<(Vec<u32>, Vec<u32>), crate::store::StoreError> {
    let folder = sel.folder.source();
    let by_uid: std::collections::HashMap<u32, String> = sel.msgs.iter().map(|(u, m)| (*u, m.hash.hex())).collect();
    let (mut labels, mut filed) = (Vec::new(), Vec::new());
    for &u in uids {
        let Some(hash) = by_uid.get(&u) else { continue };
        if conn.ctx.store.find_hash(&sel.folder.mailbox, hash)? == Some((folder.to_string(), u)) {
            filed.push(u);
        } else {
            labels.push(u);
        }
    }
    Ok((labels, filed))
}

/// Of messages filed in the selected category: (those this user may
/// hide, those kept). Hiding needs the delete right, except for what a
/// client APPENDed there (not a PEC the provider delivered or pecgate
/// sent): whoever may file may take that away.
pub fn hideable(user: &Authed, sel: &Selected, filed: Vec<u32>) -> (Vec<u32>, Vec<u32>) {
    if user.view.user.may(&sel.folder.mailbox, crate::auth::Right::Delete) {
        return (filed, vec![]);
    }
    let appended: HashSet<u32> = sel.msgs.iter().filter(|(_, m)| m.appended).map(|(u, _)| *u).collect();
    filed.into_iter().partition(|u| appended.contains(u))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::shared::tests::meta;
    use crate::store::BlobHash;

    fn list(items: &[(u32, &[&str])]) -> Entries {
        let mut sets = crate::imap::shared::FlagSets::default();
        items.iter().map(|(u, f)| (*u, Msg::from_meta(&meta(&format!("h{u}"), f), &mut sets))).collect()
    }

    #[test]
    fn a_diff_finds_what_changed_in_one_walk() {
        let old = list(&[(1, &[]), (2, &[]), (3, &[]), (5, &[])]);
        let new = list(&[(1, &[]), (3, &["\\Flagged"]), (4, &[]), (5, &[]), (6, &[]), (7, &[])]);
        let d = diff(&old, &new, true);
        assert_eq!(d.expunged, vec![1], "UID 2, the second");
        assert_eq!(d.changed, vec![(1, 1)], "UID 3: shown second once 2 is gone, second in new");
        assert_eq!(d.added, 4, "6 and 7 are above the last UID known (5)");
        assert!(!d.exact, "UID 4 appeared below it: not shown until SELECT");
        assert_eq!(d.both.len(), 3);
        let d = diff(&old, &new, false);
        assert!(d.expunged.is_empty() && d.kept_gone == 1);
        assert_eq!(d.changed, vec![(2, 1)], "UID 2 kept: UID 3 is still third");
        let new = list(&[(1, &[]), (3, &[]), (5, &[]), (8, &[])]);
        let d = diff(&old, &new, true);
        assert!(d.exact && d.changed.is_empty() && d.added == 3);
        assert_eq!(d.expunged, vec![1]);
        let same = diff(&old, &old, false);
        assert!(same.exact && same.changed.is_empty() && same.added == old.len());
        assert_eq!(BlobHash::parse("h1"), old[0].1.hash);
    }
}
