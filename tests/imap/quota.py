"""QUOTA (RFC 9208) over imaplib: STORAGE of a mailbox's archive in KiB.

argv: port cafile data_dir used_kib limit_kib|none. Exits non-zero on the
first failed check.
"""
import imaplib
import ssl
import sys

PORT, CAFILE, DATA, USED, LIMIT = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
from common import check



m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=ssl.create_default_context(cafile=CAFILE))
m.login("mario", "pw-Secret-1")
check("QUOTA" in m.capabilities and "QUOTA=RES-STORAGE" in m.capabilities, "QUOTA advertised", m.capabilities)
typ, data = m.getquotaroot("prot/INBOX")
check(typ == "OK", "GETQUOTAROOT", data)
roots, quotas = data[0], data[1]
if LIMIT == "none":
    check(roots == [b"prot/INBOX"] and quotas in ([], [None]), "no limit: no quota root", data)
    typ, data = m.getquota("prot")
    check(typ == "NO", "GETQUOTA of a root that does not exist", data)
else:
    want = f"prot (STORAGE {USED} {LIMIT})".encode()
    check(roots == [b"prot/INBOX prot"] and quotas == [want], "QUOTAROOT and QUOTA of the mailbox", data)
    typ, data = m.getquotaroot("INBOX")
    check(typ == "OK" and data[1] == [want], "INBOX counts against its mailbox", data)
    typ, data = m.getquota("prot")
    check(typ == "OK" and data == [want], "GETQUOTA prot", data)
    typ, data = m.getquota("tributi")
    check(typ == "NO", "GETQUOTA of an ungranted mailbox looks like a missing one", data)
typ, data = m.setquota("prot", "(STORAGE 1)")
check(typ == "NO", "SETQUOTA refused", data)
typ, data = m.getquotaroot("nosuch/INBOX")
check(typ == "NO", "GETQUOTAROOT of a missing folder", data)
m.logout()
print("all checks passed")
