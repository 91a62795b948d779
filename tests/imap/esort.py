"""ESORT (RFC 5267 §3), SORT=DISPLAY (RFC 5957) and PARTIAL (RFC 9394)
against `pecgate serve`, after the RFCs' examples. ESORT: `SORT RETURN
(MIN)`, `(MAX)`, `(MIN MAX COUNT ALL)` answered `* ESEARCH (TAG ...)`,
MIN and MAX the first and last *sorted* (not the lowest numbers), ALL in
sort order, UID SORT with UID, `RETURN ()` as ALL, nothing found. SORT
(DISPLAYFROM): the display name, else the address, a group's name,
encoded words decoded. PARTIAL: windows on SORT and SEARCH results,
counted from the end with negative ranges, NIL past the end, and BAD for
a malformed range.

Without the features every ESORT / PARTIAL line is answered `BAD [PARSE]`
and DISPLAYFROM `BAD` (SORT=DISPLAY not offered).

argv: port cafile data_dir. User mario (read, triage, send, delete on
prot); a category gets five messages.
"""
from common import check, done
from helpers import Raw

r = Raw()
check(r.login("mario"), "mario logs in")
lines, t = r.command("c", "CAPABILITY")
caps = b" ".join(lines).split()
for cap in (b"ESORT", b"SORT=DISPLAY", b"PARTIAL", b"CONTEXT=SEARCH", b"CONTEXT=SORT"):
    check(cap in caps, f"{cap.decode()} is advertised", caps)
lines, t = r.command("k", 'CREATE "prot/Ordina"')
check(t is not None and t.startswith(b"k OK"), "a category to sort in", (lines, t))
# Sent on: 1 the 2nd, 2 the 4th, 3 the 1st, 4 the 5th, 5 the 3rd: by DATE 3 1 5 2 4.
FROM = ["Zeta <z@example.it>", "alfa@example.it", "=?utf-8?q?Beta?= <b@example.it>",
        "gamma: g@example.it;", "Delta <d@example.it>"]
DAY = [2, 4, 1, 5, 3]
for i in range(5):
    msg = (f"From: {FROM[i]}\r\nTo: u@example.it\r\nSubject: pratica {i + 1}\r\n"
           f"Date: Mon, {DAY[i]:02d} Feb 2026 10:00:00 +0100\r\nMessage-ID: <o{i}@example.it>\r\n\r\ntesto\r\n").encode()
    r.send(b'a%d APPEND "prot/Ordina" {%d+}\r\n' % (i, len(msg)) + msg + b"\r\n")
    lines, t = r.until(b"a%d " % i)
    check(t is not None and t.startswith(b"a%d OK" % i), f"APPEND {i + 1}", (lines, t))
lines, t = r.command("s", 'SELECT "prot/Ordina"')
check(t is not None and t.startswith(b"s OK") and b"* 5 EXISTS" in lines, "five messages", lines)


def one(tag, cmd, want, what):
    lines, t = r.command(tag, cmd)
    check(lines == [want] and t is not None and t.startswith(tag.encode() + b" OK"), what, (lines, t))


one("p", "SORT (DATE) UTF-8 ALL", b"* SORT 3 1 5 2 4", "plain SORT as before")
# RFC 5267 §3.2's example: C: A282 SORT RETURN (MIN) (DATE) UTF-8 SINCE 1-Feb-1994
one("A282", "SORT RETURN (MIN) (DATE) UTF-8 SINCE 1-Feb-1994", b'* ESEARCH (TAG "A282") MIN 3',
    "SORT RETURN (MIN): the first sorted, as ESEARCH")
one("A283", "SORT RETURN (MAX) (DATE) UTF-8 ALL", b'* ESEARCH (TAG "A283") MAX 4', "SORT RETURN (MAX): the last sorted")
one("A284", "SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL",
    b'* ESEARCH (TAG "A284") MIN 3 MAX 4 COUNT 5 ALL 3,1,5,2,4', "MIN MAX COUNT ALL; ALL in sort order")
one("A285", "UID SORT RETURN (ALL) (REVERSE DATE) UTF-8 1:*", b'* ESEARCH (TAG "A285") UID ALL 4,2,5,1,3',
    "UID SORT RETURN: UIDs, with UID")
one("A286", "SORT RETURN () (ARRIVAL) US-ASCII ALL", b'* ESEARCH (TAG "A286") ALL 1:5', "RETURN () is ALL")
one("A287", 'SORT RETURN (COUNT MIN) (DATE) UTF-8 SUBJECT "nessuno"', b'* ESEARCH (TAG "A287") COUNT 0',
    "nothing found: COUNT 0, no MIN")
lines, t = r.command("A288", "SORT RETURN (NOSUCH) (DATE) UTF-8 ALL")
check(t is not None and t.startswith(b"A288 BAD") and b"[PARSE]" not in t, "an unknown return option: BAD with a reason", t)

one("d1", "SORT (DISPLAYFROM) UTF-8 ALL", b"* SORT 2 3 5 4 1",
    "DISPLAYFROM: alfa@example.it, Beta (decoded), Delta, gamma (a group's name), Zeta")
one("d2", "SORT (REVERSE DISPLAYFROM) UTF-8 ALL", b"* SORT 1 4 5 3 2", "REVERSE DISPLAYFROM")
one("d3", "SORT (DISPLAYTO DATE) UTF-8 ALL", b"* SORT 3 1 5 2 4", "DISPLAYTO: all the same, then DATE")

one("P1", "SORT RETURN (PARTIAL 2:3) (DATE) UTF-8 ALL", b'* ESEARCH (TAG "P1") PARTIAL (2:3 1,5)',
    "SORT PARTIAL 2:3: the second and third sorted")
one("P2", "SORT RETURN (PARTIAL 3:2) (DATE) UTF-8 ALL", b'* ESEARCH (TAG "P2") PARTIAL (2:3 1,5)', "3:2 is 2:3")
one("P3", "SORT RETURN (PARTIAL -1:-2) (DATE) UTF-8 ALL", b'* ESEARCH (TAG "P3") PARTIAL (-1:-2 2,4)',
    "PARTIAL -1:-2: the last two sorted (RFC 9394)")
one("P4", "SEARCH RETURN (PARTIAL 1:3) ALL", b'* ESEARCH (TAG "P4") PARTIAL (1:3 1:3)', "SEARCH PARTIAL 1:3")
one("P5", "SEARCH RETURN (COUNT PARTIAL 2:10) 2,4:5", b'* ESEARCH (TAG "P5") COUNT 3 PARTIAL (2:10 4:5)',
    "COUNT counts all, PARTIAL cuts its window")
one("P6", "SEARCH RETURN (PARTIAL 6:6) ALL", b'* ESEARCH (TAG "P6") PARTIAL (6:6 NIL)', "past the end: NIL")
one("P7", "UID SEARCH RETURN (PARTIAL -1:-2) ALL", b'* ESEARCH (TAG "P7") UID PARTIAL (-1:-2 4:5)',
    "UID SEARCH PARTIAL -1:-2: the newest two (RFC 9394 §3.1)")
for tag, bad in (("B1", "PARTIAL 1"), ("B2", "PARTIAL 1:*"), ("B3", "PARTIAL *:1"), ("B4", "PARTIAL -1:2"),
                 ("B5", "ALL PARTIAL 1:2")):
    lines, t = r.command(tag, f"SEARCH RETURN ({bad}) ALL")
    check(t is not None and t.startswith(tag.encode() + b" BAD"), f"RETURN ({bad}) -> BAD", t)
lines, t = r.command("n", "NOOP")
check(t is not None and t.startswith(b"n OK"), "the session goes on", t)
r.close()
done()
