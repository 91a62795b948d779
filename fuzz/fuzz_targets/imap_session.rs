//! An IMAP server session fed arbitrary client bytes, before and after
//! login.
//!
//! INTERIM: pecgate's own IMAP session (src/imap/session.rs) cannot be
//! driven without a socket yet (it is being rewritten so it can). Until
//! then this target drives the layer under it, imap-next's sans-I/O
//! `Server` with the same options pecgate gives it (literal and command
//! limits), answering each event the way pecgate does in outline
//! (capability-less OK/NO/BAD, LOGIN and AUTHENTICATE, IDLE/DONE, LOGOUT).
//! It keeps the input format, seeds and script wiring in place; the body
//! is to be replaced by a call into pecgate's session.
//!
//! Input: byte 0 = options (bit 0: start logged in, i.e. post-auth; bit 1:
//! refuse IDLE; bit 2: logins fail), byte 1 = chunk size (0: all at once),
//! the rest = what the client sends.
#![no_main]

use imap_next::imap_types::auth::AuthenticateData;
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::{CommandContinuationRequest, Greeting, Status};
use imap_next::server::{Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that "literal too long" and "command too long" are
/// reachable with the fuzzer's input sizes (pecgate: its configured
/// `max_literal_size`, and 64 KiB more for the command).
const MAX_LITERAL: u32 = 2048;
const MAX_COMMAND: u32 = MAX_LITERAL + 1024;
/// Malformed commands tolerated (pecgate closes after a few as well).
const MAX_BAD: u32 = 50;

fn ok(s: &mut Server, tag: Tag<'static>, text: &'static str) {
    s.enqueue_status(Status::ok(Some(tag), None, text).expect("valid text"));
}

/// The answer to a login attempt (LOGIN or AUTHENTICATE).
fn login(already: bool, opts: u8, tag: Tag<'static>, authed: &mut bool) -> Status<'static> {
    if already {
        Status::bad(Some(tag), None, "already logged in")
    } else if opts & 4 != 0 {
        Status::no(Some(tag), None, "invalid credentials")
    } else {
        *authed = true;
        Status::ok(Some(tag), None, "logged in")
    }
    .expect("valid text")
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else { return };
    let Some((&chunk, input)) = rest.split_first() else { return };
    let mut options = Options::default();
    options.max_literal_size = MAX_LITERAL;
    options.max_command_size = MAX_COMMAND;
    let greeting = Greeting::ok(None, "pecgate IMAP ready").expect("valid greeting");
    let mut server = Server::new(options, greeting);
    let mut authed = opts & 1 != 0;
    let mut bad = 0u32;
    let mut auth_tag: Option<Tag<'static>> = None;
    let mut idle_tag: Option<Tag<'static>> = None;
    let mut out = 0usize;
    let chunk = if chunk == 0 { input.len().max(1) } else { usize::from(chunk) };
    'feed: for piece in input.chunks(chunk) {
        server.enqueue_input(piece);
        loop {
            match server.next() {
                Ok(Event::GreetingSent { .. }) | Ok(Event::ResponseSent { .. }) => {}
                Ok(Event::CommandReceived { command }) => {
                    let tag = command.tag;
                    match command.body {
                        CommandBody::Capability | CommandBody::Noop => ok(&mut server, tag, "done"),
                        CommandBody::Logout => {
                            server.enqueue_status(Status::bye(None, "bye").expect("valid"));
                            ok(&mut server, tag, "logged out");
                            break 'feed;
                        }
                        CommandBody::Login { .. } if authed => {
                            server.enqueue_status(Status::bad(Some(tag), None, "already logged in").expect("valid"));
                        }
                        CommandBody::Login { .. } if opts & 4 != 0 => {
                            server.enqueue_status(Status::no(Some(tag), None, "invalid credentials").expect("valid"));
                        }
                        CommandBody::Login { .. } => {
                            authed = true;
                            ok(&mut server, tag, "logged in");
                        }
                        CommandBody::StartTLS => {
                            server.enqueue_status(Status::bad(Some(tag), None, "TLS already active").expect("valid"));
                        }
                        _ if !authed => {
                            server.enqueue_status(Status::bad(Some(tag), None, "log in first").expect("valid"));
                        }
                        _ => ok(&mut server, tag, "completed"),
                    }
                }
                Ok(Event::CommandAuthenticateReceived { command_authenticate: c }) => {
                    if c.initial_response.is_some() || authed {
                        let status = login(authed, opts, c.tag, &mut authed);
                        server.authenticate_finish(status).expect("in AUTHENTICATE");
                    } else {
                        let ccr = CommandContinuationRequest::basic(None, "go on").expect("valid");
                        server.authenticate_continue(ccr).expect("in AUTHENTICATE");
                        auth_tag = Some(c.tag);
                    }
                }
                Ok(Event::AuthenticateDataReceived { authenticate_data }) => {
                    let tag = auth_tag.take().expect("AUTHENTICATE in progress");
                    let status = match authenticate_data {
                        AuthenticateData::Cancel => Status::bad(Some(tag), None, "cancelled").expect("valid"),
                        AuthenticateData::Continue(_) => login(authed, opts, tag, &mut authed),
                    };
                    server.authenticate_finish(status).expect("in AUTHENTICATE");
                }
                Ok(Event::IdleCommandReceived { tag }) => {
                    if opts & 2 != 0 || !authed {
                        server.idle_reject(Status::bad(Some(tag), None, "no IDLE").expect("valid")).expect("in IDLE");
                    } else {
                        let ccr = CommandContinuationRequest::basic(None, "idling").expect("valid");
                        server.idle_accept(ccr).expect("in IDLE");
                        idle_tag = Some(tag);
                    }
                }
                Ok(Event::IdleDoneReceived) => {
                    let tag = idle_tag.take().expect("IDLE in progress");
                    ok(&mut server, tag, "IDLE done");
                }
                Err(Interrupt::Io(Io::NeedMoreInput)) => break,
                Err(Interrupt::Io(Io::Output(bytes))) => {
                    out += bytes.len();
                    assert!(bytes.ends_with(b"\r\n"), "output not CRLF-terminated: {bytes:?}");
                }
                Err(Interrupt::Error(_)) => {
                    bad += 1;
                    if bad > MAX_BAD {
                        break 'feed;
                    }
                    server.enqueue_status(Status::bad(None, None, "malformed").expect("valid"));
                }
            }
        }
    }
    // Responses are bounded by what was asked (no amplification loop).
    assert!(out <= 256 + input.len() * 64, "{out} bytes out for {} in", input.len());
});
