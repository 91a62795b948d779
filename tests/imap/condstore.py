"""CONDSTORE and QRESYNC (RFC 7162) against `pecgate serve`, after the RFC's
examples: HIGHESTMODSEQ at SELECT, FETCH MODSEQ and CHANGEDSINCE, STORE
UNCHANGEDSINCE with MODIFIED, SEARCH MODSEQ, MODSEQ in every flag update
once enabled (another session's change, a user's own \\Seen, .SILENT),
ENABLE QRESYNC, SELECT (QRESYNC ...) with VANISHED (EARLIER) and the
changed flags, VANISHED instead of EXPUNGE, UID FETCH (CHANGEDSINCE n
VANISHED), [CLOSED], and NOMODSEQ in the virtual folders. Raw lines over
TLS (what the server says, exactly) and imaplib for STATUS.

argv: port cafile data_dir. Users: mario (read, triage, send, delete on
prot), anna (read, triage). prot/INBOX holds 2 messages.
"""
import re

from common import check, done, login
from helpers import Raw


def ok(conn, tag, text, what):
    lines, t = conn.command(tag, text)
    check(t is not None and t.startswith(f"{tag} OK".encode()), what, (lines, t))
    return lines, t


def modseq_of(line):
    m = re.search(rb"MODSEQ \((\d+)\)", line)
    return int(m.group(1)) if m else None


def fetched(lines):
    """{uid: (flags line, modseq)} of the FETCH lines."""
    out = {}
    for ln in lines:
        m = re.match(rb"\* \d+ FETCH \(.*UID (\d+)", ln)
        if m:
            out[int(m.group(1))] = (ln, modseq_of(ln))
    return out


def code(tagged, name):
    m = re.search(rb"\[" + name.encode() + rb" ([^\]]*)\]", tagged or b"")
    return m.group(1).decode() if m else None


# ------------------------------------------------------------- CONDSTORE
# A folder selected without (CONDSTORE), then a command that uses a MODSEQ:
# HIGHESTMODSEQ first (imaptest's esearch-condstore; Dovecot does so).
z = Raw()
check(z.login("anna"), "anna logs in (a first session)")
lines, t = ok(z, "z1", "SELECT prot/INBOX", "SELECT without CONDSTORE")
lines, t = ok(z, "z2", "FETCH 1 (MODSEQ)", "FETCH MODSEQ turns CONDSTORE on")
check(lines and lines[0].startswith(b"* OK [HIGHESTMODSEQ ") and any(b"MODSEQ (" in l for l in lines[1:]),
      "* OK [HIGHESTMODSEQ n] before the FETCH (RFC 7162 §3.1)", lines)
lines, t = ok(z, "z3", "FETCH 1 (MODSEQ)", "FETCH MODSEQ again")
check(not any(b"HIGHESTMODSEQ" in l for l in lines), "only the first time", lines)
z.close()

a = Raw()
check(a.login("anna"), "anna logs in")
lines, t = ok(a, "c", "CAPABILITY", "CAPABILITY")
caps = b" ".join(lines)
check(b" CONDSTORE" in caps and b" QRESYNC" in caps, "CONDSTORE and QRESYNC are advertised", caps)

lines, t = ok(a, "s1", "SELECT prot/INBOX (CONDSTORE)", "SELECT prot/INBOX (CONDSTORE)")
h0 = next((int(m.group(1)) for m in (re.search(rb"\[HIGHESTMODSEQ (\d+)\]", l) for l in lines) if m), None)
check(h0 is not None and h0 > 1, "SELECT answers * OK [HIGHESTMODSEQ n] (RFC 7162 §3.1.2.1)", lines)

lines, t = ok(a, "f1", "UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)")
f = fetched(lines)
check(sorted(f) == [1, 2] and all(ms is not None and ms <= h0 for _, ms in f.values()),
      "once CONDSTORE is on, every FETCH of FLAGS carries MODSEQ, none above HIGHESTMODSEQ", lines)

lines, t = ok(a, "f2", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})", "FETCH CHANGEDSINCE the highest")
check(fetched(lines) == {}, "nothing changed since HIGHESTMODSEQ: no FETCH", lines)

lines, t = ok(a, "st1", "UID STORE 1 +FLAGS (\\Flagged)", "STORE +FLAGS \\Flagged")
f = fetched(lines)
m1 = f.get(1, (b"", None))[1]
check(m1 is not None and m1 > h0 and b"\\Flagged" in f[1][0], "the STORE's FETCH says FLAGS and a MODSEQ above the old highest", lines)

# Example 3 of §3.1.3: one message changed since the client's MODSEQ.
lines, t = ok(a, "st2", f"UID STORE 1,2 (UNCHANGEDSINCE {h0}) +FLAGS (\\Answered)", "STORE UNCHANGEDSINCE")
check(code(t, "MODIFIED") == "1", "UID 1 changed after the given MODSEQ: tagged OK [MODIFIED 1]", t)
f = fetched(lines)
check(2 in f and b"\\Answered" in f[2][0] and 1 not in f, "UID 2 got \\Answered, UID 1 was left alone", lines)
m2 = f[2][1]
lines, t = ok(a, "f3", "UID FETCH 1 (FLAGS)", "FETCH UID 1")
check(b"\\Answered" not in lines[0], "UID 1 has no \\Answered", lines)
lines, t = ok(a, "st3", "UID STORE 2 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)", "STORE UNCHANGEDSINCE 0")
check(code(t, "MODIFIED") == "2" and fetched(lines) == {}, "UNCHANGEDSINCE 0 always fails (RFC 7162 §3.1.3)", (lines, t))

lines, t = ok(a, "f4", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})", "FETCH CHANGEDSINCE the old highest")
f = fetched(lines)
check(sorted(f) == [1, 2] and f[1][1] == m1 and f[2][1] == m2, "both changed messages, with their MODSEQs", lines)
lines, t = ok(a, "f5", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m1})", "FETCH CHANGEDSINCE UID 1's MODSEQ")
check(sorted(fetched(lines)) == [2], "only what changed after it", lines)

lines, t = ok(a, "se1", f"UID SEARCH MODSEQ {m1}", "SEARCH MODSEQ")
sm = re.match(rb"\* SEARCH 1 2 \(MODSEQ (\d+)\)$", lines[0]) if lines else None
check(sm is not None and int(sm.group(1)) == max(m1, m2),
      "SEARCH MODSEQ: the UIDs and (MODSEQ highest of them) (§3.1.5)", lines)

lines, t = ok(a, "st4", "UID STORE 2 +FLAGS.SILENT (\\Flagged)", "STORE .SILENT")
f = fetched(lines)
check(2 in f and b"FLAGS" not in f[2][0] and (f[2][1] or 0) > m2, ".SILENT with CONDSTORE: FETCH (UID MODSEQ) only (§3.1.3)", lines)
m2 = f[2][1]

# Another session's change reaches this one with its MODSEQ.
b = Raw()
check(b.login("mario"), "mario logs in")
ok(b, "s", "SELECT prot/INBOX", "mario selects prot/INBOX")
lines, t = ok(b, "st", "UID STORE 1 +FLAGS ($Protocollato)", "mario stores a keyword on UID 1")
check(fetched(lines) and fetched(lines)[1][1] is None, "mario did not enable CONDSTORE: no MODSEQ for him", lines)
lines, t = ok(a, "n1", "NOOP", "anna's NOOP")
f = fetched(lines)
check(1 in f and b"$Protocollato" in f[1][0] and f[1][1] > m2, "anna hears of it with the new MODSEQ", lines)
m1 = f[1][1]

# A user's own \Seen is a change with a MODSEQ.
lines, t = ok(a, "st5", "UID STORE 2 +FLAGS (\\Seen)", "anna marks UID 2 \\Seen")
f = fetched(lines)
check(2 in f and b"\\Seen" in f[2][0] and f[2][1] > m1, "\\Seen got a MODSEQ too", lines)
h1 = f[2][1]

m = login("anna")
typ, data = m.status("prot/INBOX", "(HIGHESTMODSEQ)")
check(typ == "OK" and int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1)) == h1,
      "STATUS (HIGHESTMODSEQ) is the newest MODSEQ", data)
typ, data = m.status("prot/All", "(HIGHESTMODSEQ)")
check(typ == "OK" and b"HIGHESTMODSEQ 0" in data[0], "STATUS of a virtual folder: HIGHESTMODSEQ 0 (NOMODSEQ)", data)
m.logout()

# Virtual folders keep no MODSEQs: NOMODSEQ, and MODSEQ commands are BAD.
lines, t = ok(a, "s2", "EXAMINE prot/All", "EXAMINE prot/All")
check(lines[0].startswith(b"* OK [CLOSED]"), "the previous folder is [CLOSED] first (§3.2.11)", lines)
check(any(b"[NOMODSEQ]" in l for l in lines) and not any(b"HIGHESTMODSEQ" in l for l in lines),
      "a virtual folder answers [NOMODSEQ] (§3.1.2.2)", lines)
lines, t = a.command("f6", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
check(t is not None and t.startswith(b"f6 BAD"), "CHANGEDSINCE in a NOMODSEQ folder -> BAD", (lines, t))

# --------------------------------------------------------------- QRESYNC
c = Raw()
check(c.login("mario"), "mario logs in again")
lines, t = c.command("q0", "SELECT prot/INBOX (QRESYNC (1 1))")
check(t is not None and t.startswith(b"q0 BAD"), "SELECT (QRESYNC ...) before ENABLE QRESYNC -> BAD", (lines, t))
lines, t = ok(c, "e", "ENABLE QRESYNC", "ENABLE QRESYNC")
check(b"* ENABLED QRESYNC" in lines, "* ENABLED QRESYNC", lines)
ok(c, "k", 'CREATE "prot/Rinvii"', "mario creates a category")
lines, t = ok(c, "s", "SELECT prot/INBOX", "select INBOX")
uv_inbox = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(lines)).group(1))
ok(c, "cp", 'UID COPY 1:2 "prot/Rinvii"', "COPY both into it")
ok(c, "cp2", 'UID COPY 1 "prot/Rinvii"', "and UID 1 again: three labels")
lines, t = ok(c, "s2", "SELECT prot/Rinvii", "SELECT the category")
joined = b" ".join(lines)
uv = int(re.search(rb"UIDVALIDITY (\d+)", joined).group(1))
h = int(re.search(rb"HIGHESTMODSEQ (\d+)", joined).group(1))
check(b"* 3 EXISTS" in lines, "three messages", lines)

# Another session expunges UID 2 of the category: VANISHED, not EXPUNGE.
d = Raw()
check(d.login("mario"), "a second mario session")
ok(d, "s", "SELECT prot/Rinvii", "it selects the category")
ok(d, "x", "UID STORE 2 +FLAGS.SILENT (\\Deleted)", "marks UID 2 \\Deleted")
ok(d, "y", "UID EXPUNGE 2", "and expunges it")
lines, t = ok(c, "n", "NOOP", "NOOP in the QRESYNC session")
check(b"* VANISHED 2" in lines and not any(l.endswith(b"EXPUNGE") for l in lines),
      "with QRESYNC on, an expunge is * VANISHED 2 (§3.2.10)", lines)
lines, t = ok(d, "f", "UID STORE 3 +FLAGS ($Urgente)", "the other session flags UID 3")
lines, t = ok(c, "v", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)", "UID FETCH (CHANGEDSINCE VANISHED)")
check(lines and lines[0] == b"* VANISHED (EARLIER) 2", "VANISHED (EARLIER) first (§3.2.6)", lines)
f = fetched(lines)
check(sorted(f) == [3] and b"$Urgente" in f[3][0] and f[3][1] > h, "then only the changed message", lines)
lines, t = c.command("v2", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)")
check(t is not None and t.startswith(b"v2 BAD"), "VANISHED without UID -> BAD", (lines, t))

# A client back after the changes: SELECT (QRESYNC (uidvalidity modseq known-uids)).
lines, t = ok(c, "s3", "UNSELECT", "UNSELECT")
lines, t = ok(c, "s4", f"SELECT prot/Rinvii (QRESYNC ({uv} {h} 1:3))", "SELECT (QRESYNC ...)")
ix_v = next((i for i, l in enumerate(lines) if l.startswith(b"* VANISHED (EARLIER)")), None)
check(ix_v is not None and lines[ix_v] == b"* VANISHED (EARLIER) 2", "VANISHED (EARLIER) 2 (§3.2.5)", lines)
f = fetched(lines)
check(sorted(f) == [3] and f[3][1] is not None and b"$Urgente" in f[3][0], "and the flags of UID 3 with its MODSEQ", lines)
check(all(i > ix_v for i, l in enumerate(lines) if l.startswith(b"* ") and b"FETCH" in l), "VANISHED comes before the FETCHes", lines)
lines, t = ok(c, "s5", f"SELECT prot/Rinvii (QRESYNC ({uv + 1} {h}))", "SELECT (QRESYNC ...) with another UIDVALIDITY")
check(not any(b"VANISHED" in l or b"FETCH" in l for l in lines), "a UIDVALIDITY that changed: a full resync, no VANISHED", lines)
lines, t = ok(c, "s6", f"EXAMINE prot/INBOX (QRESYNC ({uv_inbox} {h0}))", "EXAMINE INBOX (QRESYNC ...)")
f = fetched(lines)
check(lines[0].startswith(b"* OK [CLOSED]") and sorted(f) == [1, 2], "[CLOSED], then INBOX's two changed messages", lines)
check(not any(l.startswith(b"* VANISHED") for l in lines), "INBOX lost nothing: no VANISHED", lines)

for r in (a, b, c, d):
    r.close()
done()
