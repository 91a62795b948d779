//! Not authenticated: STARTTLS, LOGIN, and AUTHENTICATE PLAIN's check.
//! Everything else is refused with a tagged BAD before login.

use std::sync::Arc;

use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::response::{Code, Status, StatusKind};

use super::super::io::Io;
use super::super::respond::{bad, no, no_code, tagged, unavailable};
use super::super::view::View;
use super::{anystate, Authed, Conn, Transition};
use crate::auth::User;
use crate::store::Audit;

pub async fn handle(conn: &Conn, io: &mut Io, tag: Tag<'static>, body: CommandBody<'static>) -> Transition {
    match body {
        CommandBody::StartTLS => {
            if conn.tls || !conn.starttls_listener {
                io.status(bad(tag, "TLS is already active"));
                Transition::None
            } else {
                io.status(super::super::respond::ok(tag, "begin TLS negotiation now"));
                Transition::StartTls
            }
        }
        CommandBody::Login { username, password } => {
            if !conn.may_login() {
                io.status(no_code(tag, "PRIVACYREQUIRED", "use TLS first (LOGINDISABLED)"));
                return Transition::None;
            }
            let u = String::from_utf8_lossy(username.as_ref()).into_owned();
            let p = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
            let (st, t) = login(conn, tag, u, p).await;
            io.status(st);
            t
        }
        other => {
            io.status(bad(tag, &format!("{} is not valid before login; log in first", other.name())));
            Transition::None
        }
    }
}

/// SASL PLAIN: `authzid NUL authcid NUL password`.
pub async fn plain(conn: &Conn, tag: Tag<'static>, data: &[u8]) -> (Status<'static>, Transition) {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let [authz, authc, pw] = parts.as_slice() else {
        return (bad(tag, "malformed PLAIN response"), Transition::None);
    };
    if !authz.is_empty() && authz != authc {
        return (no(tag, "[AUTHENTICATIONFAILED] authorization identity not allowed"), Transition::None);
    }
    let (Ok(user), Ok(pw)) = (std::str::from_utf8(authc), std::str::from_utf8(pw)) else {
        return (no_code(tag, "AUTHENTICATIONFAILED", "authentication failed"), Transition::None);
    };
    login(conn, tag, user.to_string(), pw.to_string()).await
}

/// Make the user's own Drafts and Templates on their first login (one
/// record each, once). A failure is logged: the session goes on without.
async fn ensure_private(conn: &Conn, view: &View) {
    let own = view.user.private_mailbox();
    let have = view.categories(&own);
    for (name, _) in crate::imap::view::PRIVATE {
        if have.iter().any(|(_, n)| n == name) {
            continue;
        }
        let a = Audit::user(&view.user.name, conn.source(), "imap", "create").mailbox(&own).folder(name);
        let ch = crate::store::Change::CreateCategory { mailbox: own.clone(), name: name.to_string() };
        match conn.ctx.store.commit(a, ch).await {
            Ok(_) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => tracing::warn!(user = %view.user.name, folder = name, error = %e, "cannot make the user's own folder"),
        }
    }
}

/// What `user` sees, with the server's settings.
pub fn new_view(conn: &Conn, user: Arc<User>) -> View {
    View::new(user, conn.ctx.store.clone())
        .with_overdue_after(conn.ctx.overdue_after)
        .with_rules(conn.ctx.rules())
        .with_shared(conn.ctx.metas.clone())
        .with_recent(conn.ctx.recent.clone())
}

async fn login(conn: &Conn, tag: Tag<'static>, name: String, password: String) -> (Status<'static>, Transition) {
    match conn.ctx.auth.login(&name, &password, conn.peer.ip()).await {
        Ok(user) => {
            let Some(guard) = conn.ctx.acquire(&user.name) else {
                return (no_code(tag, "LIMIT", "too many sessions for this user"), Transition::None);
            };
            let a = Audit::user(&user.name, conn.source(), "imap", "login").identity(user.dn.as_deref());
            if !conn.audit_only(a).await {
                return (unavailable(tag), Transition::None);
            }
            let view = new_view(conn, user);
            ensure_private(conn, &view).await;
            let authed = Box::new(Authed { view, _guard: guard, enabled: Default::default() });
            // The capabilities change with login (LITERAL+, APPENDLIMIT).
            let caps = anystate::capabilities(conn, true);
            let code = Vec1::try_from(caps).ok().map(Code::Capability);
            (tagged(tag, StatusKind::Ok, code, "logged in"), Transition::Authenticate(authed))
        }
        Err(e) => {
            let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
            let reason = match &e {
                crate::auth::AuthError::Rejected => "failed".to_string(),
                other => other.to_string(),
            };
            conn.audit_only(Audit::user(&shown, conn.source(), "imap", "login").outcome(reason)).await;
            let status = match &e {
                // Not the user's fault, and not "wrong password": say why.
                crate::auth::AuthError::Unavailable(why) => no_code(tag, "UNAVAILABLE", &format!("directory unavailable: {why}")),
                _ => no_code(tag, "AUTHENTICATIONFAILED", "authentication failed"),
            };
            (status, Transition::None)
        }
    }
}
