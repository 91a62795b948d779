"""Every combination of the rights triage, send and delete (each with read)
on prot, against every command that changes something: the tagged answer
is OK exactly when the right is held, `NO [NOPERM]` otherwise (`NO
[TRYCREATE]` also where the target folder is invisible to the user), and a
refused command changes nothing anybody sees.

Rights: \\Seen needs only read (it is per person); \\Flagged, keywords and
MOVE between folders need triage; \\Deleted, EXPUNGE and MOVE into Trash
need delete; APPEND into Sent needs send. SELECT is READ-WRITE for
everybody, PERMANENTFLAGS naming what the user may set.

Prints a table (user x command -> what the server answered; `!` marks a
mismatch) and fails listing every mismatch, not just the first.

argv: port cafile data_dir. Users u_r, u_rt, u_rs, u_rd, u_rts, u_rtd,
u_rsd, u_rtsd (those rights on prot, read on tributi), mario (all rights
on prot, the observer), luigi (read on tributi). prot/INBOX holds 40
messages <m1@pec.example.it> ..; user k (0..7, in the order above) works on
messages 4k+1 .. 4k+4.
"""
import imaplib
import sys

from common import check
from helpers import session, code_of, flags_of, message_ids, select_info, status, uid_of

USERS = ["u_r", "u_rt", "u_rs", "u_rd", "u_rts", "u_rtd", "u_rsd", "u_rtsd"]
FOLDERS = ["prot/INBOX", "prot/Receipts", "prot/Trash", "prot/Sent"]

mario = session("mario")
check(mario.select("prot/INBOX")[0] == "OK", "mario selects prot/INBOX")
luigi = session("luigi")
START = message_ids(mario)
check(len(START) >= 32, "prot/INBOX holds the 32 messages the users work on", len(START))


def mid(i):
    return f"<m{i}@pec.example.it>"


def snapshot(k):
    """What mario (and luigi, for tributi) see of user k's messages and of
    the folders a command could change."""
    mario.noop()
    s = {}
    for i in range(4 * k + 1, 4 * k + 5):
        u = uid_of(mario, mid(i))
        f = flags_of(mario, u) if u is not None else None
        s[mid(i)] = None if f is None else tuple(sorted(x for x in f if x.lower() != "\\seen"))
    for f in FOLDERS:
        s[f] = status(mario, f)
    s["tributi/INBOX"] = status(luigi, "tributi/INBOX")
    return s


rows = {}
mismatches = []
COLS = []


def cell(user, col, shown, good, why=""):
    if col not in COLS:
        COLS.append(col)
    rows.setdefault(user, {})[col] = shown + ("" if good else "!")
    if not good:
        mismatches.append(f"{user} {col}: {why}")


for k, user in enumerate(USERS):
    rights = user[2:]
    T, S, D = "t" in rights, "s" in rights, "d" in rights
    a, b, c, d = (START.get(mid(i)) for i in range(4 * k + 1, 4 * k + 5))
    m = session(user)
    typ, info = select_info(m, "prot/INBOX")
    rw = info["access"] == "READ-WRITE" and typ == "OK"
    cell(user, "SELECT rw", "yes" if rw else "no", rw, f"SELECT answered {typ} {info['access']} ({info['text']})")
    pf = info["permanentflags"] or []
    for flag, want in [("\\Seen", True), ("\\Deleted", D), ("\\Flagged", T), ("\\*", T)]:
        has = flag in pf
        cell(user, f"PF {flag}", "yes" if has else "no", has == want,
             f"PERMANENTFLAGS {pf}: {flag} {'missing' if want else 'present'}")

    def command(col, fn, expect_ok, refusals=("NOPERM",)):
        global m
        before = snapshot(k)
        try:
            typ, data = fn()
        except imaplib.IMAP4.abort as e:
            typ, data = "ABORT", [str(e).encode()]
        except imaplib.IMAP4.error as e:
            typ, data = "BAD", [str(e).encode()]
        except OSError as e:
            # No tagged answer (TimeoutError): go on in a new session.
            typ, data = "TIMEOUT", [repr(e).encode()]
        if typ in ("ABORT", "TIMEOUT"):
            m = session(user)
            select_info(m, "prot/INBOX")
        code = code_of(data) if typ == "NO" else ""
        shown = "OK" if typ == "OK" else "NO" if typ == "NO" else typ
        if expect_ok:
            good = typ == "OK"
            why = f"expected OK, got {typ} {data!r}"
        else:
            good = typ == "NO" and (refusals is None or code in refusals)
            want = "NO" if refusals is None else " or ".join(f"NO [{r}]" for r in refusals)
            why = f"expected {want}, got {typ} {data!r}"
        cell(user, col, shown, good, why)
        if typ != "OK":
            after = snapshot(k)
            if after != before:
                changed = {x: (before[x], after[x]) for x in before if before[x] != after[x]}
                rows[user][col] = shown + "!"
                mismatches.append(f"{user} {col}: refused ({typ}) but changed {changed}")

    sent = (f"From: protocollo@pec.example.it\r\nTo: ufficio@pec.ditta.example.it\r\n"
            f"Subject: matrice {user}\r\nMessage-ID: <matrix-{user}@pec.example.it>\r\n"
            f"Date: Mon, 3 Mar 2025 12:00:00 +0100\r\n\r\nTesto di {user}\r\n").encode()
    command("+\\Seen", lambda: m.uid("STORE", str(a), "+FLAGS", "(\\Seen)"), True)
    command("+\\Flagged", lambda: m.uid("STORE", str(a), "+FLAGS", "(\\Flagged)"), T)
    command("+$Etichetta", lambda: m.uid("STORE", str(a), "+FLAGS", "($Etichetta)"), T)
    command("-\\Flagged", lambda: m.uid("STORE", str(a), "-FLAGS", "(\\Flagged)"), T)
    command("+\\Deleted", lambda: m.uid("STORE", str(b), "+FLAGS", "(\\Deleted)"), D)
    command("UID EXPUNGE", lambda: m.uid("EXPUNGE", str(b)), D)
    command("+\\Deleted(2)", lambda: m.uid("STORE", str(c), "+FLAGS", "(\\Deleted)"), D)
    command("EXPUNGE", lambda: m.expunge(), D)
    command("MOVE Receipts", lambda: m.uid("MOVE", str(d), "prot/Receipts"), T)
    command("APPEND Sent", lambda: m.append("prot/Sent", None, None, sent), S)
    command("COPY tributi", lambda: m.uid("COPY", str(a), "tributi/INBOX"), False, None)
    command("MOVE Trash", lambda: m.uid("MOVE", str(a), "prot/Trash"), D, ("NOPERM", "TRYCREATE"))
    m.logout()
    # A \Deleted wrongly accepted must not be expunged by the next user.
    mario.noop()
    left = [u for u in (uid_of(mario, mid(i)) for i in range(4 * k + 1, 4 * k + 5)) if u is not None]
    if left:
        mario.uid("STORE", ",".join(map(str, left)), "-FLAGS.SILENT", "(\\Deleted)")

width = max(len(c) for c in COLS) + 1
print("user".ljust(8) + "".join(c.rjust(width) for c in COLS))
for user in USERS:
    print(user.ljust(8) + "".join(rows[user].get(c, "-").rjust(width) for c in COLS))
for user in USERS:
    bad = [c for c in COLS if rows[user].get(c, "").endswith("!")]
    if not bad:
        print(f"ok: {user}: all {len(COLS)} answers as its rights say")
mario.logout()
luigi.logout()
if mismatches:
    print(f"FAIL: {len(mismatches)} mismatches:", file=sys.stderr)
    for x in mismatches:
        print(f"  {x}", file=sys.stderr)
    sys.exit(1)
print("all checks passed")
