"""Deleting hides, and only with the `delete` right; hidden messages are
shown in `<mailbox>/Trash` and can be moved back.

A user with `triage` but not `delete` could STORE \\Deleted: their client
showed the message deleted while EXPUNGE was refused, so the message
stayed, and the people with `delete` saw it marked for deletion by someone
who was not allowed to. A user with `delete` but not `triage` could not
STORE \\Deleted at all, so could not delete. And a hidden message could not
be found again from a mail client. Now \\Deleted needs `delete`
(`NO [NOPERM] hiding a message needs the delete right`), EXPUNGE and MOVE
into Trash hide, Trash (special use \\Trash, shown to users with `delete`)
lists what is hidden, and a MOVE out of Trash puts the message back with a
new UID.

argv: port cafile data_dir. Users: mario (all rights on prot), anna (read,
triage), ro (read), del (read, delete). prot/INBOX holds 6 messages,
<m1@pec.example.it> .. <m6@pec.example.it>.
"""
from common import check, done
from helpers import session, code_of, flags_of, list_folders, message_ids, select_info, status, text_of, uid_of

M1, M2 = "<m1@pec.example.it>", "<m2@pec.example.it>"

mario = session("mario")
check(mario.select("prot/INBOX")[0] == "OK", "mario selects prot/INBOX")
anna = session("anna")
check(anna.select("prot/INBOX")[0] == "OK", "anna selects prot/INBOX")

# ---- triage without delete cannot mark \Deleted
typ, data = anna.store("1", "+FLAGS", "(\\Deleted)")
check(typ == "NO" and code_of(data) == "NOPERM", "anna (no delete): STORE 1 +FLAGS (\\Deleted) -> NO [NOPERM]", data)
check("hiding a message needs the delete right" in text_of(data),
      "the refusal says: hiding a message needs the delete right", data)
mario.noop()
f = flags_of(mario, uid_of(mario, M1))
check(f is not None and "\\Deleted" not in f, "mario sees message 1 without \\Deleted", f)

# ---- who sees Trash
for user in ("mario", "del", "anna", "ro"):
    m = mario if user == "mario" else anna if user == "anna" else session(user)
    folders = list_folders(m)
    attrs = [a.lower() for a in folders.get("prot/Trash", [])]
    if user in ("mario", "del"):
        check("\\trash" in attrs, f"{user} (delete) lists prot/Trash with \\Trash", folders)
    else:
        check("prot/Trash" not in folders, f"{user} (no delete) does not list prot/Trash", folders)
    if user == "ro":
        m.logout()
    if user == "del":
        d = m

# ---- delete without triage: \Deleted + EXPUNGE hide into Trash
typ, info = select_info(d, "prot/INBOX")
check(typ == "OK" and info["access"] == "READ-WRITE", "del selects prot/INBOX read-write", info)
n0 = info["exists"]
check(uid_of(d, M1) is not None and d.search(None, "HEADER", "Message-ID", f'"{M1}"')[1][0] == b"1",
      "message 1 is <m1@pec.example.it>")
typ, data = d.store("1", "+FLAGS", "(\\Deleted)")
check(typ == "OK", "del (delete, no triage): STORE 1 +FLAGS (\\Deleted) -> OK", data)
typ, data = d.expunge()
check(typ == "OK", "del: EXPUNGE -> OK", data)
check(data is not None and b"1" in data, "with * 1 EXPUNGE", data)
n = status(mario, "prot/INBOX")
check(n0 is not None and n == n0 - 1, f"prot/INBOX holds {n0} - 1 messages", n)
typ, info = select_info(d, "prot/Trash")
check(typ == "OK", "del selects prot/Trash", info)
trash = message_ids(d)
check(M1 in trash, "prot/Trash lists the expunged message (same Message-ID)", trash)

# ---- MOVE into Trash hides, MOVE out of Trash unhides
typ, info = select_info(d, "prot/INBOX")
uidnext = info["uidnext"]
u2 = uid_of(d, M2)
check(typ == "OK" and u2 is not None and uidnext is not None, f"<m2> is UID {u2} in prot/INBOX, UIDNEXT {uidnext}", info)
typ, data = d.uid("MOVE", str(u2), "prot/Trash")
check(typ == "OK", "del: UID MOVE <m2> prot/Trash -> OK", data)
d.noop()
check(uid_of(d, M2) is None and M2 not in message_ids(d), "<m2> is gone from prot/INBOX")
check(status(mario, "prot/INBOX") == n0 - 2, "prot/INBOX holds one fewer")
typ, info = select_info(d, "prot/Trash")
trash = message_ids(d)
check(M2 in trash and M1 in trash, "prot/Trash shows <m2> (and still <m1>)", trash)
if M2 in trash:
    typ, data = d.uid("MOVE", str(trash[M2]), "prot/INBOX")
else:
    typ, data = "NO", ["not tried: <m2> is not in prot/Trash"]
check(typ == "OK", "del: UID MOVE <m2 in Trash> prot/INBOX -> OK", data)
d.noop()
check(M2 not in message_ids(d), "<m2> has left prot/Trash")
typ, info = select_info(d, "prot/INBOX")
inbox = message_ids(d)
check(M2 in inbox, "<m2> is in prot/INBOX again", inbox)
check(M2 in inbox and uidnext is not None and inbox[M2] >= uidnext,
      f"with a new UID (>= the old UIDNEXT {uidnext})", inbox.get(M2))
check(status(mario, "prot/INBOX") == n0 - 1, "prot/INBOX holds n0 - 1 again")
d.logout()

# ---- triage without delete cannot move into Trash
typ, data = anna._simple_command("MOVE", "1", "prot/Trash")
check(typ == "NO" and code_of(data) in ("TRYCREATE", "NOPERM"),
      "anna: MOVE 1 prot/Trash -> NO [TRYCREATE] or [NOPERM]", data)
check(status(mario, "prot/INBOX") == n0 - 1, "nothing moved")
anna.logout()
mario.logout()
done()
