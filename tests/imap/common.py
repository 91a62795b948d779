"""What the tests/imap scripts share.

Each script is run as `python3 tests/imap/<script>.py PORT CAFILE DATA
[extra...]` by tests/imap_support (Gateway::python): PORT is the gateway's
implicit-TLS IMAP port, CAFILE its test certificate. A failed check prints
`FAIL: what: detail` and exits 1; each passed check prints `ok: what`.
With PECGATE_TEST_KEEP_GOING=1 in the environment a failed check does not
exit: the script goes on (to see which checks pass) and `done()` exits 1.
"""

import imaplib
import os
import ssl
import sys

PORT, CAFILE = int(sys.argv[1]), sys.argv[2]
# imap_support::PASSWORD: every test user has it.
PW = "pw-Secret-1"
CTX = ssl.create_default_context(cafile=CAFILE)
KEEP_GOING = os.environ.get("PECGATE_TEST_KEEP_GOING") == "1"
FAILED = []


def check(cond, what, detail=""):
    if not cond:
        print(f"FAIL: {what}: {detail}", file=sys.stderr)
        if not KEEP_GOING:
            sys.exit(1)
        FAILED.append(what)
        return False
    print(f"ok: {what}")
    return True


def done():
    """End of a script: `all checks passed`, or (keep-going) exit 1."""
    if FAILED:
        print(f"{len(FAILED)} checks failed: {FAILED}", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


def connect():
    """A TLS connection to the gateway, not logged in."""
    return imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX)


def login(user):
    """A session logged in as `user` (checked)."""
    m = connect()
    typ, _ = m.login(user, PW)
    check(typ == "OK", f"login {user}")
    return m
