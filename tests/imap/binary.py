"""BINARY (RFC 3516) and MULTIAPPEND (RFC 3502) against `pecgate serve`.
BINARY: APPEND of a literal8, FETCH
BINARY[part] with the transfer encoding undone (base64, quoted-printable),
as a literal8 when the bytes hold NUL, BINARY.SIZE, a partial range,
BINARY (not .PEEK) setting \\Seen, and NO [UNKNOWN-CTE] for an encoding it
cannot undo. MULTIAPPEND: two messages in one APPEND with synchronising
literals (EXISTS before the OK, APPENDUID naming both), and a refused
message storing none of them. Raw lines over TLS (imaplib cannot read
`~{n}`).

argv: port cafile data_dir. Users: anna (read, triage on prot), mario
(read, triage, send, delete on prot; prot is protocollo@pec.example.it).
"""
import base64
import re

from common import check, done
from helpers import Raw

ALL = bytes(range(256))
QP_TEXT = "perché il sollecito è urgente"
MSG = (
    b"From: anna@example.it\r\nTo: ufficio@example.it\r\nSubject: allegati\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"perch=C3=A9 il sollecito =C3=A8 =\r\nurgente\r\n"
    b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(ALL).replace(b"\n", b"\r\n")
    + b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n`\r\nend\r\n"
    b"--zz--\r\n"
)

r = Raw()
check(r.login("anna"), "anna logs in")
lines, t = r.command("c", "CAPABILITY")
check(b" BINARY" in b" ".join(lines), "BINARY is advertised", lines)
lines, t = r.command("k", 'CREATE "prot/Allegati"')
check(t is not None and t.startswith(b"k OK"), "anna creates a category", (lines, t))

# APPEND with a literal8 (~{n}): synchronising, so wait for the "+".
r.send(b'a APPEND "prot/Allegati" ~{%d}\r\n' % len(MSG))
cont = r.line()
check(cont is not None and cont.startswith(b"+"), "the server asks for the literal8's bytes", cont)
r.send(MSG + b"\r\n")
lines, t = r.until(b"a ")
check(t is not None and t.startswith(b"a OK") and b"APPENDUID" in t, "APPEND of a literal8 -> OK [APPENDUID]", (lines, t))
uid = int(re.search(rb"APPENDUID \d+ (\d+)", t).group(1))

lines, t = r.command("s", 'SELECT "prot/Allegati"')
check(t is not None and t.startswith(b"s OK"), "SELECT the category", (lines, t))

lines, t = r.command("f1", f"UID FETCH {uid} (BINARY.PEEK[2] BINARY.SIZE[2])")
check(t is not None and t.startswith(b"f1 OK"), "FETCH BINARY.PEEK[2] BINARY.SIZE[2]", (lines, t))
blob = b"\r\n".join(lines)
check(b"BINARY[2] ~{256}\r\n" + ALL in blob, "base64 undone: the 256 bytes, as a literal8 (they hold NUL)", blob[:200])
check(b"BINARY.SIZE[2] 256" in blob, "BINARY.SIZE is the decoded size", blob[-80:])

lines, t = r.command("f2", f"UID FETCH {uid} (BINARY.PEEK[1])")
want = QP_TEXT.encode()
check(t is not None and t.startswith(b"f2 OK") and (b"BINARY[1] {%d}\r\n" % len(want)) + want in b"\r\n".join(lines),
      "quoted-printable undone (UTF-8 bytes, soft break joined), as a plain literal", lines)

lines, t = r.command("f3", f"UID FETCH {uid} (BINARY.PEEK[2]<250.10>)")
check(b"\r\n".join(lines).endswith(b"BINARY[2]<250> {6}\r\n" + ALL[250:] + b")"),
      "a partial range of the decoded bytes, with its origin (no NUL in it: a plain literal)", lines)
# imaptest fetch-binary-mime-base64: the origin of a partial BINARY, as
# BODY[]<0> has one (RFC 3516 erratum 7246), among other items.
lines, t = r.command("f3b", f"UID FETCH {uid} (BINARY.PEEK[1]<0.7> BINARY.SIZE[1] BINARY.PEEK[2]<0.3>)")
blob = b"\r\n".join(lines)
check(t is not None and t.startswith(b"f3b OK")
      and blob == b"* 1 FETCH (UID %d BINARY[1]<0> {7}\r\n%s BINARY.SIZE[1] %d BINARY[2]<0> ~{3}\r\n\x00\x01\x02)"
      % (uid, QP_TEXT.encode()[:7], len(QP_TEXT.encode())),
      "FETCH (BINARY.PEEK[1]<0.7> ...) -> BINARY[1]<0> {7}, BINARY[2]<0> ~{3}", blob)

lines, t = r.command("f4", f"UID FETCH {uid} (BINARY.PEEK[3])")
check(t is not None and t.startswith(b"f4 NO [UNKNOWN-CTE]"), "x-uuencode -> NO [UNKNOWN-CTE]", (lines, t))

lines, t = r.command("f5", f"UID FETCH {uid} (FLAGS)")
check(b"\\Seen" not in b" ".join(lines), "BINARY.PEEK left the message unseen", lines)
lines, t = r.command("f6", f"UID FETCH {uid} (BINARY[1])")
check(t is not None and t.startswith(b"f6 OK") and b"\\Seen" in b" ".join(lines), "BINARY[1] sets \\Seen (and says so)", lines)

lines, t = r.command("f7", f"UID FETCH {uid} (BINARY.PEEK[])")
check(MSG in b"\r\n".join(lines), "BINARY[] is the whole message as archived", lines[:1])

# A part in binary holding NUL (imaptest's append-binary): stored in base64,
# so BODY[1] is a valid literal and BINARY[1] the bytes as sent.
raw_part = b"\x00\x2d\xe4\r\n\x00\r\n"
nulmsg = (b"From: anna@example.it\r\nSubject: nul\r\nContent-Transfer-Encoding: binary\r\n\r\n" + raw_part)
r.send(b'a2 APPEND "prot/Allegati" ~{%d}\r\n' % len(nulmsg))
cont = r.line()
check(cont is not None and cont.startswith(b"+"), "literal8 with NUL: go ahead", cont)
r.send(nulmsg + b"\r\n")
lines, t = r.until(b"a2 ")
check(t is not None and t.startswith(b"a2 OK"), "APPEND of a binary part holding NUL", (lines, t))
nuid = int(re.search(rb"APPENDUID \d+ (\d+)", t).group(1))
lines, t = r.command("f9", f"UID FETCH {nuid} (BODY.PEEK[1] BINARY.PEEK[1])")
blob = b"\r\n".join(lines)
enc = base64.b64encode(raw_part)
check(b"BODY[1] {%d}\r\n" % len(enc) + enc in blob and b"\x00" not in blob.split(b"BINARY[1]")[0],
      "BODY[1] is the part in base64, no NUL in a plain literal", blob)
check(b"BINARY[1] ~{%d}\r\n" % len(raw_part) + raw_part in blob, "BINARY[1] gives the bytes as sent", blob)

# ---------------------------------------------------------- MULTIAPPEND
lines, t = r.command("c2", "CAPABILITY")
check(b" MULTIAPPEND" in b" ".join(lines), "MULTIAPPEND is advertised", lines)
m1 = b"From: anna@example.it\r\nSubject: primo\r\n\r\nuno\r\n"
m2 = b"From: anna@example.it\r\nSubject: secondo\r\n\r\ndue\r\n"
r.send(b'm APPEND "prot/Allegati" (\\Seen) {%d}\r\n' % len(m1))
cont = r.line()
check(cont is not None and cont.startswith(b"+"), "first literal: go ahead", cont)
r.send(m1 + b' (\\Flagged) {%d}\r\n' % len(m2))
cont = r.line()
check(cont is not None and cont.startswith(b"+"), "second literal: go ahead", cont)
r.send(m2 + b"\r\n")
lines, t = r.until(b"m ")
got = re.search(rb"\[APPENDUID \d+ (\d+):(\d+)\]", t or b"")
check(got is not None and int(got.group(2)) == int(got.group(1)) + 1, "one OK [APPENDUID uv a:a+1] for both", (lines, t))
check(b"* 4 EXISTS" in lines, "the selected folder's EXISTS before the OK", lines)
lines, t = r.command("f8", "UID FETCH %s:%s (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])" % (got.group(1).decode(), got.group(2).decode()))
joined = b" ".join(lines)
check(b"primo" in joined and b"secondo" in joined and b"\\Flagged" in joined, "both stored, each with its flags", lines)
r.close()

w = Raw()
check(w.login("mario"), "mario logs in")
lines, t = w.command("s1", "STATUS prot/Sent (MESSAGES)")
before = re.search(rb"MESSAGES (\d+)", b" ".join(lines)).group(1)
ok1 = b"From: protocollo@pec.example.it\r\nSubject: inviato\r\nMessage-ID: <ma1@example.it>\r\n\r\nx\r\n"
bad2 = b"From: altro@example.it\r\nSubject: non mio\r\nMessage-ID: <ma2@example.it>\r\n\r\ny\r\n"
w.send(b"n APPEND prot/Sent {%d+}\r\n" % len(ok1) + ok1 + b" {%d+}\r\n" % len(bad2) + bad2 + b"\r\n")
lines, t = w.until(b"n ")
check(t is not None and t.startswith(b"n NO [CANNOT]") and b"nothing of this MULTIAPPEND was stored" in t,
      "the second message is not from prot: NO, and says nothing was stored", (lines, t))
lines, t = w.command("s2", "STATUS prot/Sent (MESSAGES)")
check(re.search(rb"MESSAGES (\d+)", b" ".join(lines)).group(1) == before, "prot/Sent got neither message", lines)
w.close()
done()
