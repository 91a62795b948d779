"""Session limits: per user (NO [LIMIT] at login) and per source address
(BYE [LIMIT] greeting), each freed when a session ends.

argv: port cafile data_dir. The gateway runs with
max_sessions_per_user = 2 and max_sessions_per_address = 4.
Exits non-zero on the first failed check.
"""
import imaplib
import ssl
import sys
import time

PORT, CAFILE = int(sys.argv[1]), sys.argv[2]
from common import CTX, PW, check, connect




c1, c2, c3 = connect(), connect(), connect()
c1.login("mario", PW)
c2.login("mario", PW)
try:
    c3.login("mario", PW)
    check(False, "a third session of mario is refused", "login accepted")
except imaplib.IMAP4.error as e:
    check("LIMIT" in str(e) and "too many sessions for this user" in str(e), "a third session of mario is refused", e)
c4 = connect()
c4.login("anna", PW)
check(c4.select("prot/INBOX")[0] == "OK", "another user still logs in")

# c1..c4 are four connections from 127.0.0.1: the fifth is turned away.
try:
    c5 = connect()
    check(False, "a fifth connection from the address is refused", c5.welcome)
except imaplib.IMAP4.error as e:
    check("LIMIT" in str(e) and "too many connections from your address" in str(e),
          "a fifth connection from the address gets BYE [LIMIT]", e)

# Ending sessions frees both slots.
c3.logout()
c1.logout()
deadline = time.time() + 10
while True:
    try:
        c5 = connect()
        break
    except imaplib.IMAP4.error as e:
        check(time.time() < deadline, "an address slot is freed by LOGOUT", e)
        time.sleep(0.1)
c5.login("mario", PW)
check(c5.select("INBOX")[0] == "OK", "mario's freed user slot is usable again")
for c in (c2, c4, c5):
    c.logout()
print("all checks passed")
