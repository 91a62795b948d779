//! CREATE, DELETE and RENAME: categories, the folders people make under a
//! PEC mailbox (`prot/Contratti 2026`, `prot/Solleciti/Risposte`). They
//! are labels over the archive (DESIGN.md "Folder tree"): creating,
//! renaming or deleting one never changes a message, and every change is
//! a journal record. The gateway's own folders cannot be changed.

use imap_next::imap_types::core::Tag;

use super::super::io::Io;
use super::super::respond::*;
use super::super::view::{self, DELIMITER};
use super::{Allowed, Authed, Conn};
use crate::auth::Right;
use crate::store::{Change, StoreError};

/// The name under its mailbox (`Contratti/2026` for `prot/Contratti/2026`).
fn under<'a>(allowed: &Allowed, name: &'a str) -> &'a str {
    name.get(allowed.mailbox().len() + 1..).unwrap_or("")
}

/// Where a name outside every visible mailbox is refused.
fn outside(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, name: &str) {
    let example = user.view.user.visible_mailboxes().first().map(|m| m.to_string()).unwrap_or_else(|| "mailbox".into());
    let _ = conn;
    io.status(no_code(
        tag,
        "CANNOT",
        &format!("folders are made inside a PEC mailbox, e.g. \"{example}{DELIMITER}{}\"", name.rsplit(DELIMITER).next().unwrap_or(name)),
    ));
}

/// A store refusal as the client's answer.
fn answer(io: &mut Io, tag: Tag<'static>, r: Result<(), StoreError>, done: &str) {
    match r {
        Ok(()) => io.status(ok(tag, done)),
        Err(StoreError::Conflict(why)) => io.status(no_code(tag, "CANNOT", &why)),
        Err(e) => io.status(serverbug(tag, &e)),
    }
}

pub async fn create(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, name: String, allowed: Option<Allowed>) {
    // A trailing delimiter announces inferiors to come (RFC 3501 §6.3.3).
    let name = name.trim_end_matches(DELIMITER).to_string();
    let Some(allowed) = allowed else { return outside(conn, user, io, tag, &name) };
    let view = &user.view;
    if view.resolve(&name).is_ok() || view.is_parent(&name) {
        return io.status(no_code(tag, "ALREADYEXISTS", "a folder of that name exists already"));
    }
    let rest = under(&allowed, &name);
    if let Some(why) = view::category_name_problem(rest) {
        return io.status(no_code(tag, "CANNOT", &why));
    }
    let mb = allowed.mailbox().to_string();
    let ch = Change::CreateCategory { mailbox: mb.clone(), name: rest.to_string() };
    let r = user.record(conn, "create", &mb, rest, vec![], ch).await;
    answer(io, tag, r, "CREATE done");
}

pub async fn delete(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, name: String, allowed: Option<Allowed>) {
    let Some(allowed) = allowed else { return io.status(no_code(tag, "NONEXISTENT", "no such folder")) };
    let view = &user.view;
    let folder = match view.resolve(&name) {
        Ok(f) if f.category => f,
        Ok(_) => return io.status(no_code(tag, "CANNOT", "this is one of the gateway's own folders; only folders people created can be deleted")),
        Err(_) if view.is_parent(&name) => return io.status(no_code(tag, "CANNOT", "a PEC mailbox cannot be deleted")),
        Err(_) => return io.status(no_code(tag, "NONEXISTENT", "no such folder")),
    };
    let mb = allowed.mailbox().to_string();
    let sf = folder.source().to_string();
    // What the category alone files would be hidden: that needs delete.
    if !view.user.may(&mb, Right::Delete) {
        let filed = match filed_here(conn, &mb, &sf) {
            Ok(n) => n,
            Err(e) => return io.status(serverbug(tag, &e)),
        };
        if filed > 0 {
            return io.status(no_code(
                tag,
                "NOPERM",
                &format!("{filed} messages are filed only in this folder; deleting it would hide them, which needs the delete right: move them to another folder first"),
            ));
        }
    }
    let rest = under(&allowed, &name).to_string();
    let ch = Change::DeleteCategory { mailbox: mb.clone(), name: rest.clone() };
    let r = user.record(conn, "delete-folder", &mb, &rest, vec![], ch).await;
    answer(io, tag, r, "DELETE done (no message was removed from the archive)");
}

pub async fn rename(conn: &Conn, user: &Authed, io: &mut Io, tag: Tag<'static>, from: String, to: String, allowed: Option<Allowed>) {
    let Some(allowed) = allowed else { return io.status(no_code(tag, "NONEXISTENT", "no such folder")) };
    let view = &user.view;
    match view.resolve(&from) {
        Ok(f) if f.category => {}
        Ok(_) => return io.status(no_code(tag, "CANNOT", "this is one of the gateway's own folders; it cannot be renamed")),
        Err(_) => return io.status(no_code(tag, "NONEXISTENT", "no such folder")),
    }
    let to = to.trim_end_matches(DELIMITER).to_string();
    if view.mailbox_of(&to).as_deref() != Some(allowed.mailbox()) {
        return io.status(no_code(tag, "CANNOT", "a folder keeps its PEC mailbox: rename it within the same mailbox"));
    }
    if view.resolve(&to).is_ok() || view.is_parent(&to) {
        return io.status(no_code(tag, "ALREADYEXISTS", "a folder of that name exists already"));
    }
    let (old, new) = (under(&allowed, &from).to_string(), under(&allowed, &to).to_string());
    if let Some(why) = view::category_name_problem(&new) {
        return io.status(no_code(tag, "CANNOT", &why));
    }
    let mb = allowed.mailbox().to_string();
    // Every user's subscriptions of it and its inferiors follow, in the
    // same batch (not made if the rename is refused).
    let subs =
        Change::RenameSubscriptions { from: format!("{mb}{DELIMITER}{old}"), to: format!("{mb}{DELIMITER}{new}") };
    let ch = Change::RenameCategory { mailbox: mb.clone(), from: old.clone(), to: new };
    let a = user.audit(conn, "rename").mailbox(&mb).folder(&old);
    let r = conn.ctx.store.commit_batch(vec![(a.clone(), ch), (a, subs)]).await.map(|_| ());
    answer(io, tag, r, "RENAME done");
}

/// How many messages of a category are filed only there that hiding
/// would need the delete right for (moved there from the gateway's
/// folders; not those a client appended there).
pub fn filed_here(conn: &Conn, mailbox: &str, folder: &str) -> Result<usize, StoreError> {
    let store = &conn.ctx.store;
    let mut n = 0;
    for (uid, m) in store.messages(mailbox, folder)? {
        if !m.appended && store.find_hash(mailbox, &m.hash)? == Some((folder.to_string(), uid)) {
            n += 1;
        }
    }
    Ok(n)
}
