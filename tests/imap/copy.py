"""COPY: refused within one PEC mailbox, into Sent, into virtual folders and
across folder kinds; allowed into the same kind of folder of another PEC
mailbox on which the user holds triage, idempotently, with COPYUID.

argv: port cafile data_dir. Users: capo (read+triage on prot and tributi),
rotri (read+triage on prot, read on tributi), mario (no tributi).
Exits non-zero on the first failed check.
"""
import imaplib
import re
import ssl
import sys

PORT, CAFILE = int(sys.argv[1]), sys.argv[2]
from common import CTX, PW, check, login




m = login("capo")
check(m.select("prot/INBOX")[0] == "OK", "capo selects prot/INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[])")
original = data[0][1]
check(m.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK", "flag message 1")

for target, want, what in [
    ("prot/Receipts", b"once per mailbox", "into another folder of the same mailbox"),
    ("prot/INBOX", b"once per mailbox", "into the same folder"),
    ("tributi/Sent", b"Sent holds only", "into another mailbox's Sent"),
    ("tributi/Receipts", b"same kind", "across folder kinds"),
    ("tributi/Undelivered", b"virtual", "into a virtual folder"),
]:
    typ, data = m.copy("1", target)
    check(typ == "NO" and b"[CANNOT]" in data[0] and want in data[0], f"COPY {what} refused", data)
typ, data = m.copy("1", "nosuch/INBOX")
check(typ == "NO" and b"[TRYCREATE]" in data[0], "COPY to a missing folder: TRYCREATE", data)

typ, data = m.copy("1:2", "tributi/INBOX")
check(typ == "OK", "COPY into tributi/INBOX", data)
cu = re.search(rb"\[COPYUID (\d+) ([\d,:]+) ([\d,:]+)\]", data[0])
check(cu is not None and cu.group(2) == b"1,2" and cu.group(3) == b"2,3", "COPYUID maps 1,2 to 2,3", data)
typ, data = m.uid("COPY", "1", "tributi/INBOX")
code, cu2 = m.response("COPYUID")
check(typ == "OK" and cu2[-1] is not None and cu2[-1].split()[1:] == [b"1", b"2"],
      "a second (UID) COPY files nothing new", (typ, data, cu2))

typ, data = m.select("tributi/INBOX")
check(typ == "OK" and data[0] == b"3", "tributi/INBOX holds 3 messages", data)
typ, data = m.uid("FETCH", "2", "(FLAGS BODY.PEEK[])")
check(typ == "OK" and data[0][1] == original, "the copy is byte-identical", data)
check(b"\\Flagged" in data[0][0], "the copy keeps shared flags", data)
m.logout()

r = login("rotri")
r.select("prot/INBOX")
typ, data = r.copy("1", "tributi/INBOX")
check(typ == "NO" and b"[NOPERM]" in data[0], "COPY needs triage on the target", data)
r.logout()

mario = login("mario")
mario.select("prot/INBOX")
typ, data = mario.copy("1", "tributi/INBOX")
check(typ == "NO" and b"[TRYCREATE]" in data[0], "an ungranted mailbox looks missing", data)
mario.logout()
print("all checks passed")
