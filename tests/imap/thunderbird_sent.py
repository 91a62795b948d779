"""Thunderbird's copy of a sent message goes to the Sent folder of the
identity's account, which with one IMAP account for several PEC mailboxes
can be another mailbox's Sent: the gateway filed a message sent from prot
into tributi/Sent, where it claimed that tributi had sent it.

An APPEND into a Sent folder of a message the archive already holds in a
Sent folder the user may send from (the same bytes: here SENT_A, whose From
is protocollo@pec.comune.example.it) adds nothing and answers with where
the message is: `OK [APPENDUID <uidvalidity of prot/Sent> <its UID>]`. A
new message is filed in the target's Sent only if its From is that
mailbox's address; otherwise `NO [CANNOT]` saying why.

argv: port cafile data_dir sent_a_file sample_message_id. Users: tb (read,
triage, send on prot and tributi), anna (read, triage on prot).
"""
import re
import sys
import time

from common import check, done
from helpers import session, append_nonsync, code_of, list_folders, select_info, status, text_of, uid_of

SENT_A = open(sys.argv[4], "rb").read()
MID = sys.argv[5]

# Where SENT_A is, found in a session of its own (the Thunderbird session
# below sends exactly LIST then APPEND).
look = session("tb")
typ, info = select_info(look, "prot/Sent")
check(typ == "OK", "tb selects prot/Sent", info)
PROT_UV = info["uidvalidity"]
SENT_A_UID = uid_of(look, MID)
check(PROT_UV is not None and SENT_A_UID is not None, f"SENT_A is in prot/Sent (UID {SENT_A_UID}, UIDVALIDITY {PROT_UV})")
look.close()
prot_before = status(look, "prot/Sent")
tributi_before = status(look, "tributi/Sent")
check(prot_before is not None and tributi_before == 0,
      f"STATUS: prot/Sent holds {prot_before}, tributi/Sent is empty", (prot_before, tributi_before))


def appenduid(data):
    mo = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0] or b"" if data else b"")
    return (int(mo.group(1)), int(mo.group(2))) if mo else None


def unchanged(after_what):
    p, t = status(look, "prot/Sent"), status(look, "tributi/Sent")
    check(p == prot_before, f"{after_what}: prot/Sent still holds {prot_before}", p)
    return t


# UIDVALIDITY is the creation time in seconds: were tributi/Sent created by
# the APPEND in the same second as prot/Sent, a copy filed there as its UID
# 1 would show the very APPENDUID expected of SENT_A in prot/Sent.
time.sleep(1.1)

# ---- the Thunderbird session: LIST, then APPEND with LITERAL+
m = session("tb")
folders = list_folders(m)
check("tributi/Sent" in folders and "prot/Sent" in folders, "LIST shows prot/Sent and tributi/Sent", sorted(folders))
typ, data = append_nonsync(m, "tributi/Sent", "(\\Seen)", SENT_A)
check(typ == "OK", "APPEND {n+} of SENT_A into tributi/Sent: OK", data)
check(appenduid(data) == (PROT_UV, SENT_A_UID),
      f"it answers [APPENDUID {PROT_UV} {SENT_A_UID}]: where prot/Sent holds it", data)
t = unchanged("after the APPEND of SENT_A")
check(t == 0, "tributi/Sent still holds nothing", t)

# ---- the same with a synchronising literal (imaplib's APPEND)
typ, data = m.append("tributi/Sent", "(\\Seen)", None, SENT_A)
check(typ == "OK" and appenduid(data) == (PROT_UV, SENT_A_UID),
      f"APPEND {{n}} of SENT_A again: OK [APPENDUID {PROT_UV} {SENT_A_UID}]", data)
t = unchanged("after the second APPEND of SENT_A")
check(t == 0, "tributi/Sent still holds nothing", t)

# ---- a new message from prot's address into tributi/Sent
wrong = (b"From: protocollo@pec.example.it\r\nTo: ufficio@pec.ditta.example.it\r\n"
         b"Subject: Inviata da protocollo\r\nMessage-ID: <tb-wrong@pec.example.it>\r\n"
         b"Date: Mon, 3 Mar 2025 11:00:00 +0100\r\n\r\nTesto\r\n")
typ, data = append_nonsync(m, "tributi/Sent", "(\\Seen)", wrong)
check(typ == "NO" and code_of(data) == "CANNOT",
      "APPEND into tributi/Sent of a new message From: protocollo@pec.example.it: NO [CANNOT]", data)
check(re.search(r"from", text_of(data)[len("[CANNOT]"):], re.I) is not None,
      "the refusal names the reason (the From address)", data)
t = unchanged("after the refused APPEND")
check(t == 0, "tributi/Sent still holds nothing", t)

# ---- a new message from tributi's address into tributi/Sent
right = (b"From: tributi@pec.example.it\r\nTo: ufficio@pec.ditta.example.it\r\n"
         b"Subject: Inviata da tributi\r\nMessage-ID: <tb-right@pec.example.it>\r\n"
         b"Date: Mon, 3 Mar 2025 11:05:00 +0100\r\n\r\nTesto\r\n")
typ, data = append_nonsync(m, "tributi/Sent", "(\\Seen)", right)
au = appenduid(data)
check(typ == "OK" and au is not None,
      "APPEND into tributi/Sent of a new message From: tributi@pec.example.it: OK [APPENDUID]", data)
uv = status(look, "tributi/Sent", "UIDVALIDITY")
check(au is not None and au[0] == uv, f"APPENDUID names tributi/Sent's UIDVALIDITY {uv}", data)
t = unchanged("after tributi's own APPEND")
check(t == 1, "tributi/Sent holds 1 message", t)
m.logout()
look.logout()

# ---- without send on prot
a = session("anna")
n = status(a, "prot/Sent")
typ, data = a.append("prot/Sent", None, None, right.replace(b"tributi@", b"protocollo@").replace(b"tb-right", b"anna"))
check(typ == "NO" and code_of(data) == "NOPERM", "anna (no send on prot) APPEND into prot/Sent: NO [NOPERM]", data)
check(status(a, "prot/Sent") == n, "nothing added to prot/Sent")
a.logout()
done()
