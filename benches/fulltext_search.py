#!/usr/bin/env python3
"""Time IMAP `UID SEARCH BODY <word>` on a running pecgate, one session
over TLS, nothing else asking: the latency a connected client waits once
the full-text index is caught up (BENCHMARKS.md, "Full-text search").

    benches/fulltext_search.py PORT WORD [N]     # user mario, the benches' password

Typically on the data directory `FULLTEXT_LOAD_KEEP=1 cargo bench --bench
fulltext_load` kept, with `pecgate serve --config <dir>/pecgate.toml`.
Prints the hits and the median, fastest and slowest of N (20) searches.
"""
import imaplib
import ssl
import sys
import time

imaplib._MAXLINE = 100_000_000  # a word in every message: a million UIDs
port, word = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 20
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
m.login("mario", "pw-Secret-1")
t = time.perf_counter()
m.select("INBOX", readonly=True)
print("EXAMINE INBOX: %.1f ms" % ((time.perf_counter() - t) * 1000))
ts = []
hits = 0
for _ in range(n):
    t = time.perf_counter()
    typ, d = m.uid("SEARCH", "BODY", word)
    ts.append((time.perf_counter() - t) * 1000)
    assert typ == "OK", d
    hits = len(d[0].split())
ts.sort()
print("UID SEARCH BODY %s: %d hits, median %.1f ms, min %.1f, max %.1f (%d searches)" % (word, hits, ts[len(ts) // 2], ts[0], ts[-1], n))
m.logout()
