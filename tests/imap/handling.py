"""Handling PEC as a team, from a plain IMAP client (imaplib), against a
running gateway fed by a real Dovecot.

argv: imap_port cafile http_port phase
Users (password pw-Secret-1): mario, anna (read+triage on protocollo,
members of tributi), lucia (read only on protocollo, member of tributi),
ugo (only the mailbox altro). In protocollo's INBOX: a fine notice from
the municipal police (rule "multe" -> office tributi, keyword $Multe) and a
citizen's request (no rule -> the mailbox's default office anagrafe), then
a second fine ("Sanzione", tributi) that nobody touches.

Phases:
  folders  the folder path (MOVE into Mine / Done), IDLE, refusals,
           permissions and the state metrics after each step
  keywords the keyword path ($PecTaken / $PecDone by STORE) on the other
           message, with the same refusals and results
  verify   (after a restart or rebuild-index) the views are what they were
Exits non-zero on the first failed check; prints "all checks passed".
"""
import imaplib
import re
import socket
import ssl
import sys
import time
import urllib.request

PORT, CAFILE, HTTP, PHASE = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
from common import CTX, PW, check, login
MB = "protocollo"




def q(name):
    return '"' + name + '"'


def folders(m):
    typ, data = m.list()
    out = []
    for line in data:
        name = line.decode().rsplit(' "/" ', 1)[1].strip().strip('"')
        out.append(name)
    return out


def subjects(m, folder):
    """{uid: (subject, flags)} of a folder, selected read-only."""
    typ, data = m.select(q(folder), readonly=True)
    check(typ == "OK", f"examine {folder}", data)
    if int(data[0]) == 0:
        return {}
    typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
        subj = item[1].decode(errors="replace").strip()
        out[uid] = (subj, flags)
    return out


def find(m, folder, word):
    for uid, (subj, flags) in subjects(m, folder).items():
        if word in subj:
            return uid, flags
    return None, None


def metric(state, office):
    body = urllib.request.urlopen(f"http://127.0.0.1:{HTTP}/metrics", timeout=10).read().decode()
    pat = re.compile(
        r'^pecgate_handling_messages\{(?=[^}]*mailbox="protocollo")(?=[^}]*office="%s")(?=[^}]*state="%s")[^}]*\} (\S+)$'
        % (office, state),
        re.M,
    )
    found = pat.search(body)
    return float(found.group(1)) if found else 0.0


def expect_metrics(what, **want):
    for key, n in want.items():
        state, office = key.split("__")
        got = metric(state, office)
        check(got == n, f"metrics after {what}: {state} in {office} = {n}", got)


def views(m):
    return {v: sorted(s for s, _ in subjects(m, f"{MB}/{v}").values()) for v in ["To handle", "Mine", "Done"]}


if PHASE == "folders":
    mario, anna, lucia, ugo = login("mario"), login("anna"), login("lucia"), login("ugo")

    names = folders(mario)
    for f in ["To handle", "Mine", "Offices/tributi", "Offices/anagrafe", "Done"]:
        check(f"{MB}/{f}" in names, f"mario sees {MB}/{f}", names)
    lnames = folders(lucia)
    check(f"{MB}/Offices/tributi" in lnames and f"{MB}/Offices/anagrafe" not in lnames,
          "read-only lucia sees her office only", lnames)
    unames = folders(ugo)
    check(not any(n.startswith(MB) for n in unames), "ugo sees nothing of protocollo", unames)
    typ, data = ugo.select(q(f"{MB}/To handle"))
    check(typ == "NO", "ugo cannot select protocollo/To handle", data)

    # Routing on arrival: the fine went to tributi with its keyword, the
    # request to anagrafe.
    uid, flags = find(mario, f"{MB}/INBOX", "Verbale")
    check(uid is not None and "$PecAssigned" in flags and "$Multe" in flags,
          "the fine is assigned, with the rule's keyword, in INBOX", flags)
    for who, m in [("mario", mario), ("anna", anna), ("lucia", lucia)]:
        subs = [s for s, _ in subjects(m, f"{MB}/To handle").values()]
        check(any("Verbale" in s for s in subs), f"the fine is in {who}'s To handle", subs)
        check(not any("certificato" in s for s in subs), f"the request (anagrafe) is not in {who}'s To handle", subs)
    check(any("certificato" in s for s, _ in subjects(mario, f"{MB}/Offices/anagrafe").values()),
          "the request is in Offices/anagrafe", "")
    expect_metrics("arrival", assigned__tributi=2, assigned__anagrafe=1, taken__tributi=0)

    # anna waits in IDLE on her To handle.
    typ, data = anna.select(q(f"{MB}/To handle"))
    check(typ == "OK" and int(data[0]) == 2, "anna selects To handle (2 messages)", data)
    anna_tag = anna._new_tag().decode()
    anna.send(f"{anna_tag} IDLE\r\n".encode())
    check(anna.readline().startswith(b"+"), "anna is idling", "")

    # mario drags the fine from To handle into Mine.
    typ, data = mario.select(q(f"{MB}/To handle"))
    check(typ == "OK", "mario selects To handle", data)
    vuid, _ = find(mario, f"{MB}/To handle", "Verbale")
    mario.select(q(f"{MB}/To handle"))
    t0 = time.monotonic()
    typ, data = mario.uid("MOVE", str(vuid), q(f"{MB}/Mine"))
    check(typ == "OK", "mario MOVEs the fine into Mine", data)
    sock = anna.socket()
    sock.settimeout(5)
    line = anna.readline()
    waited = time.monotonic() - t0
    check(re.match(rb"\* 1 EXPUNGE", line) is not None and waited < 1.5,
          f"anna's IDLE sees it leave To handle ({waited:.2f}s)", line)
    anna.send(b"DONE\r\n")
    while True:
        line = anna.readline()
        if line.startswith(anna_tag.encode()):
            break
    sock.settimeout(None)
    check(not any("Verbale" in s for s, _ in subjects(anna, f"{MB}/To handle").values()),
          "the fine left anna's To handle", "")
    mine = subjects(mario, f"{MB}/Mine")
    check(any("Verbale" in s and "$PecTaken" in f for s, f in mine.values()), "the fine is in mario's Mine, $PecTaken", mine)
    check(subjects(anna, f"{MB}/Mine") == {}, "anna's Mine is empty", "")
    iuid, flags = find(mario, f"{MB}/INBOX", "Verbale")
    check(iuid == uid and "$PecTaken" in flags, "the fine stays in INBOX, now $PecTaken", flags)
    check(any("Verbale" in s for s, _ in subjects(lucia, f"{MB}/Offices/tributi").values()),
          "the taken fine is still in Offices/tributi", "")
    expect_metrics("mario takes", assigned__tributi=1, taken__tributi=1)

    # anna tries to take it too, both ways: refused, nothing changes.
    anna.select(q(f"{MB}/INBOX"))
    typ, data = anna.uid("MOVE", str(uid), q(f"{MB}/Mine"))
    check(typ == "NO" and b"mario" in data[0], "anna's MOVE into Mine is refused, naming mario", data)
    typ, data = anna.uid("STORE", str(uid), "+FLAGS", "($PecTaken)")
    check(typ == "NO" and b"mario" in data[0], "anna's $PecTaken is refused", data)
    typ, data = anna.uid("COPY", str(uid), q(f"{MB}/Done"))
    check(typ == "NO" and b"mario" in data[0], "anna cannot complete mario's message", data)

    # lucia (read only) changes nothing.
    # (imaplib refuses to SELECT what the server opens read-only: EXAMINE)
    ruid, _ = find(lucia, f"{MB}/INBOX", "certificato")
    for what, args in [
        ("MOVE into Mine", ("MOVE", str(ruid), q(f"{MB}/Mine"))),
        ("COPY into Done", ("COPY", str(ruid), q(f"{MB}/Done"))),
        ("STORE $PecTaken", ("STORE", str(ruid), "+FLAGS", "($PecTaken)")),
    ]:
        typ, data = lucia.uid(*args)
        check(typ == "NO" and b"NOPERM" in data[0], f"read-only lucia: {what} gets NO [NOPERM]", data)
    expect_metrics("refusals", assigned__anagrafe=1, taken__tributi=1)

    # mario completes it from Mine.
    typ, data = mario.select(q(f"{MB}/Mine"))
    vuid, _ = find(mario, f"{MB}/Mine", "Verbale")
    mario.select(q(f"{MB}/Mine"))
    typ, data = mario.uid("MOVE", str(vuid), q(f"{MB}/Done"))
    check(typ == "OK", "mario MOVEs the fine into Done", data)
    check(subjects(mario, f"{MB}/Mine") == {}, "mario's Mine is empty", "")
    done = subjects(anna, f"{MB}/Done")
    check(any("Verbale" in s and "$PecDone" in f for s, f in done.values()), "the fine is in Done, $PecDone", done)
    check(not any("Verbale" in s for s, _ in subjects(lucia, f"{MB}/Offices/tributi").values()),
          "done: gone from Offices/tributi", "")
    expect_metrics("mario completes", taken__tributi=0, done__tributi=1, assigned__tributi=1)
    for m in (mario, anna, lucia, ugo):
        m.logout()

elif PHASE == "keywords":
    mario, anna = login("mario"), login("anna")
    anna.select(q(f"{MB}/INBOX"))
    ruid, flags = find(anna, f"{MB}/INBOX", "certificato")
    check("$PecAssigned" in flags, "the request is assigned", flags)
    anna.select(q(f"{MB}/INBOX"))
    typ, data = anna.uid("STORE", str(ruid), "+FLAGS", "($PecTaken)")
    check(typ == "OK", "anna takes the request with STORE +FLAGS ($PecTaken)", data)
    check(any("certificato" in s for s, _ in subjects(anna, f"{MB}/Mine").values()), "it is in anna's Mine", "")
    mario.select(q(f"{MB}/INBOX"))
    typ, data = mario.uid("STORE", str(ruid), "+FLAGS", "($PecTaken)")
    check(typ == "NO" and b"anna" in data[0], "mario's $PecTaken is refused, naming anna", data)
    expect_metrics("anna takes by keyword", taken__anagrafe=1, assigned__anagrafe=0)
    # Giving it back (clearing $PecTaken) and taking it again.
    anna.select(q(f"{MB}/INBOX"))
    typ, data = anna.uid("STORE", str(ruid), "-FLAGS", "($PecTaken)")
    check(typ == "OK", "anna releases it with -FLAGS ($PecTaken)", data)
    check(subjects(anna, f"{MB}/Mine") == {}, "anna's Mine is empty again", "")
    expect_metrics("release", taken__anagrafe=0, assigned__anagrafe=1)
    anna.select(q(f"{MB}/INBOX"))
    check(anna.uid("STORE", str(ruid), "+FLAGS", "($PecTaken)")[0] == "OK", "anna takes it again", "")
    typ, data = anna.uid("STORE", str(ruid), "+FLAGS", "($PecDone)")
    check(typ == "OK", "anna completes it with +FLAGS ($PecDone)", data)
    _, flags = find(anna, f"{MB}/INBOX", "certificato")
    check("$PecDone" in flags and "$PecTaken" not in flags, "INBOX shows $PecDone", flags)
    check(len(subjects(mario, f"{MB}/Done")) == 2, "both messages are in Done", "")
    expect_metrics("anna completes by keyword", done__anagrafe=1, done__tributi=1, taken__anagrafe=0)
    anna.select(q(f"{MB}/INBOX"))
    typ, data = anna.uid("STORE", str(ruid), "+FLAGS", "($PecNew)")
    check(typ == "NO" and b"CANNOT" in data[0], "computed keywords cannot be set", data)

    # Assigning by folder: mario hands the second fine to anagrafe (he is
    # not a member: it leaves his To handle), then takes it back for tributi.
    vuid, _ = find(mario, f"{MB}/To handle", "Sanzione")
    mario.select(q(f"{MB}/To handle"))
    typ, data = mario.uid("MOVE", str(vuid), q(f"{MB}/Offices/anagrafe"))
    check(typ == "OK", "mario MOVEs the second fine into Offices/anagrafe", data)
    check(not any("Sanzione" in s for s, _ in subjects(mario, f"{MB}/To handle").values()), "it left mario's To handle", "")
    expect_metrics("assigned to anagrafe", assigned__anagrafe=1, assigned__tributi=0)
    vuid, _ = find(mario, f"{MB}/Offices/anagrafe", "Sanzione")
    mario.select(q(f"{MB}/Offices/anagrafe"))
    typ, data = mario.uid("MOVE", str(vuid), q(f"{MB}/Offices/tributi"))
    check(typ == "OK", "and back into Offices/tributi", data)
    check(any("Sanzione" in s for s, _ in subjects(anna, f"{MB}/To handle").values()), "it is in anna's To handle again", "")
    expect_metrics("assigned back to tributi", assigned__anagrafe=0, assigned__tributi=1)
    for m in (mario, anna):
        m.logout()

elif PHASE == "verify":
    mario = login("mario")
    v = views(mario)
    check(len(v["To handle"]) == 1 and "Sanzione" in v["To handle"][0] and v["Mine"] == [] and len(v["Done"]) == 2,
          "views after restart", v)
    _, flags = find(mario, f"{MB}/INBOX", "Verbale")
    check("$PecDone" in flags and "$Multe" in flags, "INBOX keywords after restart", flags)
    expect_metrics("restart", done__anagrafe=1, done__tributi=1, assigned__tributi=1)

    # IDLE answers DONE even when a change elsewhere shows nothing new here
    # (anna marking a message seen is hers alone): the server once waited
    # forever for a response it had already sent.
    anna = login("anna")
    mario.select(q(f"{MB}/INBOX"))
    tag = mario._new_tag().decode()
    mario.send(f"{tag} IDLE\r\n".encode())
    check(mario.readline().startswith(b"+"), "mario is idling on INBOX", "")
    anna.select(q(f"{MB}/INBOX"))
    check(anna.store("1", "+FLAGS", "(\\Seen)")[0] == "OK", "anna marks a message seen", "")
    time.sleep(0.5)
    mario.send(b"DONE\r\n")
    mario.socket().settimeout(5)
    try:
        line = mario.readline()
        while line.startswith(b"*"):
            line = mario.readline()
    except (socket.timeout, TimeoutError):
        line = b"(no answer in 5 s)"
    mario.socket().settimeout(None)
    check(line.startswith(tag.encode() + b" OK"), "IDLE DONE is answered", line)
    anna.logout()
    mario.logout()
else:
    sys.exit(f"unknown phase {PHASE}")

print("all checks passed")
