"""CATENATE (RFC 4469) against `pecgate serve`, after the RFC's example
(§5: an APPEND whose message is a stored message's header, new text and
a stored part's MIME header and body) and imaptest's catenate tests:
TEXT parts alone, URL parts with and without UIDVALIDITY, SECTION=HEADER
/ TEXT / 1 / 1.MIME, PARTIAL, a URL into another folder the user may read
(prot/INBOX), CATENATE beside MULTIAPPEND; NO [BADURL "url"] (nothing
stored) for a wrong UIDVALIDITY, a missing UID, a mailbox the user may
not read (tributi), a URL to another server; NO [TRYCREATE] for a target
folder that is not there, whatever the URLs.

Without the feature every CATENATE line is answered BAD [PARSE].

argv: port cafile data_dir. User mario (read, triage, send, delete on
prot; nothing on tributi).
"""
import re

from common import check, done
from helpers import Raw

r = Raw()
check(r.login("mario"), "mario logs in")
lines, t = r.command("c", "CAPABILITY")
check(b"CATENATE" in b" ".join(lines).split(), "CATENATE is advertised", lines)
r.command("k", 'CREATE "prot/Bozze"')
r.command("k2", 'CREATE "prot/Unite"')

HDR = b"From: mario@example.it\r\nTo: ufficio@example.it\r\nSubject: bozza\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
P1 = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nprima parte\r\n"
BODY = b"--b1\r\n" + P1 + b"--b1--\r\n"
M = HDR + BODY
r.send(b'a APPEND "prot/Bozze" {%d+}\r\n' % len(M) + M + b"\r\n")
lines, t = r.until(b"a ")
m = re.search(rb"APPENDUID (\d+) (\d+)", t or b"")
check(m is not None, "a draft to take parts of", (lines, t))
uv, uid = int(m.group(1)), int(m.group(2))


def append(tag, box, cat):
    """APPEND box (\\Seen) CATENATE (cat): each TEXT's bytes as a literal+."""
    out = b'%s APPEND "%s" (\\Seen) CATENATE (' % (tag.encode(), box.encode())
    parts = []
    for kind, v in cat:
        parts.append(b'URL "%s"' % v.encode() if kind == "url" else b"TEXT {%d+}\r\n" % len(v) + v)
    r.send(out + b" ".join(parts) + b")\r\n")
    return r.until(tag.encode() + b" ")


def body_of(tag, n):
    lines, t = r.command(tag, f"FETCH {n} (BODY.PEEK[])")
    blob = b"\r\n".join(lines)
    lit = re.search(rb"BODY\[\] \{(\d+)\}\r\n", blob)
    return blob[lit.end():lit.end() + int(lit.group(1))] if lit else None


url = f"/prot/Bozze;UIDVALIDITY={uv}/;UID={uid}"
# RFC 4469 §5's shape: header of the draft, new text, the part's MIME header and body.
new = b"--b1\r\nContent-Type: text/plain\r\n\r\nnuovo testo\r\n--b1\r\n"
lines, t = append("A003", "prot/Unite", [("url", url + "/;SECTION=HEADER"), ("text", new),
                                          ("url", url + "/;SECTION=1.MIME"), ("url", url + "/;SECTION=1"),
                                          ("text", b"\r\n--b1--\r\n")])
check(t is not None and t.startswith(b"A003 OK") and b"APPENDUID" in t, "APPEND CATENATE (URL TEXT URL URL TEXT) -> OK [APPENDUID]", (lines, t))
lines, t = r.command("s", 'SELECT "prot/Unite"')
check(b"* 1 EXISTS" in lines, "one message in the target", lines)
want = HDR + new + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + b"prima parte" + b"\r\n--b1--\r\n"
got = body_of("f1", 1)
check(got == want, "the message is the parts in order", (got, want))

lines, t = append("A004", "prot/Unite", [("text", b"From: a@example.it\r\n\r\n"), ("text", b"solo testo\r\n")])
check(t is not None and t.startswith(b"A004 OK") and b"* 2 EXISTS" in lines, "TEXT parts only; EXISTS before the OK", (lines, t))
check(body_of("f2", 2) == b"From: a@example.it\r\n\r\nsolo testo\r\n", "TEXT parts joined", None)

lines, t = append("A005", "prot/Unite", [("url", f"/prot/Bozze/;uid={uid}/;section=text"), ("text", b"x\r\n"),
                                          ("url", f"/prot/Bozze/;uid={uid}/;partial=100000.1")])
check(t is not None and t.startswith(b"A005 OK"), "URL without UIDVALIDITY, SECTION=TEXT, a PARTIAL past the end", (lines, t))
check(body_of("f3", 3) == BODY + b"x\r\n", "TEXT of the draft, then x, then nothing", None)

lines, t = append("A006", "prot/Unite", [("url", "/prot/INBOX/;UID=1/;SECTION=HEADER"), ("text", b"da INBOX\r\n")])
check(t is not None and t.startswith(b"A006 OK"), "a URL into another folder mario may read", (lines, t))
got = body_of("f4", 4)
check(got is not None and got.endswith(b"\r\n\r\nda INBOX\r\n") and b"Subject" in got, "INBOX's header, then the text", got)

for tag, bad_url in (("B1", f"/prot/Bozze;UIDVALIDITY={uv + 1}/;UID={uid}/;SECTION=HEADER"),
                     ("B2", f"/prot/Bozze/;UID={uid + 99}"),
                     ("B3", "/tributi/INBOX/;UID=1"),
                     ("B4", f"imap://mario@example.it/prot/Bozze/;UID={uid}")):
    lines, t = append(tag, "prot/Unite", [("text", b"Hdr: 1\r\n\r\n"), ("url", bad_url), ("text", b"x\r\n")])
    check(t is not None and t.startswith(b'%s NO [BADURL "%s"]' % (tag.encode(), bad_url.encode())),
          f"{bad_url} -> NO [BADURL]", (lines, t))
lines, t = r.command("n", "NOOP")
check(not any(b"EXISTS" in l for l in lines), "nothing was stored by the refused ones", lines)

lines, t = append("T1", "prot/Nessuna", [("url", f"/prot/Bozze;UIDVALIDITY={uv + 1}/;UID={uid}")])
check(t is not None and t.startswith(b"T1 NO [TRYCREATE]"), "a target that is not there: TRYCREATE first", (lines, t))

# CATENATE beside MULTIAPPEND (imaptest catenate-multiappend).
m2 = b"New: Message\r\n\r\nbody4\r\n"
r.send(b'M1 APPEND "prot/Unite" CATENATE (URL "%s") {%d+}\r\n%s CATENATE (TEXT {2+}\r\nhi)\r\n' % (url.encode(), len(m2), m2))
lines, t = r.until(b"M1 ")
check(t is not None and t.startswith(b"M1 OK") and re.search(rb"APPENDUID \d+ \d+:\d+", t), "CATENATE, a literal, CATENATE in one APPEND", (lines, t))
check(body_of("f5", 5) == M and body_of("f6", 6) == m2 and body_of("f7", 7) == b"hi", "the three messages", None)
r.close()
done()
