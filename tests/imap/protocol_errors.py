"""Syntax errors and commands in the wrong state get a TAGGED answer, and
the connection stays usable.

A client waits for the tagged completion of each command it sends; an
untagged `* BAD` alone (what the parser used to answer for any line it
could not parse, tag or not) leaves imaplib, Thunderbird or fetchmail
waiting forever. A line whose tag can be read gets `<tag> BAD`; only a line
with no readable tag gets `* BAD`. Commands valid in another state get a
tagged BAD or NO, never silence.

argv: port cafile data_dir. Users: mario (prot: read, triage, send,
delete). prot/INBOX holds a few messages.
"""
import imaplib
import socket
import time

from common import check, done, login
from helpers import Raw

WAIT = 5.0


def tagged(r, tag, line, kinds, what):
    """Send `line`; its own tag must come back with one of `kinds` within
    WAIT seconds."""
    r.send(line)
    seen, got = r.until(tag.encode() + b" ", WAIT)
    good = got is not None and any(got.startswith(f"{tag} {k}".encode()) for k in kinds)
    check(good, what, f"got {got!r} after {seen!r}" if got else f"no `{tag} ...` line in {WAIT} s, only {seen!r}")


def untagged_bad(r, line, what):
    r.send(line)
    got = r.line(WAIT)
    check(got is not None and got.startswith(b"* BAD"), what, got)


n_noop = 0


def usable(r, after):
    global n_noop
    n_noop += 1
    tag = f"z{n_noop}"
    seen, got = r.command(tag, "NOOP", WAIT)
    check(got is not None and got.startswith(f"{tag} OK".encode()),
          f"the connection is still usable after {after} ({tag} NOOP -> {tag} OK)", (seen, got))


# ---- before login
r = Raw()
tagged(r, "x5", b'x5 APPEND "pec1/INBOX" "x"\r\n', ("BAD", "NO"),
       'before login, `x5 APPEND "pec1/INBOX" "x"` (no literal) gets x5 BAD or x5 NO')
usable(r, "x5 before login")
tagged(r, "a1", b"a1 SELECT INBOX\r\n", ("BAD", "NO"), "before login, a1 SELECT INBOX gets a1 BAD or NO")
tagged(r, "a2", b"a2 FETCH 1 FLAGS\r\n", ("BAD", "NO"), "before login, a2 FETCH 1 FLAGS gets a2 BAD or NO")
untagged_bad(r, b"\x00\x01\r\n", "before login, a line without a readable tag (NUL SOH) gets * BAD")
usable(r, "the untagged BAD before login")
r.close()

# ---- logged in, nothing selected
r = Raw()
check(r.login("mario"), "raw login as mario")
tagged(r, "a3", b"a3 FETCH 1 FLAGS\r\n", ("BAD", "NO"), "without SELECT, a3 FETCH 1 FLAGS gets a3 BAD or NO")
tagged(r, "a4", b"a4 EXPUNGE\r\n", ("BAD", "NO"), "without SELECT, a4 EXPUNGE gets a4 BAD or NO")
usable(r, "commands that need a selected folder")

# ---- selected
_, sel = r.command("s1", "SELECT prot/INBOX")
check(sel is not None and sel.startswith(b"s1 OK"), "raw SELECT prot/INBOX", sel)
for tag, line, what in [
    ("x1", b"x1 SEARCH 0:*\r\n", "x1 SEARCH 0:* (sequence number 0)"),
    ("x2", b"x2 FETCH 1 ((((((((FLAGS))))))))\r\n", "x2 FETCH 1 ((((((((FLAGS)))))))) (nested lists)"),
    ("x3", b'x3 CREATE "\xff\xfe"\r\n', 'x3 CREATE "\\xff\\xfe" (8-bit bytes in a quoted string)'),
    ("x6", b"x6 FOO\r\n", "x6 FOO (unknown command)"),
]:
    tagged(r, tag, line, ("BAD",), f"{what} gets {tag} BAD within {WAIT:.0f} s")
    usable(r, tag)
untagged_bad(r, b"\x00\x01\r\n", "a line of NUL SOH (no readable tag) gets * BAD")
usable(r, "the NUL SOH line")
untagged_bad(r, b")(\r\n", "the line `)(` (no readable tag) gets * BAD")
usable(r, "the `)(` line")
r.close()

# ---- imaplib must not hang on a syntax error it sends
for args in [("SEARCH", "0:*"), ("FETCH", "1", "((((((((FLAGS))))))))"), ("FETCH", "1", "(FLAGS")]:
    m = login("mario")
    m.select("prot/INBOX")
    m.sock.settimeout(WAIT)
    shown = " ".join(args)
    t0 = time.monotonic()
    try:
        typ, data = m._simple_command(*args)
        good, outcome = True, f"returned {typ} {data!r}"
    except imaplib.IMAP4.abort as e:
        good, outcome = False, f"connection aborted: {e}"
    except imaplib.IMAP4.error as e:
        good, outcome = True, f"raised IMAP4.error: {e}"
    except (socket.timeout, TimeoutError, OSError) as e:
        good, outcome = False, f"no tagged answer after {time.monotonic() - t0:.1f} s ({e!r})"
    check(good, f"imaplib `{shown}` returns or raises IMAP4.error within {WAIT:.0f} s", outcome)
    if good:
        check(m.noop()[0] == "OK", f"imaplib NOOP after `{shown}`")
        m.logout()
    else:
        m.shutdown()
done()
