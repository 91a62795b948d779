"""PEC delivery state as IMAP keywords, and the virtual Undelivered folder.

argv: port cafile data_dir. The archive holds (imap_support::Setup.pec) in
prot/Sent: UID 1 the sample submission (accepted, delivered to one
recipient, failed for another), UID 2 a message sent two hours ago without
receipts (overdue: the gateway runs with overdue_after = 1h), UID 3 one sent
just now (pending). Exits non-zero on the first failed check.
"""
import hashlib
import imaplib
import os
import re
import ssl
import sys

PORT, CAFILE, DATA = int(sys.argv[1]), sys.argv[2], sys.argv[3]
from common import PW, check, login as connect
PEC = ["$PecAccepted", "$PecNotAccepted", "$PecDelivered", "$PecPartiallyDelivered",
       "$PecFailed", "$PecOverdue", "$PecWarned"]




def flags(m, uid):
    typ, data = m.uid("FETCH", str(uid), "(FLAGS)")
    check(typ == "OK" and data[0] is not None, f"UID FETCH {uid} FLAGS", data)
    got = re.search(rb"FLAGS \(([^)]*)\)", data[0])
    return set(got.group(1).decode().split()) if got else set()


def pec(fl):
    return {f for f in fl if f.startswith("$Pec")}


def search(m, *crit):
    typ, data = m.uid("SEARCH", *crit)
    check(typ == "OK", f"UID SEARCH {crit}", data)
    return [int(x) for x in data[0].split()]


mario = connect("mario")
typ, data = mario.select("prot/Sent")
check(typ == "OK" and int(data[0]) == 3, "prot/Sent holds the three sent copies", data)
untagged = mario.untagged_responses
flags_line = untagged.get("FLAGS", [b""])[0].decode()
perm = " ".join(x.decode() for x in untagged.get("PERMANENTFLAGS", []))
check(all(k in flags_line for k in PEC), "FLAGS names the $Pec keywords", flags_line)
check("$Pec" not in perm and "\\*" in perm, "PERMANENTFLAGS leaves them out", perm)
check("HIGHESTMODSEQ" in untagged, "HIGHESTMODSEQ at SELECT (CONDSTORE is offered)", list(untagged))
# A computed keyword is as new as what made it: UID 1's receipts, UID 2's
# deadline (sent two hours ago, overdue after one: its MODSEQ is at least
# that moment in microseconds).
typ, data = mario.uid("FETCH", "1:3", "(MODSEQ)")
ms = {int(u): int(v) for u, v in (re.search(rb"UID (\d+) MODSEQ \((\d+)\)", d).groups() for d in data if d)}
import time
check(sorted(ms) == [1, 2, 3] and ms[2] >= int((time.time() - 3600 - 300) * 1e6),
      "FETCH MODSEQ of the sent copies; the overdue one's is past its deadline", ms)

check(pec(flags(mario, 1)) == {"$PecAccepted", "$PecPartiallyDelivered", "$PecFailed"},
      "UID 1: accepted, partially delivered, failed", flags(mario, 1))
check(pec(flags(mario, 2)) == {"$PecOverdue"}, "UID 2: overdue (overdue_after = 1h)", flags(mario, 2))
check(pec(flags(mario, 3)) == set(), "UID 3: pending, no keyword yet", flags(mario, 3))

check(search(mario, "KEYWORD", "$PecFailed") == [1], "SEARCH KEYWORD $PecFailed")
check(search(mario, "KEYWORD", "$PecOverdue") == [2], "SEARCH KEYWORD $PecOverdue")
check(search(mario, "UNKEYWORD", "$PecAccepted") == [2, 3], "SEARCH UNKEYWORD $PecAccepted")

# Clients cannot set or clear the computed keywords...
for op, kw in (("+FLAGS", "$PecDelivered"), ("-FLAGS", "$PecFailed"), ("+FLAGS", "$pecoverdue")):
    typ, data = mario.uid("STORE", "3", op, f"({kw})")
    check(typ == "NO" and b"only the gateway" in data[0], f"STORE {op} {kw} refused", data)
check(pec(flags(mario, 1)) == {"$PecAccepted", "$PecPartiallyDelivered", "$PecFailed"}
      and pec(flags(mario, 3)) == set(), "nothing changed")
# ... a client writing back every flag it saw keeps them as they are ...
typ, data = mario.uid("STORE", "1", "FLAGS", "(\\Flagged $PecAccepted $PecDelivered)")
check(typ == "OK", "STORE FLAGS with $Pec keywords ignores them", data)
fl = flags(mario, 1)
check("\\Flagged" in fl and pec(fl) == {"$PecAccepted", "$PecPartiallyDelivered", "$PecFailed"},
      "replace kept the computed keywords", fl)
# ... and ordinary keywords still work beside them.
typ, _ = mario.uid("STORE", "1", "+FLAGS", "($Sollecitare)")
check(typ == "OK" and "$Sollecitare" in flags(mario, 1), "ordinary keyword on a sent message")

# --- Undelivered: the failed and the overdue message, same UIDs, read-only ---
typ, data = mario.status("prot/Sent", "(UIDVALIDITY UIDNEXT)")
sent_uv = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
typ, data = mario.status("prot/Undelivered", "(MESSAGES UIDVALIDITY UIDNEXT)")
check(typ == "OK" and b"MESSAGES 2" in data[0], "STATUS Undelivered: 2 messages", data)
und_uv = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
check(und_uv != sent_uv and und_uv == (~sent_uv & 0xFFFFFFFF), "Undelivered's UIDVALIDITY is Sent's complement", (sent_uv, und_uv))

try:
    mario.select("prot/Undelivered")
    check(False, "Undelivered is read-only")
except imaplib.IMAP4.readonly:
    mario.is_readonly = True
    check(True, "Undelivered is read-only")
check(search(mario, "ALL") == [1, 2], "Undelivered has Sent UIDs 1 and 2")
check(pec(flags(mario, 2)) == {"$PecOverdue"} and "$PecFailed" in flags(mario, 1), "keywords in Undelivered too")
typ, data = mario.uid("FETCH", "1", "(BODY.PEEK[])")
body = data[0][1]
blob = os.path.join(DATA, "blobs")
h = hashlib.sha256(body).hexdigest()
on_disk = open(os.path.join(blob, h[:2], h[2:4], h + ".eml"), "rb").read()
check(on_disk == body and b"20261125101455.ABC123" in body, "Undelivered serves the sent blob byte for byte")
typ, data = mario.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
check(typ == "NO", "STORE in Undelivered refused", data)

# A read-only user sees the keywords as well.
ro = connect("ro")
try:
    ro.select("prot/Sent")
except imaplib.IMAP4.readonly:
    ro.is_readonly = True
check("$PecFailed" in flags(ro, 1), "read-only user sees the delivery state")

for m in (mario, ro):
    m.logout()
print("all checks passed")
