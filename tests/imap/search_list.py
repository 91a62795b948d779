"""ESEARCH (RFC 4731), LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819)
against `pecgate serve`, after the RFCs' examples. ESEARCH:
SEARCH RETURN (MIN COUNT), UID SEARCH RETURN (MIN MAX), RETURN () as ALL,
ALL as a sequence set, nothing found (COUNT 0 only), MODSEQ with CONDSTORE
criteria, SAVE refused with a reason, and a malformed RETURN still a BAD.
LIST: several patterns, (SUBSCRIBED), (SPECIAL-USE), RETURN (STATUS (...))
after each selectable name, refusals with a reason.

argv: port cafile data_dir. Users: mario (read, triage, send, delete on
prot). prot/INBOX holds 2 messages; a category gets five more.
"""
import re

from common import check, done
from helpers import Raw

r = Raw()
check(r.login("mario"), "mario logs in")
lines, t = r.command("c", "CAPABILITY")
check(b" ESEARCH" in b" ".join(lines), "ESEARCH is advertised", lines)
lines, t = r.command("k", 'CREATE "prot/Cerca"')
check(t is not None and t.startswith(b"k OK"), "a category to search in", (lines, t))
for i in range(1, 6):
    msg = f"From: a@example.it\r\nSubject: avviso {i}\r\nMessage-ID: <es{i}@example.it>\r\n\r\ntesto {i}\r\n".encode()
    r.send(b'a%d APPEND "prot/Cerca" (%s) {%d+}\r\n' % (i, b"\\Flagged" if i in (2, 3, 5) else b"", len(msg)) + msg + b"\r\n")
    lines, t = r.until(b"a%d " % i)
    check(t is not None and t.startswith(b"a%d OK" % i), f"APPEND {i}", (lines, t))
lines, t = r.command("s", 'SELECT "prot/Cerca"')
check(t is not None and t.startswith(b"s OK") and b"* 5 EXISTS" in lines, "five messages", lines)

lines, t = r.command("A282", "SEARCH RETURN (MIN COUNT) FLAGGED")
check(lines == [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'] and t.startswith(b"A282 OK"),
      "SEARCH RETURN (MIN COUNT) FLAGGED -> * ESEARCH (TAG \"A282\") MIN 2 COUNT 3", (lines, t))
lines, t = r.command("A283", "SEARCH RETURN () FLAGGED")
check(lines == [b'* ESEARCH (TAG "A283") ALL 2:3,5'], "RETURN () is ALL, as a sequence set", lines)
lines, t = r.command("A284", "UID SEARCH RETURN (MIN MAX) UNFLAGGED")
check(lines == [b'* ESEARCH (TAG "A284") UID MIN 1 MAX 4'], "UID SEARCH RETURN (MIN MAX): UIDs, with UID", lines)
lines, t = r.command("A285", 'search return (count all) subject "nessuno"')
check(lines == [b'* ESEARCH (TAG "A285") COUNT 0'] and t.startswith(b"A285 OK"), "nothing found: COUNT 0, no ALL", lines)
lines, t = r.command("A286", "SEARCH FLAGGED")
check(lines == [b"* SEARCH 2 3 5"], "a plain SEARCH is still * SEARCH", lines)

lines, t = r.command("m", "FETCH 4 (MODSEQ)")
check(lines[0].startswith(b"* OK [HIGHESTMODSEQ "), "the first MODSEQ command says HIGHESTMODSEQ first", lines)
m4 = int(re.search(rb"MODSEQ \((\d+)\)", lines[-1]).group(1))
lines, t = r.command("A287", "SEARCH RETURN (COUNT) MODSEQ 1")
check(lines == [b'* ESEARCH (TAG "A287") COUNT 5 MODSEQ %d' % max(
    int(re.search(rb"MODSEQ \((\d+)\)", l).group(1)) for l in r.command("m2", "FETCH 1:* (MODSEQ)")[0])],
      "with MODSEQ in the criteria, ESEARCH ends with MODSEQ (RFC 7162 §3.1.5)", lines)

lines, t = r.command("m3", "FETCH 1:* (MODSEQ)")
per = {int(re.match(rb"\* (\d+) FETCH", l).group(1)): int(re.search(rb"MODSEQ \((\d+)\)", l).group(1)) for l in lines}
lines, t = r.command("A28m", "SEARCH RETURN (MIN) MODSEQ 1")
check(lines == [b'* ESEARCH (TAG "A28m") MIN 1 MODSEQ %d' % per[1]],
      "RETURN (MIN) alone: the MODSEQ of that message, not of all found (RFC 4731 §3.2)", (lines, per))
lines, t = r.command("A288", "SEARCH RETURN (SAVE) ALL")
check(t is not None and t.startswith(b"A288 BAD") and b"SEARCHRES" in t, "RETURN (SAVE) -> BAD naming SEARCHRES", t)
lines, t = r.command("A289", "SEARCH RETURN (MIN) NOSUCHKEY")
check(t is not None and t.startswith(b"A289 BAD"), "an unknown search key after RETURN -> BAD", t)
lines, t = r.command("A290", "NOOP")
check(t is not None and t.startswith(b"A290 OK"), "the session goes on", t)

def names(lines):
    return [l.rsplit(b" ", 1)[-1].strip(b'"').decode() for l in lines if l.startswith(b"* LIST")]


lines, t = r.command("c2", "CAPABILITY")
caps = b" ".join(lines)
check(b" LIST-EXTENDED" in caps and b" LIST-STATUS" in caps, "LIST-EXTENDED and LIST-STATUS are advertised", caps)
lines, t = r.command("L1", 'LIST "" ("prot/INBOX" "prot/Sent" "prot/Cerca")')
check(t.startswith(b"L1 OK") and sorted(names(lines)) == ["prot/Cerca", "prot/INBOX", "prot/Sent"],
      "several patterns, each name once", lines)
lines, t = r.command("L2", 'LIST (SUBSCRIBED) "" "prot/%"')
check(t.startswith(b"L2 OK") and lines and all(b"\\Subscribed" in l for l in lines if b"\\Noselect" not in l),
      "(SUBSCRIBED): the subscribed folders, each saying \\Subscribed", lines)
lines, t = r.command("L3", 'LIST (SPECIAL-USE) "" "prot/*"')
n = names(lines)
check(t.startswith(b"L3 OK") and "prot/Sent" in n and "prot/Cerca" not in n and "prot/INBOX" not in n,
      "(SPECIAL-USE): only folders with a special use", lines)
lines, t = r.command("L4", 'LIST "" "prot/Cerca" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))')
ix = next((i for i, l in enumerate(lines) if l.startswith(b"* LIST") and l.rstrip(b'"').endswith(b"prot/Cerca")), None)
check(ix is not None and ix + 1 < len(lines)
      and re.match(rb'\* STATUS "?prot/Cerca"? \(MESSAGES 5 UNSEEN 5 UIDNEXT 6\)', lines[ix + 1]),
      "RETURN (STATUS (...)): * STATUS right after the folder's LIST", lines)
lines, t = r.command("L5", 'LIST "" "prot" RETURN (STATUS (MESSAGES))')
check(t.startswith(b"L5 OK") and not any(l.startswith(b"* STATUS") for l in lines),
      "no STATUS for a name that cannot be selected", lines)
lines, t = r.command("L6", 'LIST (NOSUCH) "" "*"')
check(t.startswith(b"L6 BAD") and b"SUBSCRIBED" in t, "an unknown selection option -> BAD with the ones offered", t)
lines, t = r.command("L7", 'LIST "" "*" RETURN (MYRIGHTS)')
check(t.startswith(b"L7 BAD"), "an unknown return option -> BAD", t)
lines, t = r.command("L9", 'LIST (RECURSIVEMATCH) "" ""')
check(t.startswith(b"L9 BAD"), "RECURSIVEMATCH alone -> BAD (RFC 5258 §3)", t)
lines, t = r.command("L8", 'LIST "" "prot/Cerca"')
check(len(lines) == 1 and re.match(rb'\* LIST \(\\HasNoChildren\) "/" "?prot/Cerca"?$', lines[0]), "a plain LIST is as before", lines)
r.close()
done()
