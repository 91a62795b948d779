"""A line without CRLF is cut off after 64 KiB: `* BAD ... line too long`
and the connection is closed, before and after login.

The line limit was the literal limit plus 64 KiB (about 50 MiB): a client
sending bytes without ever ending the line made the server buffer up to
50 MiB per connection before answering anything.

argv: port cafile data_dir. User: mario.
"""
import re

from common import check, done
from helpers import Raw, flood

KiB = 1024
MARK = 64 * KiB + 8 * KiB
ALLOW = 1.5

for phase in ("before login", "after login"):
    r = Raw()
    if phase == "after login":
        check(r.login("mario"), "raw login as mario")
    # Bytes with no space: no tag can be read, so the answer is untagged.
    out = flood(r, b"", b"A" * (64 * KiB), 1024 * KiB, mark=MARK, grace=3.0)
    data = out["data"]
    after = None
    if out["closed"] is not None:
        after = out["closed"] - (out["passed"] if out["passed"] is not None else out["closed"])
    summary = (f"sent {out['sent'] // KiB} KiB, {out['how']}, "
               f"closed {'never' if after is None else f'{after:.2f} s after passing 72 KiB'}, "
               f"server said {data[:200]!r}")
    check(re.search(rb"(^|\r\n)\* BAD[^\r\n]*line too long", data, re.I) is not None,
          f"{phase}: 1 MiB without CRLF gets `* BAD ... line too long`", summary)
    check(out["closed"] is not None, f"{phase}: and the server closes the connection", summary)
    check(after is not None and after <= ALLOW,
          f"{phase}: within {ALLOW} s of the client passing 64 KiB + 8 KiB", summary)

r = Raw()
check(r.login("mario"), "a fresh client still logs in")
r.close()
done()
