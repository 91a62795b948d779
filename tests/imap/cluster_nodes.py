"""Three pecgate nodes on one shared archive (tests/cluster_nodes.rs), one
of them polling the provider (Dovecot): what the poller archives is
announced to IDLE sessions on every node within a second of each other;
a flag set on one node is seen on another; an IDLE session on one node
hears of a message APPENDed through another.

argv: PORT_A CAFILE DATA PORTS PROVIDER_PORT PROVIDER_USER PROVIDER_PASS STEP...
PORTS: the nodes' IMAP ports, comma-separated (the first is PORT_A's
node, through which the APPEND step goes; the last is where the flag is
looked for and where IDLE waits for that APPEND). STEP: `see:FIRST:COUNT`
(COUNT messages numbered from FIRST put on the provider, waited for in
IDLE on every node), `flags` (\\Seen set on the second node, seen on the
last), `append` (a folder created and a message APPENDed through the first
node, IDLE on the last).
"""

import imaplib
import re
import socket
import sys
import threading
import time

from common import CTX, PW, check, done

PORTS = [int(p) for p in sys.argv[4].split(",")]
PROVIDER_PORT, PROVIDER_USER, PROVIDER_PASS = int(sys.argv[5]), sys.argv[6], sys.argv[7]
STEPS = sys.argv[8:]
EXISTS_RE = re.compile(rb"^\* (\d+) EXISTS")


def login(port):
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=CTX)
    typ, _ = m.login("mario", PW)
    check(typ == "OK", f"login on node :{port}")
    return m


def message(i):
    body = "".join(f"Riga {k} dell'atto numero {i}, protocollo in arrivo.\r\n" for k in range(40))
    return (
        f"From: Ufficio {i} <ufficio{i}@comune.example.it>\r\n"
        f"To: {PROVIDER_USER}\r\n"
        f"Subject: Atto {i}\r\n"
        f"Message-ID: <nodes-{i}@pecgate.test>\r\n"
        f"Date: Sun, 06 Dec 2026 06:00:00 +0100\r\n"
        f"\r\n{body}"
    ).encode()


class Idler(threading.Thread):
    """An IDLE session on one node's INBOX, noting when it is told of
    `target` messages."""

    def __init__(self, port, folder="INBOX"):
        super().__init__(daemon=True)
        self.port = port
        self.m = login(port)
        typ, data = self.m.select(folder)
        check(typ == "OK", f"SELECT {folder} on :{port}", data)
        self.exists = int(data[0])
        self.target = None
        self.seen_at = None
        self.lines = []
        self.tag = self.m._new_tag()
        self.m.send(self.tag + b" IDLE\r\n")
        line = self.m.readline()
        check(line.startswith(b"+"), f"idling on :{port}", line)

    def run(self):
        self.m.sock.settimeout(30)
        try:
            while True:
                line = self.m.readline()
                if not line:
                    return
                self.lines.append(line)
                got = EXISTS_RE.match(line)
                if got and self.target is not None and int(got.group(1)) >= self.target:
                    self.seen_at = time.time()
                    return
        except (socket.timeout, OSError):
            return

    def finish(self):
        self.m.sock.settimeout(10)
        self.m.send(b"DONE\r\n")
        while True:
            line = self.m.readline()
            if not line:
                check(False, f"the end of IDLE on :{self.port}")
            if line.startswith(self.tag):
                break
        self.m.logout()


def see(first, count):
    idlers = [Idler(p) for p in PORTS]
    base = idlers[0].exists
    check(all(i.exists == base for i in idlers), "every node has the same INBOX", [i.exists for i in idlers])
    for i in idlers:
        i.target = base + count
        i.start()
    t0 = time.time()
    p = imaplib.IMAP4("127.0.0.1", PROVIDER_PORT)
    p.login(PROVIDER_USER, PROVIDER_PASS)
    for n in range(first, first + count):
        typ, data = p.append("INBOX", None, None, message(n))
        check(typ == "OK", f"provider APPEND {n}", data)
    p.logout()
    for i in idlers:
        i.join(40)
    for i in idlers:
        check(i.seen_at is not None, f"IDLE on :{i.port} is told of {i.target} messages", i.lines[-5:])
    times = [i.seen_at - t0 for i in idlers]
    spread = max(times) - min(times)
    print("SEEN", " ".join(f":{i.port}={t:.3f}s" for i, t in zip(idlers, times)), f"spread={spread:.3f}s")
    check(spread < 1.0, f"{count} messages seen on every node within a second of each other", f"{spread:.3f} s")
    for i in idlers:
        i.finish()
    # The same messages on every node: the same UIDs, the same bytes.
    seen = []
    for port in PORTS:
        m = login(port)
        m.select("INBOX", readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        check(typ == "OK", f"FETCH on :{port}", data)
        ids = sorted(
            (int(re.search(rb"UID (\d+)", d[0]).group(1)), d[1].strip()) for d in data if isinstance(d, tuple)
        )
        seen.append(ids)
        m.logout()
    check(all(s == seen[0] for s in seen), "every node lists the same UIDs and Message-IDs", seen)
    check(len(seen[0]) == base + count, "every message once", len(seen[0]))


def flags():
    b, c = login(PORTS[1]), login(PORTS[-1])
    b.select("INBOX")
    c.select("INBOX")
    typ, data = c.uid("SEARCH", "UNSEEN")
    unseen = data[0].split()
    check(typ == "OK" and unseen, "unseen messages on the last node", data)
    uid = unseen[-1].decode()
    typ, data = b.uid("STORE", uid, "+FLAGS", "(\\Seen)")
    check(typ == "OK", f"STORE \\Seen on UID {uid} through the second node", data)
    t0 = time.time()
    got = b""
    while time.time() - t0 < 2:
        c.noop()
        typ, data = c.uid("FETCH", uid, "(FLAGS)")
        got = data[0] or b""
        if b"\\Seen" in got:
            break
        time.sleep(0.05)
    check(b"\\Seen" in got, "the last node sees the \\Seen set through the second", got)
    print(f"FLAG seen after {time.time() - t0:.3f}s")
    # Only that message: its neighbours are still unseen there.
    typ, data = c.uid("SEARCH", "UNSEEN")
    check(len(data[0].split()) == len(unseen) - 1, "one message less unseen", data)
    b.logout()
    c.logout()


def append():
    """A folder created and a message APPENDed through the first node (the
    provider's INBOX takes no APPEND): the last node's IDLE on it is told."""
    a = login(PORTS[0])
    typ, data = a.create("prot/Atti")
    check(typ == "OK", "CREATE prot/Atti through the first node", data)
    c = login(PORTS[-1])
    t0 = time.time()
    while time.time() - t0 < 2:
        typ, data = c.select("prot/Atti")
        if typ == "OK":
            break
        time.sleep(0.05)
    check(typ == "OK", "the folder created through the first node is there on the last", data)
    c.logout()
    c = Idler(PORTS[-1], "prot/Atti")
    c.target = c.exists + 1
    c.start()
    msg = message(9999).replace(b"Atto 9999", b"Atto consegnato a mano")
    t0 = time.time()
    typ, data = a.append("prot/Atti", None, None, msg)
    check(typ == "OK", "APPEND through the first node", data)
    c.join(10)
    check(c.seen_at is not None, "the last node's IDLE is told of the message APPENDed through the first", c.lines)
    elapsed = c.seen_at - t0
    print(f"APPEND seen after {elapsed:.3f}s")
    check(elapsed < 1.0, "within a second", f"{elapsed:.3f} s")
    c.finish()
    m = login(PORTS[-1])
    m.select("prot/Atti", readonly=True)
    typ, data = m.uid("FETCH", "*", "(BODY.PEEK[])")
    check(typ == "OK" and data[0][1] == msg, "the bytes APPENDed through the first node", data[0])
    m.logout()
    a.logout()


for step in STEPS:
    if step.startswith("see:"):
        _, first, count = step.split(":")
        see(int(first), int(count))
    elif step == "flags":
        flags()
    elif step == "append":
        append()
    else:
        check(False, "a known step", step)
done()
