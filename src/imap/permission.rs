//! Who may do what: one table, evaluated in dispatch before any handler.
//!
//! For each command (and its arguments: the flags of a STORE, the target of
//! COPY/MOVE/APPEND) [`check`] names the rights it needs on which mailbox.
//! When the user holds them it yields an [`Allowed`], which only this
//! module can make; every handler that changes state takes one, so a new
//! command cannot forget the check (DESIGN.md invariant 4).
//!
//! | command | needs, on the mailbox of |
//! |---|---|
//! | FETCH (a body without PEEK sets the reader's `\Seen`) | read, the selected folder |
//! | SEARCH, SORT, THREAD | read, the selected folder |
//! | STORE `\Seen` | read (`\Seen` is each person's own: RFC 4314's `s` right) |
//! | STORE `\Deleted` | delete (setting it is the first half of hiding) |
//! | STORE any other flag or keyword, or `FLAGS` (replace) | triage |
//! | EXPUNGE, UID EXPUNGE, and CLOSE's silent expunge | delete |
//! | MOVE between folders, COPY, into a handling view | triage, on the target's mailbox |
//! | MOVE into or out of `Trash` | delete |
//! | APPEND | send, on the target's mailbox, into `Sent`; triage into a category |
//! | CREATE, DELETE, RENAME (categories under a mailbox) | triage, on that mailbox |
//! | in a category: STORE `\Deleted`, EXPUNGE, CLOSE (they remove labels) | triage (hiding what the category alone files also needs delete: the handler checks) |
//!
//! Commands not in the table change nothing shared (LIST, STATUS…)
//! or are checked by what they can reach (SELECT resolves only folders the
//! user may read).

use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::flag::{Flag, StoreType};

use super::command::Selected;
use super::respond::mailbox_name;
use super::view::{Folder, View};
use crate::auth::Right;
use crate::handling;

/// Proof that dispatch checked the rights a command needs. Made only by
/// [`check`]; handlers that change state take one.
#[derive(Debug)]
pub struct Allowed {
    rights: Vec<Right>,
    mailbox: String,
    target: Option<Folder>,
}

impl Allowed {
    /// The mailbox the rights were checked on.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// Was `right` among those checked?
    pub fn holds(&self, right: Right) -> bool {
        self.rights.contains(&right)
    }

    /// The resolved target folder (COPY, MOVE, APPEND).
    pub fn target(&self) -> Option<&Folder> {
        self.target.as_ref()
    }
}

/// Why a command is refused before its handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// `NO [NOPERM]`: the user lacks a right; the text says which.
    NoPerm(String),
    /// `NO [TRYCREATE]`: the target folder does not exist for this user.
    NoSuchFolder,
    /// `NO`: the selected folder was opened with EXAMINE, or is virtual.
    ReadOnly(&'static str),
}

/// What `body` needs, checked against the user's rights: `Ok(None)` for a
/// command outside the table.
pub fn check(view: &View, sel: Option<&Selected>, body: &CommandBody<'_>) -> Result<Option<Allowed>, Denied> {
    let user_may = |mailbox: &str, r: Right| view.user.may(mailbox, r);
    let need = |mailbox: &str, rights: Vec<(Right, String)>, target: Option<Folder>| -> Result<Option<Allowed>, Denied> {
        for (r, why) in &rights {
            if !user_may(mailbox, *r) {
                return Err(Denied::NoPerm(why.clone()));
            }
        }
        Ok(Some(Allowed { rights: rights.into_iter().map(|(r, _)| r).collect(), mailbox: mailbox.to_string(), target }))
    };
    match body {
        CommandBody::Append { mailbox, .. } => {
            let target = view.resolve(&mailbox_name(mailbox)).map_err(|_| Denied::NoSuchFolder)?;
            let mb = target.mailbox.clone();
            if target.category {
                return need(&mb, vec![(Right::Triage, format!("not permitted: filing messages in {mb}'s folders needs the triage right"))], Some(target));
            }
            need(&mb, vec![(Right::Send, format!("not permitted to send from {mb}"))], Some(target))
        }
        // Folders people create live under a PEC mailbox; a name outside
        // every visible mailbox is the handler's to refuse (no token).
        CommandBody::Create { mailbox } | CommandBody::Delete { mailbox } | CommandBody::Rename { from: mailbox, .. } => {
            let Some(mb) = view.mailbox_of(&mailbox_name(mailbox)) else { return Ok(None) };
            let why = format!("not permitted: creating, renaming and deleting folders in {mb} needs the triage right");
            need(&mb, vec![(Right::Triage, why)], None)
        }
        _ => {
            let Some(sel) = sel else { return Ok(None) };
            selected(view, sel, body, &need)
        }
    }
}

type Need<'a> = dyn Fn(&str, Vec<(Right, String)>, Option<Folder>) -> Result<Option<Allowed>, Denied> + 'a;

fn selected(view: &View, sel: &Selected, body: &CommandBody<'_>, need: &Need<'_>) -> Result<Option<Allowed>, Denied> {
    let mb = sel.folder.mailbox.as_str();
    // The rights first (a user without them is told so, whatever the
    // folder), then whether the folder was opened to change.
    let read_only = |allowed: Result<Option<Allowed>, Denied>, why: &'static str| match allowed {
        Ok(a) if !sel.writable => {
            let _ = a;
            Err(Denied::ReadOnly(why))
        }
        other => other,
    };
    match body {
        CommandBody::Fetch { .. } | CommandBody::Search { .. } | CommandBody::Sort { .. } | CommandBody::Thread { .. } => {
            need(mb, vec![(Right::Read, "not permitted to read".into())], None)
        }
        // CLOSE hides what is marked \Deleted, for a user who may (RFC
        // 3501 §6.4.2); for others it only closes.
        // In a category they remove labels: triage.
        CommandBody::Close if sel.writable && sel.folder.category && view.user.may(mb, Right::Triage) => {
            need(mb, vec![(Right::Triage, "removing messages from a folder needs the triage right".into())], None)
        }
        CommandBody::Close if sel.writable && !sel.folder.category && view.user.may(mb, Right::Delete) => {
            need(mb, vec![(Right::Delete, "hiding messages needs the delete right".into())], None)
        }
        CommandBody::Store { kind, flags, .. } => read_only(
            need(mb, store_rights(*kind, flags, sel.folder.category), None),
            "the folder is read-only (EXAMINE, or a folder that cannot change)",
        ),
        CommandBody::Expunge | CommandBody::ExpungeUid { .. } if sel.folder.category => read_only(
            need(mb, vec![(Right::Triage, "not permitted: removing messages from a folder needs the triage right".into())], None),
            "the folder is read-only",
        ),
        CommandBody::Expunge | CommandBody::ExpungeUid { .. } => read_only(
            need(mb, vec![(Right::Delete, "not permitted: hiding messages needs the delete right".into())], None),
            "the folder is read-only",
        ),
        CommandBody::Move { mailbox, .. } | CommandBody::Copy { mailbox, .. } => {
            let is_move = matches!(body, CommandBody::Move { .. });
            let target = view.resolve(&mailbox_name(mailbox)).map_err(|_| Denied::NoSuchFolder)?;
            let allowed = if target.trash || (is_move && sel.folder.trash) {
                need(mb, vec![(Right::Delete, "not permitted: hiding and unhiding messages needs the delete right".into())], Some(target))
            } else {
                let on = target.mailbox.clone();
                let why = if target.handling.is_some() {
                    "changing the handling of messages needs triage on this mailbox".to_string()
                } else if is_move {
                    "not permitted: moving messages needs the triage right".to_string()
                } else {
                    format!("not permitted: copying into {on} needs the triage right there")
                };
                need(&on, vec![(Right::Triage, why)], Some(target))
            };
            if is_move {
                read_only(allowed, "the folder is read-only; SELECT it to move messages out")
            } else {
                allowed
            }
        }
        _ => Ok(None),
    }
}

/// The rights a STORE of `flags` needs (in a category `\Deleted` marks
/// a label for removal: triage).
fn store_rights(kind: StoreType, flags: &[Flag<'_>], category: bool) -> Vec<(Right, String)> {
    let mut out: Vec<(Right, String)> = Vec::new();
    fn add(out: &mut Vec<(Right, String)>, r: Right, why: &str) {
        if !out.iter().any(|(x, _)| *x == r) {
            out.push((r, why.to_string()));
        }
    }
    for f in flags {
        match f {
            Flag::Seen => add(&mut out, Right::Read, "not permitted to read"),
            Flag::Deleted if category => add(&mut out, Right::Triage, "not permitted: removing messages from a folder needs the triage right"),
            Flag::Deleted => add(&mut out, Right::Delete, "hiding a message needs the delete right"),
            f if handling::is_settable_keyword(&f.to_string()) => {
                add(&mut out, Right::Triage, "changing the handling of messages needs triage on this mailbox")
            }
            _ => add(&mut out, Right::Triage, "not permitted: changing shared flags needs the triage right"),
        }
    }
    if kind == StoreType::Replace {
        // FLAGS (...) also clears every shared flag not listed.
        add(&mut out, Right::Triage, "not permitted: replacing shared flags needs the triage right");
    }
    if out.is_empty() {
        add(&mut out, Right::Read, "not permitted to read");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(kind: StoreType, flags: &[Flag<'static>]) -> Vec<Right> {
        store_rights(kind, flags, false).into_iter().map(|(r, _)| r).collect()
    }

    #[test]
    fn seen_is_read_deleted_is_delete_the_rest_triage() {
        assert_eq!(rights(StoreType::Add, &[Flag::Seen]), vec![Right::Read]);
        assert_eq!(rights(StoreType::Remove, &[Flag::Seen]), vec![Right::Read]);
        assert_eq!(rights(StoreType::Add, &[Flag::Deleted]), vec![Right::Delete]);
        assert_eq!(rights(StoreType::Add, &[Flag::Flagged]), vec![Right::Triage]);
        assert_eq!(rights(StoreType::Add, &[Flag::Seen, Flag::Deleted]), vec![Right::Read, Right::Delete]);
        let kw = Flag::try_from("$Etichetta").expect("keyword");
        assert_eq!(rights(StoreType::Add, &[kw]), vec![Right::Triage]);
    }

    #[test]
    fn deleted_in_a_category_is_triage() {
        let r: Vec<Right> = store_rights(StoreType::Add, &[Flag::Deleted], true).into_iter().map(|(r, _)| r).collect();
        assert_eq!(r, vec![Right::Triage]);
    }

    #[test]
    fn replace_always_needs_triage() {
        assert_eq!(rights(StoreType::Replace, &[Flag::Seen]), vec![Right::Read, Right::Triage]);
        assert_eq!(rights(StoreType::Replace, &[]), vec![Right::Triage]);
    }

    #[test]
    fn deleted_message_names_the_right() {
        let r = store_rights(StoreType::Add, &[Flag::Deleted], false);
        assert_eq!(r[0].1, "hiding a message needs the delete right");
    }
}
