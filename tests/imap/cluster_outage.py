"""APPENDs through a PostgreSQL outage (tests/cluster.rs): for DURATION
seconds append distinct messages to prot/Outage on one node while the test
restarts PostgreSQL. Every APPEND answers OK or `NO [UNAVAILABLE]`, never
anything else; once the database is back, every acknowledged message is
there.

argv: PORT CAFILE DATA DURATION
"""

import sys
import time

from common import check, done, login

DURATION = float(sys.argv[4])

m = login("mario")
typ, _ = m.create("prot/Outage")
check(typ == "OK", "CREATE prot/Outage")
acked, refused, i = [], 0, 0
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
