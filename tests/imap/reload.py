"""SIGHUP reloads users and grants without dropping sessions.

argv: port cafile data_dir pid config new_config. Before the reload: mario,
anna (read+triage on prot) and ro (read on prot) are users, nuovo is not.
The new configuration removes ro, adds nuovo (read on prot) and leaves anna
only read. Exits non-zero on the first failed check.
"""
import imaplib
import os
import signal
import ssl
import sys
import time

PORT, CAFILE = int(sys.argv[1]), sys.argv[2]
from common import CTX, PW, check, connect
PID, CONFIG, NEW_CONFIG = int(sys.argv[4]), sys.argv[5], sys.argv[6]




def login(user):
    m = connect()
    try:
        m.login(user, PW)
        return m
    except imaplib.IMAP4.error as e:
        m.shutdown()
        return str(e)


# Before: sessions that must survive (mario), lose rights (anna), or end (ro).
mario = login("mario")
check(not isinstance(mario, str), "mario logs in", mario)
typ, data = mario.select("prot/INBOX")
check(typ == "OK", "mario selects prot/INBOX", data)
anna = login("anna")
check(not isinstance(anna, str), "anna logs in", anna)
check(anna.select("prot/INBOX")[0] == "OK", "anna selects prot/INBOX")
typ, data = anna.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "OK", "anna may flag before the reload", data)
ro = login("ro")
check(not isinstance(ro, str), "ro logs in", ro)
check(ro.select("prot/INBOX", readonly=True)[0] == "OK", "ro examines prot/INBOX")
nuovo = login("nuovo")
check(isinstance(nuovo, str) and "AUTHENTICATIONFAILED" in nuovo, "nuovo is unknown before the reload", nuovo)

os.replace(NEW_CONFIG, CONFIG)
os.kill(PID, signal.SIGHUP)

# The reload is asynchronous: wait (bounded) until nuovo is accepted.
deadline = time.time() + 20
while True:
    nuovo = login("nuovo")
    if not isinstance(nuovo, str):
        break
    check(time.time() < deadline, "nuovo accepted within 20 s of SIGHUP", nuovo)
    time.sleep(0.2)
check(True, "nuovo logs in after the reload")
typ, data = nuovo.list()
check(typ == "OK" and any(b"prot/INBOX" in d for d in data), "nuovo sees prot", data)
check(not any(b"tributi" in d for d in data), "nuovo does not see tributi", data)
typ, data = nuovo.select("prot/INBOX", readonly=True)
check(typ == "OK", "nuovo selects prot/INBOX", data)
typ, data = nuovo.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "NO", "nuovo (read only) may not flag", data)
nuovo.logout()

# The removed user: no new login, and the open session ends at its next command.
r = login("ro")
check(isinstance(r, str) and "AUTHENTICATIONFAILED" in r, "ro refused after the reload", r)
try:
    ro.noop()
    check(False, "ro's open session ends at its next command", "NOOP answered")
except imaplib.IMAP4.abort as e:
    check("removed" in str(e), "ro's open session gets BYE at its next command", e)

# The changed grant applies to the open session and to new logins.
typ, data = anna.store("2", "+FLAGS", "(\\Flagged)")
check(typ == "NO" and b"not permitted" in data[0], "anna's open session lost triage", data)
typ, data = anna.fetch("1", "(FLAGS)")
check(typ == "OK" and b"\\Flagged" in data[0], "anna's open session still reads", data)
anna2 = login("anna")
check(not isinstance(anna2, str), "anna logs in again", anna2)
# Without triage anna keeps her own \Seen (RFC 4314's s right): the folder
# opens read-write, but PERMANENTFLAGS offers \Seen alone.
typ, _ = anna2.select("prot/INBOX")
perm = anna2.untagged_responses.get("OK", [])
check(typ == "OK" and any(b"[PERMANENTFLAGS (\\Seen)]" in p for p in perm),
      "anna's new session may change only her own \\Seen (no triage)", perm)
typ, data = anna2.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "NO" and b"not permitted" in data[0], "anna's new session cannot flag", data)
anna2.shutdown()
anna.logout()

# The other user's session went on, on the same connection.
typ, data = mario.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(typ == "OK" and b"Notifica numero 1" in data[0][1], "mario's session survives the reload", data)
typ, data = mario.store("2", "+FLAGS", "(\\Flagged)")
check(typ == "OK", "mario keeps his rights", data)
mario.logout()
print("all checks passed")
