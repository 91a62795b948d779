"""What the protocol and permission scripts share beyond common.py: a raw
TLS connection spoken to byte by byte (for input imaplib cannot send), a
flood of bytes that watches for the server's answer and close, and imaplib
helpers that report what the server said instead of raising (a SELECT
answered READ-ONLY, a non-synchronising APPEND).
"""

import imaplib
import re
import select
import socket
import ssl
import time

from common import CTX, PORT, PW, check

# ---------------------------------------------------------------- raw TLS


class Raw:
    """One TLS connection to the gateway; reads response lines (literals
    inlined) with a deadline each, never blocking for longer."""

    def __init__(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
        self.t = CTX.wrap_socket(s, server_hostname="127.0.0.1")
        self.buf = b""
        self.eof = False
        self.greeting = self.line(10)

    def send(self, data):
        self.t.sendall(data)

    def close(self):
        try:
            self.t.close()
        except OSError:
            pass

    def _fill(self, deadline):
        """Read more into the buffer; False on timeout or end of stream."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.t.settimeout(remaining)
        try:
            chunk = self.t.recv(65536)
        except socket.timeout:
            return False
        except (ssl.SSLError, OSError):
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def line(self, timeout=5.0):
        """The next response line without its CRLF (a literal's bytes
        inlined after `{n}` CRLF), or None on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        out = b""
        while True:
            i = self.buf.find(b"\r\n")
            while i < 0:
                if not self._fill(deadline):
                    return None
                i = self.buf.find(b"\r\n")
            part, self.buf = self.buf[:i], self.buf[i + 2:]
            out += part
            lit = re.search(rb"\{(\d+)\+?\}$", part)
            if not lit:
                return out
            n = int(lit.group(1))
            while len(self.buf) < n:
                if not self._fill(deadline):
                    return None
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def until(self, prefix, timeout=5.0):
        """Read lines until one starts with `prefix` (bytes): (lines before
        it, that line or None on timeout / end of stream)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            ln = self.line(left) if left > 0 else None
            if ln is None:
                return seen, None
            if ln.startswith(prefix):
                return seen, ln
            seen.append(ln)

    def command(self, tag, text, timeout=5.0):
        """Send `tag text` CRLF; (untagged lines, tagged line or None)."""
        if isinstance(text, str):
            text = text.encode()
        self.send(tag.encode() + b" " + text + b"\r\n")
        return self.until(tag.encode() + b" ", timeout)

    def login(self, user):
        _, done = self.command("L0", f"LOGIN {user} {PW}")
        return done is not None and done.startswith(b"L0 OK")

    def readable(self):
        """Is there something to read (data, or the end of the stream)?"""
        if self.t.pending():
            return True
        try:
            return bool(select.select([self.t], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def wait_close(self, deadline):
        """Read until the server closes the connection or `deadline`
        (monotonic) passes; the time of the close, or None."""
        while not self.eof and time.monotonic() < deadline:
            if not self._fill(deadline):
                break
        return time.monotonic() if self.eof else None


def flood(r, first, chunk, total, mark=None, grace=2.0):
    """Send `first`, then `chunk` repeatedly until `total` bytes of chunks
    have been sent or the server closes the connection, reading what it
    says after each chunk. Then wait up to `grace` seconds for a close.

    Returns a dict: start (monotonic, after `first` was sent), sent (bytes
    of chunks), passed (when `sent` first exceeded `mark`), closed (when
    the close was seen, or None), data (everything the server said
    meanwhile), how (what ended the sending)."""
    r.t.settimeout(2)
    r.send(first)
    start = time.monotonic()
    out = {"start": start, "sent": 0, "passed": None, "closed": None, "how": "limit"}
    pos = len(r.buf)
    while out["sent"] < total:
        while r.readable() and not r.eof:
            if not r._fill(time.monotonic() + 0.2):
                break
        if r.eof:
            out["closed"], out["how"] = time.monotonic(), "end of stream while sending"
            break
        try:
            r.t.settimeout(2)
            r.t.sendall(chunk)
        except socket.timeout:
            # The server stopped reading without closing.
            out["how"] = "send blocked for 2 s"
            break
        except (ssl.SSLError, OSError) as e:
            out["closed"], out["how"] = time.monotonic(), f"send failed: {e!r}"
            break
        out["sent"] += len(chunk)
        if mark is not None and out["passed"] is None and out["sent"] > mark:
            out["passed"] = time.monotonic()
    if out["closed"] is None:
        out["closed"] = r.wait_close(time.monotonic() + grace)
    else:
        # What the server said just before closing.
        r.wait_close(time.monotonic() + 1.0)
    out["data"] = r.buf[pos:] if pos <= len(r.buf) else r.buf
    r.close()
    return out


# ---------------------------------------------------------------- imaplib


def session(user, timeout=15):
    """Like common.login, with a socket timeout: a command the server
    leaves without a tagged answer raises TimeoutError instead of hanging
    the script."""
    m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX, timeout=timeout)
    typ, _ = m.login(user, PW)
    check(typ == "OK", f"login {user}")
    return m


def code_of(data):
    """The response code of a tagged answer's text (`NOPERM`), or ''."""
    t = data[0] if data else b""
    if isinstance(t, tuple):
        t = t[0]
    mo = re.match(rb"\[([A-Za-z-]+)", t or b"")
    return mo.group(1).decode().upper() if mo else ""


def text_of(data):
    t = data[0] if data else b""
    if isinstance(t, tuple):
        t = t[0]
    return (t or b"").decode("utf-8", "replace")


def select_info(m, mailbox):
    """SELECT `mailbox` through imaplib, also when answered READ-ONLY
    (imaplib's select() raises then): (typ, info), info holding `access`
    ('READ-WRITE', 'READ-ONLY' or None), `permanentflags` (list of str, or
    None), `exists`, `uidvalidity`, `uidnext` (int or None), `text`."""
    m.untagged_responses.clear()
    try:
        typ, data = m._simple_command("SELECT", mailbox)
    except m.error as e:
        return "BAD", {"text": str(e), "access": None, "permanentflags": None,
                       "exists": None, "uidvalidity": None, "uidnext": None}
    ur = m.untagged_responses
    if typ == "OK":
        m.state = "SELECTED"
        # imaplib refuses every later command once it has seen READ-ONLY,
        # unless it asked for it: let the server decide.
        m.is_readonly = "READ-ONLY" in ur

    def num(key):
        v = ur.get(key)
        try:
            return int(v[-1]) if v and v[-1] is not None else None
        except (TypeError, ValueError):
            return None

    access = "READ-WRITE" if "READ-WRITE" in ur else "READ-ONLY" if "READ-ONLY" in ur else None
    pf = None
    if "PERMANENTFLAGS" in ur and ur["PERMANENTFLAGS"][-1] is not None:
        pf = [f.decode() for f in re.findall(rb"[^\s()]+", ur["PERMANENTFLAGS"][-1])]
    info = {
        "access": access,
        "permanentflags": pf,
        "exists": num("EXISTS"),
        "uidvalidity": num("UIDVALIDITY"),
        "uidnext": num("UIDNEXT"),
        "text": text_of(data),
    }
    return typ, info


def status(m, mailbox, item="MESSAGES"):
    """One STATUS item as an int, or None if STATUS is refused."""
    try:
        typ, data = m.status(mailbox, f"({item})")
    except m.error:
        return None
    if typ != "OK" or not data or data[0] is None:
        return None
    mo = re.search(rb"\b" + item.encode() + rb" (\d+)", data[0])
    return int(mo.group(1)) if mo else None


def append_nonsync(m, mailbox, flags, raw):
    """APPEND with a non-synchronising literal `{n+}` (LITERAL+), as
    Thunderbird sends it: (typ, data) of the tagged answer."""
    tag = m._new_tag()
    line = tag + b" APPEND " + mailbox.encode() + b" " + flags.encode() + b" {%d+}\r\n" % len(raw)
    m.send(line + raw + b"\r\n")
    try:
        return m._command_complete("APPEND", tag)
    except m.abort:
        raise
    except m.error as e:
        return "BAD", [str(e).encode()]


def flags_of(m, uid):
    """The FLAGS of message `uid` in the selected folder (list of str), or
    None if it is not there."""
    if uid is None:
        return None
    typ, data = m.uid("FETCH", str(uid), "(FLAGS)")
    if typ != "OK":
        return None
    # imaplib hands back every FETCH response received since the last
    # command that collected them (unsolicited flag updates of other
    # messages too): take the one of this UID.
    for d in data:
        if isinstance(d, tuple):
            d = d[0]
        if d and re.search(rb"\bUID %d\b" % uid, d):
            mo = re.search(rb"FLAGS \(([^)]*)\)", d)
            if mo:
                return mo.group(1).decode().split()
    return None


def uid_of(m, message_id):
    """The UID of the message with this Message-ID in the selected folder
    (SEARCH HEADER), or None."""
    typ, data = m.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
    if typ != "OK" or not data or not data[0]:
        return None
    uids = data[0].split()
    return int(uids[0]) if uids else None


def list_folders(m):
    """LIST "" "*": {name: [attributes]}."""
    typ, data = m.list('""', '"*"')
    out = {}
    for d in data or []:
        if not d:
            continue
        mo = re.match(rb'\(([^)]*)\) (?:NIL|"[^"]*") (.+)$', d)
        if not mo:
            continue
        name = mo.group(2).decode()
        if name.startswith('"') and name.endswith('"'):
            name = name[1:-1]
        out[name] = mo.group(1).decode().split()
    return out


def message_ids(m):
    """{Message-ID: UID} of the selected folder's messages (an empty folder
    gives {})."""
    out = {}
    try:
        typ, data = m.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    except m.error:
        return out
    if typ != "OK":
        return out
    for d in data or []:
        if not isinstance(d, tuple):
            continue
        u = re.search(rb"UID (\d+)", d[0])
        mid = re.search(rb"<[^>]*>", d[1] or b"")
        if u and mid:
            out[mid.group(0).decode()] = int(u.group(1))
    return out
