"""SORT and THREAD (RFC 5256) with imaplib, on the fixture of
tests/data/sort-thread archived in prot/INBOX (run by tests/imap_sort.rs).

The expected answers are Dovecot 2.3.19.1's to the same messages (the
fixture's README): after the first message is expunged, message n has
UID n + 1.
"""

import imaplib

from common import check, done, login

SORTS = [
    (("(ARRIVAL)", "UTF-8", "ALL"), b"3 1 2 4 5 6 7 8"),
    (("(DATE)", "UTF-8", "ALL"), b"3 1 8 5 2 4 6 7"),
    (("(REVERSE DATE)", "UTF-8", "ALL"), b"7 6 4 2 5 1 8 3"),
    (("(SUBJECT)", "UTF-8", "ALL"), b"6 3 4 1 2 5 8 7"),
    (("(SUBJECT DATE)", "UTF-8", "ALL"), b"6 3 4 1 8 5 2 7"),
    (("(FROM)", "UTF-8", "ALL"), b"3 2 5 4 7 1 8 6"),
    (("(REVERSE FROM)", "UTF-8", "ALL"), b"6 1 8 4 7 2 5 3"),
    (("(TO)", "UTF-8", "ALL"), b"6 8 4 1 5 2 3 7"),
    (("(CC)", "UTF-8", "ALL"), b"1 3 5 6 7 8 4 2"),
    (("(SIZE)", "UTF-8", "ALL"), b"6 3 1 7 8 4 2 5"),
    (("(REVERSE SIZE)", "UTF-8", "ALL"), b"5 2 4 8 7 1 3 6"),
    (("(REVERSE ARRIVAL)", "UTF-8", "FROM", "avvocato"), b"5 2"),
    (("(DATE)", "UTF-8", "SUBJECT", "pratica"), b"1 8 5 2"),
    (("(DATE)", "US-ASCII", "ALL"), b"3 1 8 5 2 4 6 7"),
    (("(DATE)", "UTF-8", "SUBJECT", "nonesuch"), b""),
]
UID_SORTS = [
    (("(DATE)", "UTF-8", "ALL"), b"4 2 9 6 3 5 7 8"),
    (("(REVERSE SUBJECT REVERSE ARRIVAL)", "UTF-8", "NOT", "FROM", "zorro"), b"8 9 6 3 2 5 4"),
]
THREADS = [
    (("REFERENCES", "UTF-8", "ALL"), b"(3 4)((1 (5)(2))(8))((6)(7))"),
    (("ORDEREDSUBJECT", "UTF-8", "ALL"), b"(3 4)(1 (8)(5)(2))(6)(7)"),
    (("REFERENCES", "US-ASCII", "SUBJECT", "pratica"), b"((1 (5)(2))(8))"),
    (("ORDEREDSUBJECT", "UTF-8", "SUBJECT", "nonesuch"), b""),
]
UID_THREADS = [
    (("REFERENCES", "UTF-8", "ALL"), b"(4 5)((2 (6)(3))(9))((7)(8))"),
    (("ORDEREDSUBJECT", "UTF-8", "SUBJECT", "pratica"), b"(2 (9)(6)(3))"),
]

m = login("mario")
for cap in ("SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"):
    check(cap in m.capabilities, f"capability {cap}", m.capabilities)
typ, data = m.select("prot/INBOX")
check(typ == "OK" and data == [b"9"], "select", data)
# The first message goes, so that UIDs are not sequence numbers.
m.store("1", "+FLAGS.SILENT", "(\\Deleted)")
typ, data = m.expunge()
check(typ == "OK" and data == [b"1"], "expunge the first message", data)

for args, want in SORTS:
    typ, data = m.sort(*args)
    check((typ, data) == ("OK", [want]), f"SORT {' '.join(args)}", (typ, data))
for args, want in UID_SORTS:
    typ, data = m.uid("SORT", *args)
    check((typ, data) == ("OK", [want]), f"UID SORT {' '.join(args)}", (typ, data))
for args, want in THREADS:
    typ, data = m.thread(*args)
    check((typ, data) == ("OK", [want]), f"THREAD {' '.join(args)}", (typ, data))
for args, want in UID_THREADS:
    typ, data = m.uid("THREAD", *args)
    check((typ, data) == ("OK", [want]), f"UID THREAD {' '.join(args)}", (typ, data))

# SORT (SIZE) agrees with the sizes FETCH reports.
typ, data = m.fetch("1:*", "(RFC822.SIZE)")
sizes = [int(d.split(b"RFC822.SIZE ")[1].rstrip(b")")) for d in data]
by_size = sorted(range(1, len(sizes) + 1), key=lambda n: (sizes[n - 1], n))
typ, data = m.sort("(SIZE)", "UTF-8", "ALL")
check(data == [" ".join(map(str, by_size)).encode()], "SORT (SIZE) follows RFC822.SIZE", (sizes, data))

# Charsets other than UTF-8 and US-ASCII: NO [BADCHARSET (...)].
for cmd, args in (("SORT", ("(DATE)", "ISO-8859-1", "ALL")), ("THREAD", ("REFERENCES", "KOI8-R", "ALL"))):
    typ, data = m._simple_command(cmd, *args)
    check(typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]"), f"{cmd} in {args[1]}", (typ, data))
    check(m.untagged_responses.pop(cmd, None) is None, f"{cmd} in {args[1]} answers nothing", m.untagged_responses)

# An unknown algorithm: BAD. (SORT=DISPLAY's keys are offered since
# imap-ext: tests/imap/esort.py.)
for cmd, args, text in (
    ("THREAD", ("FOO", "UTF-8", "ALL"), "unknown threading algorithm"),
):
    try:
        typ, data = m._simple_command(cmd, *args)
        check(False, f"{cmd} {args[0]} is refused", (typ, data))
    except imaplib.IMAP4.error as e:
        check(" BAD" in str(e) and text in str(e), f"{cmd} {args[0]} is refused", e)

# The session goes on.
typ, data = m.noop()
check(typ == "OK", "NOOP after the refusals", data)

# A read-only user in a folder opened with EXAMINE gets the same answers.
ro = login("ro")
typ, data = ro.select("prot/INBOX", readonly=True)
check(typ == "OK", "ro examines", data)
typ, data = ro.thread("REFERENCES", "UTF-8", "ALL")
check((typ, data) == ("OK", [THREADS[0][1]]), "ro THREAD REFERENCES", (typ, data))
typ, data = ro.uid("SORT", "(DATE)", "UTF-8", "ALL")
check((typ, data) == ("OK", [UID_SORTS[0][1]]), "ro UID SORT (DATE)", (typ, data))
ro.logout()
m.logout()
done()
