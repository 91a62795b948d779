"""APPENDs through a PostgreSQL outage (tests/cluster.rs): for DURATION
seconds append distinct messages to prot/Outage on one node while the test
restarts PostgreSQL. Every APPEND answers OK or `NO [UNAVAILABLE]`, never
anything else; once the database is back, every acknowledged message is
there.

argv: PORT CAFILE DATA DURATION
"""

import imaplib
import sys
import time

from common import PW, check, connect, done

DURATION = float(sys.argv[4])

# A LOGIN (or the CREATE) during the outage is refused with [UNAVAILABLE]
# (its audit record cannot be written): again, as a client would; counted
# as refusals (the outage seen).
login_refusals = 0
for attempt in range(600):
    m = connect()
    try:
        m.login("mario", PW)
        break
    except imaplib.IMAP4.error as e:
        check(b"[UNAVAILABLE]" in str(e).encode(), "a refused LOGIN says UNAVAILABLE", e)
        login_refusals += 1
        time.sleep(0.1)
for attempt in range(600):
    typ, data = m.create("prot/Outage")
    if typ == "OK" or b"[ALREADYEXISTS]" in data[0]:
        break
    check(b"[UNAVAILABLE]" in data[0], "a refused CREATE says UNAVAILABLE", data)
    login_refusals += 1
    time.sleep(0.1)
check(typ == "OK" or b"[ALREADYEXISTS]" in data[0], "CREATE prot/Outage", data)
acked, refused, i = [], login_refusals, 0
since_refusal = 0  # acknowledged since the last refusal: the outage is over
t_end = time.time() + DURATION
while time.time() < t_end or not refused or since_refusal < 3:
    i += 1
    mid = f"<outage-{i}@comune.example.it>"
    msg = (f"From: a@comune.example.it\r\nSubject: outage {i}\r\nMessage-ID: {mid}\r\n\r\nbody {i}\r\n").encode()
    typ, data = m.append("prot/Outage", None, None, msg)
    if typ == "NO":
        check(b"[UNAVAILABLE]" in data[0], "a refused APPEND says UNAVAILABLE", data)
        refused += 1
        since_refusal = 0
        time.sleep(0.05)
        continue
    acked.append(mid)
    since_refusal += 1
    time.sleep(0.02)
    if time.time() > t_end + 60:
        break
print(f"acknowledged {len(acked)}, refused {refused}, acknowledged after the outage {since_refusal}")
check(refused > 0, "the outage was seen (some APPENDs refused)", refused)
m.select("prot/Outage")
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
there = set()
for item in data:
    if isinstance(item, tuple):
        for line in item[1].decode().splitlines():
            if line.lower().startswith("message-id:"):
                there.add(line.split(":", 1)[1].strip())
missing = [mid for mid in acked if mid not in there]
check(not missing, "every acknowledged APPEND is there", missing)
m.logout()
done()
