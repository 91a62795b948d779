"""Before login a client cannot make the server read a big literal.

With LITERAL+ advertised before login and the post-login literal limit
(50 MiB) applied, anybody who can reach the port could announce
`{104857600+}` and stream: the server kept reading (and buffering) tens of
MB for an unauthenticated peer. Before login the server advertises
LITERAL- (RFC 7888: non-synchronising literals up to 4096 bytes), refuses a
larger literal with BAD and closes the connection; after login it
advertises LITERAL+ and APPENDLIMIT.

argv: port cafile data_dir. User: mario.
"""
import re
import time

from common import check, done
from helpers import Raw, flood

MiB = 1024 * 1024


def caps_of(line):
    return [c.upper() for c in line.split()] if line else []


# ---- capabilities
r = Raw()
code = re.search(rb"\[CAPABILITY ([^\]]*)\]", r.greeting or b"")
if code:
    g = caps_of(code.group(1).decode())
    check("LITERAL-" in g and "LITERAL+" not in g,
          "the greeting's CAPABILITY code has LITERAL- and not LITERAL+", g)
seen, got = r.command("c1", "CAPABILITY")
line = next((l for l in seen if l.upper().startswith(b"* CAPABILITY ")), None)
pre = caps_of(line[len(b"* CAPABILITY "):].decode()) if line else []
check(got is not None and got.startswith(b"c1 OK") and pre, "CAPABILITY before login", (seen, got))
check("LITERAL-" in pre, "CAPABILITY before login has LITERAL-", pre)
check("LITERAL+" not in pre, "CAPABILITY before login has no LITERAL+", pre)
seen, got = r.command("L1", "LOGIN mario pw-Secret-1")
check(got is not None and got.startswith(b"L1 OK"), "login", (seen, got))
code = re.search(rb"\[CAPABILITY ([^\]]*)\]", got or b"")
if code:
    c = caps_of(code.group(1).decode())
    check("LITERAL+" in c and "LITERAL-" not in c,
          "the LOGIN answer's CAPABILITY code has LITERAL+ (not LITERAL-)", c)
seen, got = r.command("c2", "CAPABILITY")
line = next((l for l in seen if l.upper().startswith(b"* CAPABILITY ")), None)
post = caps_of(line[len(b"* CAPABILITY "):].decode()) if line else []
check("LITERAL+" in post and "LITERAL-" not in post, "CAPABILITY after login has LITERAL+", post)
check(any(re.fullmatch(r"APPENDLIMIT=[1-9][0-9]*", c) for c in post),
      "CAPABILITY after login has APPENDLIMIT=<n>", post)
r.close()

# ---- small literals before login still work
r = Raw()
r.send(b"a LOGIN {5+}\r\nmario {11+}\r\npw-Secret-1\r\n")
seen, got = r.until(b"a ", 5)
check(got is not None and got.startswith(b"a OK"),
      "LOGIN with small non-synchronising literals before login", (seen, got))
r.close()

# ---- a synchronising literal over 4096 before login
r = Raw()
r.send(b"b LOGIN {5000}\r\n")
got = r.line(5)
check(got is not None and (got.startswith(b"b BAD") or got.startswith(b"* BAD")),
      "before login, `b LOGIN {5000}` gets BAD, not a continuation", got)
r.close()

# ---- a 100 MB non-synchronising literal before login
r = Raw()
out = flood(r, b"a LOGIN {104857600+}\r\n", b"A" * 65536, 16 * MiB + 65536, grace=2.0)
data, sent = out["data"], out["sent"]
took = None if out["closed"] is None else out["closed"] - out["start"]
summary = f"sent {sent / MiB:.2f} MiB, closed after {took if took is None else round(took, 2)} s ({out['how']}), server said {data[:200]!r}"
check(re.search(rb"(^|\r\n)(a|\*) BAD", data) is not None,
      "a 100 MB literal announced before login gets BAD", summary)
check(took is not None and took <= 2.0, "and the connection is closed within 2 s", summary)
check(sent < 16 * MiB, "while the client has sent less than 16 MiB", summary)

# ---- the server still serves
r = Raw()
check(r.login("mario"), "a fresh client still logs in")
r.close()
done()
