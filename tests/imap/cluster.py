"""Two pecgate nodes on one shared archive (tests/cluster.rs): what a
client does on node A is seen on node B, and announced to B's IDLE
sessions within a second.

argv: PORT_A CAFILE DATA PORT_B (both nodes use the same certificate).
"""

import imaplib
import socket
import sys
import time

from common import CTX, PW, check, done, login

PORT_B = int(sys.argv[4])


def login_b(user):
    m = imaplib.IMAP4_SSL("127.0.0.1", PORT_B, ssl_context=CTX)
    typ, _ = m.login(user, PW)
    check(typ == "OK", f"login {user} on node B")
    return m


MSG = (
    b"From: ufficio@comune.example.it\r\n"
    b"To: protocollo@pec.example.it\r\n"
    b"Subject: Contratto di fornitura 2026\r\n"
    b"Message-ID: <cluster-1@comune.example.it>\r\n"
    b"Date: Sun, 06 Dec 2026 06:00:00 +0100\r\n"
    b"\r\n"
    b"Testo del contratto.\r\n"
)

a = login("mario")
b = login_b("mario")

# A category created on A exists on B.
typ, _ = a.create("prot/Contratti")
check(typ == "OK", "CREATE prot/Contratti on A")
deadline = time.time() + 2
names = b""
while time.time() < deadline:
    typ, data = b.list("prot/", "*")
    names = b" ".join(d for d in data if d)
    if b"Contratti" in names:
        break
    time.sleep(0.1)
check(b"prot/Contratti" in names, "the category is listed on B", names)

# B waits in IDLE on the category; A appends to it.
typ, data = b.select("prot/Contratti")
check(typ == "OK" and data[0] == b"0", "B selects the empty category", data)
tag = b._new_tag()
b.send(tag + b" IDLE\r\n")
line = b.readline()
check(line.startswith(b"+"), "B is idling", line)

t0 = time.time()
typ, data = a.append("prot/Contratti", None, None, MSG)
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND on A", data)
uid_a = int(data[0].split()[2].rstrip(b"]"))
b.sock.settimeout(5)
got = b""
try:
    while b"EXISTS" not in got:
        got += b.readline()
except socket.timeout:
    pass
elapsed = time.time() - t0
check(b"* 1 EXISTS" in got, "B's IDLE hears of the message appended on A", got)
check(elapsed < 1.0, "within a second", f"{elapsed:.3f} s")
b.sock.settimeout(None)
b.send(b"DONE\r\n")
while True:
    line = b.readline()
    if line.startswith(tag):
        break

# The same message, the same UID, the same bytes on both nodes.
typ, data = b.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
check(typ == "OK" and data and data[0] is not None, "FETCH on B", data)
check(f"UID {uid_a} ".encode() in data[0][0], "the UID A assigned", data[0][0])
check(data[0][1] == MSG, "the bytes A stored", data[0][1])

# A flag set on B is seen on A.
typ, _ = b.uid("STORE", str(uid_a), "+FLAGS", "(\\Flagged)")
check(typ == "OK", "STORE \\Flagged on B")
a.select("prot/Contratti")
deadline = time.time() + 2
flags = b""
while time.time() < deadline:
    typ, data = a.uid("FETCH", str(uid_a), "(FLAGS)")
    flags = data[0] or b""
    if b"\\Flagged" in flags:
        break
    time.sleep(0.1)
    a.noop()
check(b"\\Flagged" in flags, "A sees B's flag", flags)

# Both nodes append to the same folder at once: distinct UIDs.
for i in range(5):
    for m, who in ((a, "A"), (b, "B")):
        body = MSG.replace(b"cluster-1", f"cluster-{who}-{i}".encode())
        typ, data = m.append("prot/Contratti", None, None, body)
        check(typ == "OK", f"APPEND {i} on {who}", data)
for m, who in ((a, "A"), (b, "B")):
    deadline = time.time() + 2
    while time.time() < deadline:
        typ, data = m.select("prot/Contratti")
        if data[0] == b"11":
            break
        time.sleep(0.1)
    check(data[0] == b"11", f"{who} sees the 11 messages", data)
    typ, data = m.uid("SEARCH", "ALL")
    uids = data[0].split()
    check(len(set(uids)) == 11, f"11 distinct UIDs on {who}", data)
    print("UIDS", who, b",".join(uids).decode())

a.logout()
b.logout()
done()
