"""NOTIFY (RFC 5465) against `pecgate serve`, after imaptest's notify test
and the RFC's examples: NOTIFY SET STATUS answers the current state of
each folder named, with the items its events cover (MessageExpunge:
MESSAGES; MessageNew: MESSAGES UIDNEXT UIDVALIDITY; FlagChange:
UIDVALIDITY HIGHESTMODSEQ); without STATUS nothing at once; then a change
another session makes to a watched folder is told as `* STATUS` with no
command running; with (SELECTED ...) the selected folder's EXISTS and
FETCH FLAGS come as soon as they happen, as in IDLE; an event not offered
is NO [BADEVENT (...)]; NOTIFY NONE stops it all.

Without the feature NOTIFY is BAD [PARSE] and nothing is told between
commands.

argv: port cafile data_dir. User mario (read, triage, send, delete on
prot).
"""
import re

from common import check, done
from helpers import Raw

r = Raw()
check(r.login("mario"), "mario logs in")
lines, t = r.command("c", "CAPABILITY")
check(b"NOTIFY" in b" ".join(lines).split(), "NOTIFY is advertised", lines)
r.command("k", 'CREATE "prot/Avvisi"')
MSG = b"From: a@example.it\r\nSubject: avviso\r\n\r\ntesto\r\n"


def append(conn, tag):
    conn.send(b'%s APPEND "prot/Avvisi" {%d+}\r\n' % (tag.encode(), len(MSG)) + MSG + b"\r\n")
    return conn.until(tag.encode() + b" ")


lines, t = append(r, "a1")
uv = int(re.search(rb"APPENDUID (\d+)", t).group(1))

lines, t = r.command("n1", "NOTIFY SET STATUS (mailboxes prot/Avvisi (MessageExpunge))")
check(t.startswith(b"n1 OK") and lines == [b"* STATUS prot/Avvisi (MESSAGES 1)"], "STATUS (MessageExpunge): MESSAGES", (lines, t))
lines, t = r.command("n2", "NOTIFY SET STATUS (mailboxes prot/Avvisi (MessageNew))")
check(t.startswith(b"n2 OK") and lines == [b"* STATUS prot/Avvisi (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d)" % uv],
      "STATUS (MessageNew): MESSAGES UIDNEXT UIDVALIDITY", (lines, t))
lines, t = r.command("n3", 'NOTIFY SET STATUS (mailboxes "prot/Avvisi" (FlagChange))')
check(t.startswith(b"n3 OK") and len(lines) == 1
      and re.fullmatch(rb"\* STATUS prot/Avvisi \(UIDVALIDITY %d HIGHESTMODSEQ \d+\)" % uv, lines[0]),
      "STATUS (FlagChange): UIDVALIDITY HIGHESTMODSEQ", (lines, t))
lines, t = r.command("n4", "NOTIFY SET (mailboxes prot/Avvisi (MessageNew MessageExpunge FlagChange))")
check(t.startswith(b"n4 OK") and lines == [], "without STATUS nothing at once", (lines, t))

o = Raw()
check(o.login("mario"), "a second session")
lines, t = append(o, "o1")
check(t is not None and t.startswith(b"o1 OK"), "the other session appends", (lines, t))
got = r.line(5)
check(got is not None and re.fullmatch(rb"\* STATUS prot/Avvisi \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY %d HIGHESTMODSEQ \d+\)" % uv, got),
      "told at once, no command running: * STATUS with what changed", got)

lines, t = r.command("s", 'SELECT "prot/Avvisi"')
lines, t = r.command("n5", "NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (personal (MessageNew))")
check(t.startswith(b"n5 OK"), "NOTIFY SET (selected ...) (personal ...)", (lines, t))
o.command("os", 'SELECT "prot/Avvisi"')
lines, t = o.command("of", "STORE 1 +FLAGS.SILENT (\\Flagged)")
got = r.line(5)
check(got is not None and got.startswith(b"* 1 FETCH (") and b"\\Flagged" in got, "SELECTED: a flag change told at once", got)
lines, t = append(o, "o2")
got = [r.line(5), r.line(5)]
check(b"* 3 EXISTS" in got, "SELECTED: a new message told at once", got)

lines, t = r.command("n6", "NOTIFY SET (personal (MailboxName))")
check(t.startswith(b"n6 NO [BADEVENT (MessageNew MessageExpunge FlagChange)]"), "an event not offered: BADEVENT", t)
lines, t = r.command("n7", "NOTIFY SET (nosuch (MessageNew))")
check(t.startswith(b"n7 BAD"), "an unknown filter: BAD", t)
lines, t = r.command("n8", "NOTIFY NONE")
check(t.startswith(b"n8 OK"), "NOTIFY NONE", t)
lines, t = o.command("of2", "STORE 1 -FLAGS.SILENT (\\Flagged)")
check(r.line(1.5) is None, "after NOTIFY NONE nothing between commands", None)
lines, t = r.command("n9", "NOOP")
check(any(l.startswith(b"* 1 FETCH") for l in lines), "the change is told at the next command, as before", lines)
o.close()
r.close()
done()
