//! Commands valid in every state: CAPABILITY, NOOP/CHECK, LOGOUT, ID.

use imap_next::imap_types::auth::AuthMechanism;
use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::extensions::quota::Resource;
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::response::{Capability, Data};

use super::super::fetch;
use super::super::io::Io;
use super::super::respond::{bye, cap, cap_owned, istr, ok};
use super::{Conn, State, Transition};

/// What the server offers in `state`. Before login: `LITERAL-` (literals
/// of at most 4 KiB, RFC 7888) and the login mechanisms; after: `LITERAL+`
/// and `APPENDLIMIT` (the largest message APPEND takes).
pub fn capabilities(conn: &Conn, authed: bool) -> Vec<Capability<'static>> {
    let mut c = vec![Capability::Imap4Rev1, Capability::SaslIr];
    if authed {
        c.push(Capability::LiteralPlus);
    } else {
        c.push(Capability::LiteralMinus);
        if conn.may_login() {
            c.push(Capability::Auth(AuthMechanism::Plain));
        } else {
            c.push(Capability::LoginDisabled);
        }
        if !conn.tls && conn.starttls_listener {
            c.push(Capability::StartTls);
        }
    }
    c.extend([
        Capability::Id,
        Capability::Enable,
        Capability::Idle,
        Capability::Namespace,
        Capability::UidPlus,
        Capability::Move,
        Capability::Unselect,
        cap("SPECIAL-USE"),
        cap("CHILDREN"),
        Capability::Quota,
        Capability::QuotaRes(Resource::Storage),
        Capability::Sort(None),
        Capability::Thread(ThreadingAlgorithm::OrderedSubject),
        Capability::Thread(ThreadingAlgorithm::References),
        Capability::CondStore,
        Capability::QResync,
        Capability::Binary,
        cap("ESEARCH"),
        cap("ESORT"),
        cap("SORT=DISPLAY"),
        cap("CONTEXT=SEARCH"),
        cap("CONTEXT=SORT"),
        cap("PARTIAL"),
        cap("LIST-EXTENDED"),
        cap("LIST-STATUS"),
        cap("MULTIAPPEND"),
        cap("CATENATE"),
        cap("NOTIFY"),
    ]);
    if authed {
        c.extend(cap_owned(format!("APPENDLIMIT={}", conn.ctx.cfg.max_literal_size)));
    }
    c
}

pub fn capability(conn: &Conn, state: &State, io: &mut Io, tag: Tag<'static>) -> Transition {
    if let Ok(c) = Vec1::try_from(capabilities(conn, state.user().is_some())) {
        io.data(Data::Capability(c));
    }
    io.status(ok(tag, "CAPABILITY done"));
    Transition::None
}

pub fn logout(io: &mut Io, tag: Tag<'static>) -> Transition {
    io.status(bye("logging out"));
    io.status(ok(tag, "LOGOUT done"));
    Transition::Logout
}

pub fn id(io: &mut Io, tag: Tag<'static>) -> Transition {
    let params = vec![
        (istr("name"), fetch::nstr(Some(b"pecgate"))),
        (istr("version"), fetch::nstr(Some(env!("CARGO_PKG_VERSION").as_bytes()))),
    ];
    io.data(Data::Id { parameters: Some(params) });
    io.status(ok(tag, "ID done"));
    Transition::None
}
