"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4) against `pecgate serve`,
after imaptest's search-context-update tests: `SEARCH RETURN (UPDATE)`
answers at once and then, as messages change, arrive and are expunged,
sends `* ESEARCH (TAG "t") ADDTO (...)` / `REMOVEFROM (...)` (position 0
for SEARCH; the place in the sort order for SORT), REMOVEFROM before the
EXPUNGE in the numbers the client still has; a change made by another
session is told at the next command; CANCELUPDATE ends a context (an
unknown tag is BAD), a tag already in use is BAD; past four contexts
`NO [NOUPDATE "t"]`.

Without the feature `RETURN (UPDATE)` is a BAD and no ADDTO ever comes.

argv: port cafile data_dir. User mario (read, triage, send, delete on
prot); a category gets five messages.
"""
from common import check, done
from helpers import Raw

r = Raw()
check(r.login("mario"), "mario logs in")
lines, t = r.command("k", 'CREATE "prot/Viste"')
check(t is not None and t.startswith(b"k OK"), "a category", (lines, t))
DAY = [2, 4, 1, 5, 3]  # by DATE: 3 1 5 2 4


def msg(i, day, hour=10):
    return (f"From: a@example.it\r\nSubject: avviso {i}\r\nDate: Mon, {day:02d} Feb 2026 {hour:02d}:00:00 +0100\r\n"
            f"Message-ID: <v{i}@example.it>\r\n\r\ntesto {i}\r\n").encode()


for i in range(5):
    m = msg(i + 1, DAY[i])
    r.send(b'a%d APPEND "prot/Viste" {%d+}\r\n' % (i, len(m)) + m + b"\r\n")
    lines, t = r.until(b"a%d " % i)
    check(t is not None and t.startswith(b"a%d OK" % i), f"APPEND {i + 1}", (lines, t))
lines, t = r.command("s", 'SELECT "prot/Viste"')
check(t is not None and t.startswith(b"s OK") and b"* 5 EXISTS" in lines, "five messages", lines)

lines, t = r.command("u1", "SEARCH RETURN (UPDATE) SEEN")
check(lines == [b'* ESEARCH (TAG "u1")'] and t.startswith(b"u1 OK"), "RETURN (UPDATE) alone: just the tag", (lines, t))
lines, t = r.command("x1", "STORE 1,2,4 +FLAGS.SILENT (\\Seen)")
check(b'* ESEARCH (TAG "u1") ADDTO (0 1:2,4)' in lines, "three seen: ADDTO (0 1:2,4)", lines)
lines, t = r.command("x2", "STORE 1,2 -FLAGS.SILENT (\\Seen)")
check(b'* ESEARCH (TAG "u1") REMOVEFROM (0 1:2)' in lines, "two unseen: REMOVEFROM (0 1:2)", lines)

lines, t = r.command("u2", "UID SEARCH RETURN (UPDATE ALL) FLAGGED")
check(lines == [b'* ESEARCH (TAG "u2") UID'] and t.startswith(b"u2 OK"), "UID SEARCH RETURN (UPDATE ALL), none", (lines, t))
lines, t = r.command("u2", "SEARCH RETURN (UPDATE) SEEN")
check(t.startswith(b"u2 BAD"), "a second context under the same tag: BAD", (lines, t))
lines, t = r.command("u3", "SORT RETURN (UPDATE ALL) (DATE) UTF-8 SEEN")
check(lines == [b'* ESEARCH (TAG "u3") ALL 4'] and t.startswith(b"u3 OK"), "SORT RETURN (UPDATE ALL)", (lines, t))
lines, t = r.command("x3", "STORE 3,2 +FLAGS.SILENT (\\Seen)")
check(b'* ESEARCH (TAG "u1") ADDTO (0 2:3)' in lines, "SEARCH context: ADDTO (0 2:3)", lines)
check(b'* ESEARCH (TAG "u3") ADDTO (1 3,2)' in lines, "SORT context: 3 then 2 at the first places (3 2 4)", lines)

# Another session flags message 1: told to this one at its next command.
o = Raw()
check(o.login("mario"), "a second session")
o.command("os", 'SELECT "prot/Viste"')
lines, t = o.command("of", "STORE 1 +FLAGS.SILENT (\\Flagged)")
check(t is not None and t.startswith(b"of OK"), "the other session flags 1", (lines, t))
o.close()
lines, t = r.command("n1", "NOOP")
check(b'* ESEARCH (TAG "u2") UID ADDTO (0 1)' in lines, "another session's change: UID ADDTO at NOOP", lines)

lines, t = r.command("x4", "STORE 4 +FLAGS.SILENT (\\Deleted)")
lines, t = r.command("x5", "EXPUNGE")
rm1 = b'* ESEARCH (TAG "u1") REMOVEFROM (0 4)'
rm3 = b'* ESEARCH (TAG "u3") REMOVEFROM (3 4)'
check(rm1 in lines and rm3 in lines and b"* 4 EXPUNGE" in lines
      and lines.index(rm1) < lines.index(b"* 4 EXPUNGE") and lines.index(rm3) < lines.index(b"* 4 EXPUNGE"),
      "EXPUNGE: REMOVEFROM first, in the number before the EXPUNGE", lines)

m = msg(6, 1, 9)  # the oldest: first by DATE
r.send(b'a6 APPEND "prot/Viste" (\\Seen) {%d+}\r\n' % len(m) + m + b"\r\n")
lines, t = r.until(b"a6 ")
check(t is not None and t.startswith(b"a6 OK") and b"* 5 EXISTS" in lines, "APPEND a seen message", (lines, t))
check(b'* ESEARCH (TAG "u1") ADDTO (0 5)' in lines, "it joins the SEARCH context", lines)
check(b'* ESEARCH (TAG "u3") ADDTO (1 5)' in lines, "and the SORT context at the first place (the oldest date)", lines)

lines, t = r.command("c1", 'CANCELUPDATE "u1"')
check(t is not None and t.startswith(b"c1 OK"), "CANCELUPDATE u1", (lines, t))
lines, t = r.command("x6", "STORE 1 +FLAGS.SILENT (\\Seen)")
check(not any(b'"u1"' in l for l in lines) and b'* ESEARCH (TAG "u3") ADDTO (3 1)' in lines,
      "after CANCELUPDATE no more for u1; u3 goes on", lines)
lines, t = r.command("c2", 'CANCELUPDATE "u1"')
check(t is not None and t.startswith(b"c2 BAD"), "CANCELUPDATE of a tag with no context -> BAD", t)

for tag in ("u4", "u5"):
    lines, t = r.command(tag, "SEARCH RETURN (UPDATE COUNT) ALL")
    check(lines == [b'* ESEARCH (TAG "%s") COUNT 5' % tag.encode()], f"context {tag}", lines)
lines, t = r.command("u6", "SEARCH RETURN (UPDATE COUNT) ALL")
check(lines == [b'* NO [NOUPDATE "u6"] at most 4 searches are kept up to date at once; CANCELUPDATE one',
                b'* ESEARCH (TAG "u6") COUNT 5'] and t.startswith(b"u6 OK"),
      "a fifth context: NO [NOUPDATE], the result once", (lines, t))

lines, t = r.command("s2", 'SELECT "prot/Viste"')
lines, t = r.command("x7", "STORE 1:* -FLAGS.SILENT (\\Seen \\Flagged)")
check(not any(b"ESEARCH" in l for l in lines), "SELECT ends every context", lines)
r.close()
done()
