"""End-to-end IMAP session checks against a running pecgate (imaplib, TLS).

argv: port cafile data_dir. Exits non-zero with a message on the first
failed check; prints one line per check passed.
"""
import hashlib
import imaplib
import os
import re
import select
import ssl
import sys
import time

PORT, CAFILE, DATA = int(sys.argv[1]), sys.argv[2], sys.argv[3]
from common import PW, check, login as connect




def blobs():
    out = {}
    for root, _, files in os.walk(os.path.join(DATA, "blobs")):
        for f in files:
            if f.endswith(".eml"):
                out[f[:-4]] = open(os.path.join(root, f), "rb").read()
    return out


def fetch_one(m, seq, item):
    typ, data = m.fetch(str(seq), item)
    check(typ == "OK", f"fetch {seq} {item}", data)
    return data


def flags_of(m, seq):
    data = fetch_one(m, seq, "(FLAGS)")
    return data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()


# --- failed logins look alike ---
ctx = ssl.create_default_context(cafile=CAFILE)
errs = []
for user, pw in [("mario", "wrong"), ("nobody", PW)]:
    m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=ctx)
    try:
        m.login(user, pw)
        check(False, "bad login refused")
    except imaplib.IMAP4.error as e:
        errs.append(str(e))
    m.shutdown()
check(errs[0] == errs[1], "unknown user and wrong password get the same answer", errs)

mario = connect("mario")

# --- LIST: the exact tree ---
typ, lines = mario.list('""', "*")
check(typ == "OK", "list")
got = [l.decode() for l in lines]
want = [
    '(\\HasNoChildren) "/" INBOX',
    # Each user's own (issue 22): not PEC, nobody else's to see.
    '(\\HasNoChildren \\Drafts) "/" Drafts',
    '(\\HasNoChildren) "/" Templates',
    '(\\Noselect \\HasChildren) "/" prot',
    '(\\HasNoChildren) "/" prot/INBOX',
    '(\\HasNoChildren \\Sent) "/" prot/Sent',
    '(\\HasNoChildren) "/" prot/Receipts',
    '(\\HasNoChildren) "/" prot/Anomalies',
    '(\\HasNoChildren) "/" prot/Undelivered',
    # Every message once, wherever it is filed (issue 22).
    '(\\HasNoChildren \\All) "/" prot/All',
    # mario holds delete: what is hidden is listed in Trash (issue 13).
    '(\\HasNoChildren \\Trash) "/" prot/Trash',
    '(\\HasNoChildren) "/" "prot/To handle"',
    '(\\HasNoChildren) "/" prot/Mine',
    '(\\HasNoChildren) "/" prot/Done',
]
check(got == want, "LIST shows exactly the granted tree", got)

# --- SELECT + FETCH byte-identical ---
typ, data = mario.select("prot/INBOX")
check(typ == "OK" and int(data[0]) == 4, "select prot/INBOX has 4 messages", data)
archive = blobs()
for seq in (1, 4):
    data = fetch_one(mario, seq, "(BODY.PEEK[])")
    body = data[0][1]
    h = hashlib.sha256(body).hexdigest()
    check(archive.get(h) == body, f"BODY[] of {seq} is byte-identical to its blob")
data = fetch_one(mario, 1, "(UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
raw = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data)
check(b"Notifica numero 1" in raw and b"daticert.xml" in raw and b"Testo del messaggio 1" in raw, "FETCH envelope/bodystructure/sections", raw[:400])
check(b"\\Seen" not in raw, "PEEK does not set \\Seen", raw[:200])

# --- shared flags vs per-user \Seen ---
typ, _ = mario.store("1", "+FLAGS", "(\\Flagged $Todo \\Seen)")
check(typ == "OK", "mario STORE +FLAGS")
anna = connect("anna")
typ, _ = anna.select("prot/INBOX")
f_anna = flags_of(anna, 1)
check("\\Flagged" in f_anna and "$Todo" in f_anna and "\\Seen" not in f_anna, "anna sees shared flags but not mario's \\Seen", f_anna)
f_mario = flags_of(mario, 1)
check("\\Seen" in f_mario and "\\Flagged" in f_mario, "mario sees his \\Seen", f_mario)
fetch_one(anna, 3, "(BODY[])")
check("\\Seen" in flags_of(anna, 3), "BODY[] sets anna's \\Seen")
check("\\Seen" not in flags_of(mario, 3), "anna reading does not mark it seen for mario")

# --- SEARCH ---
def search(m, *crit, uid=False):
    typ, data = (m.uid("SEARCH", *crit) if uid else m.search(None, *crit))
    check(typ == "OK", f"search {crit}", data)
    return data[0].decode().split()

check(search(mario, "ALL") == ["1", "2", "3", "4"], "SEARCH ALL")
check(search(mario, "UNSEEN") == ["2", "3", "4"], "SEARCH UNSEEN (per user)")
check(search(mario, "FLAGGED") == ["1"], "SEARCH FLAGGED")
check(search(mario, "KEYWORD", "$Todo") == ["1"], "SEARCH KEYWORD")
check(search(mario, "SUBJECT", '"numero 2"') == ["2"], "SEARCH SUBJECT")
check(search(mario, "FROM", "mittente3") == ["3"], "SEARCH FROM")
check(search(mario, "BODY", "parola4") == ["4"], "SEARCH BODY")
check(search(mario, "OR", "SEEN", "TO", "nobody@x") == ["1"], "SEARCH OR")
check(search(mario, "NOT", "SEEN", "LARGER", "10") == ["2", "3", "4"], "SEARCH NOT/LARGER")
check(search(mario, "SINCE", "1-Jan-2020", "UID", "2:3", uid=True) == ["2", "3"], "UID SEARCH SINCE/UID")
check(search(mario, "HEADER", "Message-ID", "m2@") == ["2"], "SEARCH HEADER")
# Header keys answered from the store's cached search fields: address
# names and addresses, case-insensitively; a header the message lacks
# matches nothing, even an empty string.
check(search(mario, "FROM", '"UFFICIO 3"') == ["3"], "SEARCH FROM display name")
check(search(mario, "TO", "protocollo@pec.comune") == ["1", "2", "3", "4"], "SEARCH TO")
check(search(mario, "CC", '""') == [], "SEARCH CC on messages without Cc")
check(search(mario, "HEADER", "SUBJECT", "NUMERO 4") == ["4"], "SEARCH HEADER Subject")
check(search(mario, "SENTON", "3-Mar-2025") == ["1", "2", "3", "4"], "SEARCH SENTON")
check(search(mario, "SENTBEFORE", "3-Mar-2025") == [], "SEARCH SENTBEFORE")
check(search(mario, "FROM", "mittente2", "BODY", "parola2") == ["2"], "SEARCH FROM and BODY")

# --- permission matrix: read-only user ---
ro = connect("ro")
# A read-only user may keep their own \Seen (RFC 4314's s right, issue
# 13): the folder opens read-write with PERMANENTFLAGS (\Seen) alone, and
# every shared change is refused below.
typ, _ = ro.select("prot/INBOX")
perm = ro.untagged_responses.get("OK", [])
check(typ == "OK" and any(b"[PERMANENTFLAGS (\\Seen)]" in p for p in perm),
      "SELECT by a read-only user offers only \\Seen", perm)
before = flags_of(ro, 2)
typ, data = ro.store("2", "+FLAGS", "(\\Deleted)")
check(typ == "NO", "read-only STORE refused", data)
typ, data = ro.expunge()
check(typ == "NO", "read-only EXPUNGE refused", data)
typ, data = ro.append("prot/Sent", None, None, b"Subject: x\r\n\r\ny\r\n")
check(typ == "NO", "read-only APPEND refused", data)
check(flags_of(ro, 2) == before and "\\Deleted" not in flags_of(mario, 2), "nothing changed")
typ, data = ro.status("prot/Sent", "(MESSAGES)")
check(typ == "OK" and b"MESSAGES 0" in data[0], "Sent still empty", data)

# --- ungranted mailboxes are invisible ---
luigi = connect("luigi")
typ, lines = luigi.list('""', "*")
names = b" ".join(lines)
check(b"prot" not in names and b"tributi/INBOX" in names, "luigi's LIST has only tributi", lines)
typ, d1 = luigi.select("prot/INBOX")
typ2, d2 = luigi.select("nosuch/INBOX")
check(typ == "NO" and typ2 == "NO" and d1 == d2, "SELECT of an ungranted mailbox looks like a missing one", (d1, d2))
typ, d1 = mario.status("tributi/INBOX", "(MESSAGES)")
typ2, d2 = mario.status("nosuch/INBOX", "(MESSAGES)")
check(typ == "NO" and typ2 == "NO" and d1 == d2, "STATUS of an ungranted mailbox looks like a missing one", (d1, d2))
typ, _ = mario.create("Other")
check(typ == "NO", "CREATE outside a PEC mailbox refused")
typ, _ = mario.create("tributi/Other")
check(typ == "NO", "CREATE in an ungranted mailbox refused")
typ, _ = mario.create("prot/Sent")
check(typ == "NO", "CREATE of the gateway's own folder refused")

# --- EXPUNGE hides, blob stays ---
h2 = hashlib.sha256(fetch_one(mario, 2, "(BODY.PEEK[])")[0][1]).hexdigest()
mario.store("2", "+FLAGS", "(\\Deleted)")
typ, data = mario.expunge()
check(typ == "OK" and data == [b"2"], "EXPUNGE reports message 2", data)
check(search(mario, "ALL") == ["1", "2", "3"], "three messages left")
check(h2 in blobs(), "the expunged message's blob stays in the archive")

# --- IDLE sees an APPEND from another session within 1 s ---
typ, data = anna.select("prot/Sent")
check(typ == "OK" and int(data[0]) == 0, "anna selects empty prot/Sent", data)
tag = anna._new_tag()
anna.send(tag + b" IDLE\r\n")
line = anna.readline()
check(line.startswith(b"+"), "IDLE accepted", line)
typ, data = mario.append("prot/Sent", "(\\Seen)", None, b"From: protocollo@pec.example.it\r\nSubject: inviata\r\n\r\ncorpo\r\n")
t0 = time.monotonic()
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND to Sent with APPENDUID", data)
anna.sock.settimeout(1.0)
try:
    line = anna.readline()
except Exception as e:  # timeout
    line = repr(e).encode()
check(re.match(rb"\* 1 EXISTS", line) is not None and time.monotonic() - t0 < 1.0, "IDLE pushed EXISTS within 1 s", line)
anna.sock.settimeout(None)
anna.send(b"DONE\r\n")
line = anna.readline()
while line.startswith(b"* "):  # untagged news (\\Recent) may precede it
    line = anna.readline()
check(line.startswith(tag + b" OK"), "IDLE DONE", line)
check("\\Seen" not in flags_of(anna, 1), "APPEND's \\Seen is mario's only")

# --- MOVE between folders of one mailbox ---
typ, data = mario.select("prot/INBOX")
typ, data = mario._simple_command("MOVE", "1", "prot/Receipts")
check(typ == "OK", "MOVE to prot/Receipts", data)
typ, data = mario.status("prot/Receipts", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], "Receipts has the moved message", data)
mario.select("prot/Receipts")
check("\\Flagged" in flags_of(mario, 1) and "\\Seen" in flags_of(mario, 1), "flags and \\Seen moved along")

for m in (mario, anna, ro, luigi):
    m.logout()
print("all checks passed")
