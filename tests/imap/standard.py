"""Standard IMAP as imaptest checks it (issue 22), with imaplib and a raw
TLS connection against `pecgate serve`: the nine findings, and categories
(folders people create under a PEC mailbox, labels over the archive).

Each check names the finding it guards; each failed against the gateway
before the fix (most through imaptest's scripted suite, see
docs/imap-compliance.md).

argv: port cafile data_dir. Users: mario (read, triage, send, delete on
prot), anna (read, triage), ro (read). prot/INBOX holds 2 messages.
"""
import re
import time

from common import check, done
from helpers import Raw, session, code_of, text_of

mario = session("mario")
anna = session("anna")


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", what, data)
    return data


def append(m, box, msg, flags="", date=None):
    typ, data = m.append(box, flags, date, msg.encode() if isinstance(msg, str) else msg)
    check(typ == "OK", f"APPEND into {box}", data)
    mm = re.search(rb"APPENDUID (\d+) (\d+)", data[0] or b"")
    check(mm is not None, f"APPEND into {box} answers APPENDUID", data)
    return int(mm.group(1)), int(mm.group(2))


def fetch_one(m, uid, what):
    typ, data = m.uid("FETCH", str(uid), what)
    check(typ == "OK" and data and data[0] is not None, f"UID FETCH {uid} {what}", data)
    return data


# ---------------------------------------------------------- categories
for bad in ("prot/Sent", "prot/inbox/sub", "Altro"):
    typ, data = anna.create(f'"{bad}"')
    check(typ == "NO", f"CREATE {bad} is refused (the gateway's own folders; outside a mailbox)", data)
ok(anna.create('"prot/Pratiche 2026/Solleciti"'), "anna (triage) creates prot/Pratiche 2026/Solleciti (and its parent)")
typ, data = anna.create('"prot/Pratiche 2026"')
check(typ == "NO" and code_of(data) == "ALREADYEXISTS", "CREATE of an existing folder -> NO [ALREADYEXISTS]", data)
ro = session("ro")
typ, data = ro.create('"prot/Mia"')
check(typ == "NO" and code_of(data) == "NOPERM", "ro (read only) may not create folders -> NO [NOPERM]", data)
typ, data = anna.list('""', '"prot/Pratiche*"')
lines = [d.decode() for d in data]
check(any("\\HasChildren" in l and l.endswith('"prot/Pratiche 2026"') for l in lines), "LIST shows the parent with \\HasChildren", lines)
check(any("\\HasNoChildren" in l and l.endswith('"prot/Pratiche 2026/Solleciti"') for l in lines), "LIST shows the child", lines)

CAT = '"prot/Pratiche 2026"'

# COPY labels (the message stays in INBOX); MOVE files (INBOX no longer shows it).
ok(anna.select("prot/INBOX"), "anna selects prot/INBOX")
typ, data = anna.uid("COPY", "1", CAT)
copyuid = anna.untagged_responses.pop("COPYUID", [None])[-1]
check(typ == "OK" and copyuid is not None and copyuid.endswith(b" 1 1"), "UID COPY into a category -> OK [COPYUID uv 1 1]", (typ, data, copyuid))
typ, data = anna.select("prot/INBOX")
check(data[0] == b"2", "INBOX still holds both messages after the COPY", data)
raw = Raw()
raw.login("anna")
_, t = raw.command("s", b'SELECT prot/INBOX')
lines, t = raw.command("m", b'UID MOVE 2 "prot/Pratiche 2026"')
ix_copyuid = next((i for i, l in enumerate(lines) if l.startswith(b"* OK [COPYUID ")), None)
ix_expunge = next((i for i, l in enumerate(lines) if l == b"* 2 EXPUNGE"), None)
check(t is not None and t.startswith(b"m OK"), "UID MOVE into a category -> OK", (lines, t))
check(ix_copyuid is not None and ix_expunge is not None and ix_copyuid < ix_expunge,
      "MOVE sends * OK [COPYUID] before * 2 EXPUNGE (RFC 6851)", lines)
raw.close()
typ, data = anna.status(CAT, "(MESSAGES)")
check(b"(MESSAGES 2)" in data[0], "the category shows the copied and the moved message", data)
typ, data = anna.status("prot/All", "(MESSAGES)")
check(b"(MESSAGES 2)" in data[0], "prot/All (\\All) shows each message once: the copy is a label, the move files", data)

# ---------------------------------------------------------- item 9: APPEND of bytes already held
DUP = "From: a@example.it\r\nSubject: doppio\r\nMessage-ID: <dup@example.it>\r\n\r\nstesso testo\r\n"
uv1, u1 = append(anna, CAT, DUP)
uv2, u2 = append(anna, CAT, DUP)
check(uv1 == uv2 and u2 == u1 + 1, "item 9: the same bytes APPENDed twice are two messages with their own UIDs", (u1, u2))
ok(anna.select(CAT), "anna selects the category")
typ, data = anna.uid("SEARCH", None, "HEADER", "Message-ID", "dup@example.it")
check(data[0].split() == [str(u1).encode(), str(u2).encode()], "item 9: both are in the folder", data)

# ---------------------------------------------------------- item 1: sections inside message/rfc822
INNER = ("From: inner@example.it\r\nSubject: originale\r\nContent-Type: text/plain\r\n\r\n"
         "Il messaggio certificato originale.\r\nSeconda riga.\r\n")
OUTER = ("From: posta-certificata@pec.example.it\r\nSubject: POSTA CERTIFICATA: originale\r\nMIME-Version: 1.0\r\n"
         'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
         "--b1\r\nContent-Type: text/plain\r\n\r\nBusta di trasporto.\r\n"
         "--b1\r\nContent-Type: message/rfc822; name=postacert.eml\r\n\r\n" + INNER +
         "\r\n--b1--\r\nepilogo\r\n")
_, u = append(anna, CAT, OUTER)
anna.noop()
data = fetch_one(anna, u, "(BODY.PEEK[2.1])")
body = data[0][1] if isinstance(data[0], tuple) else b""
check(body == b"Il messaggio certificato originale.\r\nSeconda riga.\r\n",
      "item 1: BODY[2.1] is the body of the message inside message/rfc822 (was empty)", data)
data = fetch_one(anna, u, "(BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])")
check(isinstance(data[0], tuple) and data[0][1].startswith(b"Subject: originale"), "item 1: BODY[2.HEADER.FIELDS] reads the inner header", data)
data = fetch_one(anna, u, "(BODYSTRUCTURE)")
flat = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in data)
mm = re.search(rb'"MESSAGE" "RFC822" (?:\([^)]*\)|NIL) NIL NIL "7BIT" (\d+) \(', flat, re.I)
check(mm is not None and int(mm.group(1)) == len(INNER), "item 1: BODYSTRUCTURE gives the message/rfc822 part its size", flat)
check(re.search(rb'"TEXT" "PLAIN" (?:\([^)]*\)|NIL) NIL NIL "7BIT" 52 2', flat, re.I) is not None,
      "item 1: ... and describes the inner body (52 bytes, 2 lines)", flat)

# ---------------------------------------------------------- item 2: ENVELOPE groups and routes
ENV = ("From: a@example.it\r\nTo: <@route:user@domain.it>\r\nCc: group:;, group2: (foo) ;\r\n"
       "Subject: indirizzi\r\n\r\nx\r\n")
_, u = append(anna, CAT, ENV)
anna.noop()
data = fetch_one(anna, u, "(ENVELOPE)")
env = data[0] if isinstance(data[0], bytes) else data[0][0]
check(b'((NIL "@route" "user" "domain.it"))' in env, "item 2: a source route is the route, not part of the mailbox", env)
check(b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL))' in env,
      "item 2: group syntax keeps its start and end markers", env)

# ---------------------------------------------------------- item 3: SENT* by the date as written
SENT = "From: a@example.it\r\nDate: Sun, 25 Mar 2007 00:30:00 +0200\r\nSubject: fuso\r\n\r\nx\r\n"
_, u = append(anna, CAT, SENT)
anna.noop()
typ, data = anna.uid("SEARCH", None, "SENTON", "25-Mar-2007")
check(str(u).encode() in data[0].split(), "item 3: SENTON uses the date as written (25-Mar-2007)", data)
typ, data = anna.uid("SEARCH", None, "SENTON", "24-Mar-2007")
check(str(u).encode() not in data[0].split(), "item 3: ... not the UTC date (24-Mar-2007)", data)

# ---------------------------------------------------------- item 6: keywords announced in FLAGS
raw = Raw()
raw.login("anna")
raw.command("s", b'SELECT "prot/Pratiche 2026"')
lines, t = raw.command("k", b"UID STORE %d +FLAGS ($Protocollato)" % u)
ix_flags = next((i for i, l in enumerate(lines) if l.startswith(b"* FLAGS ") and b"$Protocollato" in l), None)
ix_fetch = next((i for i, l in enumerate(lines) if b"FETCH" in l and b"$Protocollato" in l), None)
check(ix_flags is not None and ix_fetch is not None and ix_flags < ix_fetch,
      "item 6: a new keyword is announced in * FLAGS before a FETCH shows it", lines)
raw.close()
typ, data = anna.select(CAT)
check(b"$Protocollato" in b" ".join(anna.untagged_responses.get("FLAGS", [b""])), "item 6: SELECT lists keywords in FLAGS", anna.untagged_responses.get("FLAGS"))

# ---------------------------------------------------------- item 7: EXISTS before the APPEND's OK
raw = Raw()
raw.login("anna")
_, t = raw.command("s", b'SELECT "prot/Pratiche 2026"')
msg = b"From: a@example.it\r\nSubject: sette\r\n\r\nx\r\n"
lines, t = raw.command("a", b'APPEND "prot/Pratiche 2026" {%d+}\r\n%s' % (len(msg), msg))
check(t is not None and t.startswith(b"a OK") and any(l.endswith(b" EXISTS") for l in lines),
      "item 7: APPEND into the selected folder sends * n EXISTS before its tagged OK", (lines, t))
raw.close()

# ---------------------------------------------------------- item 5: \Recent
m2 = session("mario")
typ, data = m2.select(CAT)
check(int(m2.untagged_responses.get("RECENT", [b"0"])[-1]) > 0, "item 5: the first session to select sees \\Recent messages", m2.untagged_responses.get("RECENT"))
typ, data = m2.search(None, "RECENT")
check(typ == "OK" and data[0].split(), "item 5: SEARCH RECENT finds them", data)
m3 = session("mario")
typ, data = m3.select(CAT, readonly=True)
check(m3.untagged_responses.get("RECENT", [b"?"])[-1] == b"0", "item 5: ... and no other session of the same user", m3.untagged_responses.get("RECENT"))

# ---------------------------------------------------------- item 4: CLOSE hides \Deleted
n_before = int(m2.select(CAT)[1][0])
typ, data = m2.uid("STORE", str(u), "+FLAGS.SILENT", "(\\Deleted)")
check(typ == "OK", "mario marks a message \\Deleted in the category", data)
ok(m2.close(), "CLOSE")
typ, data = m2.status(CAT, "(MESSAGES)")
check(f"(MESSAGES {n_before - 1})".encode() in data[0], "item 4: CLOSE expunged the \\Deleted message", data)

# ---------------------------------------------------------- item 8: UIDVALIDITY of a folder never used
typ, data = mario.select("prot/Sent")
uv_select = int(mario.untagged_responses["UIDVALIDITY"][-1])
OWN = "From: protocollo@pec.example.it\r\nTo: x@pec.example.it\r\nSubject: inviata\r\nMessage-ID: <sent8@example.it>\r\n\r\nx\r\n"
uv_append, _ = append(mario, "prot/Sent", OWN, "(\\Seen)")
check(uv_select == uv_append, "item 8: the first APPEND keeps the UIDVALIDITY the SELECT reported", (uv_select, uv_append))

# ---------------------------------------------------------- EXPUNGE, RENAME, DELETE of categories
ok(anna.select(CAT), "anna selects the category")
typ, data = anna.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
check(typ == "OK", "anna (triage) may mark \\Deleted in a category", data)
typ, data = anna.expunge()
check(typ == "OK" and len(data) == 6, "EXPUNGE removes labels and what anna appended (6 of 7)", data)
typ, data = anna.status(CAT, "(MESSAGES)")
check(b"(MESSAGES 1)" in data[0], "one message left: the PEC moved here (hiding it needs delete)", data)
typ, data = anna.status("prot/INBOX", "(MESSAGES)")
check(b"(MESSAGES 1)" in data[0], "INBOX is untouched by EXPUNGE in a category (message 1 is still there)", data)
anna.close()
ok(anna.rename(CAT, '"prot/Archivio/Pratiche"'), "RENAME moves the category (and its inferiors) under a new parent")
typ, data = anna.list('""', '"prot/Archivio/*"')
check(any(d.endswith(b' prot/Archivio/Pratiche/Solleciti') for d in data), "the inferior was renamed too", data)
typ, data = anna.delete('"prot/Archivio/Pratiche"')
check(typ == "NO", "DELETE refuses while the category has inferiors or files what anna may not hide", data)
ok(anna.delete('"prot/Archivio/Pratiche/Solleciti"'), "DELETE of an empty category")
typ, data = anna.delete('"prot/INBOX"')
check(typ == "NO" and code_of(data) == "CANNOT", "DELETE of the gateway's own folder -> NO [CANNOT]", data)
ok(mario.delete('"prot/Archivio/Pratiche"'), "mario (delete) deletes the category")
typ, data = mario.status("prot/Trash", "(MESSAGES)")
check(b"(MESSAGES 0)" not in data[0], "what it filed is hidden (in Trash), not removed", data)

# ---------------------------------------------------------- Drafts and Templates: each user's own
typ, data = anna.list('""', "%")
check(any(d.endswith(b"\\Drafts) \"/\" Drafts") for d in data) and any(d.endswith(b" Templates") for d in data),
      "every user has Drafts (\\Drafts) and Templates at the top", data)
DRAFT = "From: anna@example.it\r\nSubject: bozza\r\n\r\nda finire\r\n"
append(anna, "Drafts", DRAFT, "(\\Draft)")
typ, data = mario.status("Drafts", "(MESSAGES)")
check(b"(MESSAGES 0)" in data[0], "mario does not see anna's drafts", data)
ok(anna.select("Drafts"), "anna selects Drafts")
anna.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
typ, data = anna.expunge()
check(typ == "OK" and data == [b"1"], "EXPUNGE in Drafts deletes the draft", data)
typ, data = anna.status("Drafts", "(MESSAGES)")
check(b"(MESSAGES 0)" in data[0], "Drafts is empty", data)

done()
