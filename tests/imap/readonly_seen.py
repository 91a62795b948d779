"""A user with only `read` can still mark messages read.

\\Seen is per person, so setting it changes nothing anybody else sees; yet
a user holding only `read` got the folder READ-ONLY, could not STORE
\\Seen, and reading a message did not mark it: their client showed every
message unread forever (and fetchmail's `STORE 1:* +FLAGS.SILENT (\\Seen)`
failed). SELECT answers READ-WRITE with PERMANENTFLAGS (\\Seen) only;
\\Seen can be set and cleared, every other flag is NO [NOPERM].

argv: port cafile data_dir. Users: ro (read on prot), anna (read, triage
on prot). prot/INBOX holds 3 messages.
"""
from common import check, done
from helpers import session, code_of, select_info


def seq_flags(m, n):
    typ, data = m.fetch(str(n), "(FLAGS)")
    for d in data or []:
        if isinstance(d, tuple):
            d = d[0]
        # Only the response for message n (not unsolicited updates).
        if d and d.startswith(b"%d (" % n) and b"FLAGS (" in d:
            return d.split(b"FLAGS (", 1)[1].split(b")", 1)[0].decode().split()
    return None


ro = session("ro")
typ, info = select_info(ro, "prot/INBOX")
check(typ == "OK", "ro selects prot/INBOX", info)
check(info["access"] == "READ-WRITE", "SELECT answers [READ-WRITE]", info)
check(info["permanentflags"] == ["\\Seen"], "PERMANENTFLAGS is exactly (\\Seen)", info["permanentflags"])

anna = session("anna")
check(anna.select("prot/INBOX")[0] == "OK", "anna selects prot/INBOX")

typ, data = ro.store("1", "+FLAGS", "(\\Seen)")
check(typ == "OK", "ro: STORE 1 +FLAGS (\\Seen) -> OK", data)
f = seq_flags(ro, 1)
check(f is not None and "\\Seen" in f, "ro's FETCH 1 FLAGS shows \\Seen", f)
f = seq_flags(anna, 1)
check(f is not None and "\\Seen" not in f, "anna's FETCH 1 FLAGS of the same message does not", f)

typ, data = ro.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "NO" and code_of(data) == "NOPERM", "ro: STORE 1 +FLAGS (\\Flagged) -> NO [NOPERM]", data)
anna.noop()
f = seq_flags(anna, 1)
check(f is not None and "\\Flagged" not in f, "message 1 is not \\Flagged", f)

typ, data = ro.store("1", "-FLAGS", "(\\Seen)")
check(typ == "OK", "ro: STORE 1 -FLAGS (\\Seen) -> OK", data)
f = seq_flags(ro, 1)
check(f is not None and "\\Seen" not in f, "ro's FETCH 1 FLAGS no longer shows \\Seen", f)

f = seq_flags(ro, 2)
check(f is not None and "\\Seen" not in f, "message 2 is unseen for ro", f)
typ, data = ro.fetch("2", "(BODY[])")
shown = any(isinstance(d, tuple) and b"\\Seen" in d[0] for d in data or []) or any(
    isinstance(d, bytes) and b"\\Seen" in d for d in data or [])
check(typ == "OK", "ro: FETCH 2 BODY[] -> OK", data)
f = seq_flags(ro, 2)
check(shown or (f is not None and "\\Seen" in f),
      "FETCH 2 BODY[] (no PEEK) marks message 2 \\Seen for ro", (data, f))
anna.noop()
f = seq_flags(anna, 2)
check(f is not None and "\\Seen" not in f, "but not for anna", f)

typ, data = ro.store("1:*", "+FLAGS.SILENT", "(\\Seen)")
check(typ == "OK", "fetchmail-like STORE 1:* +FLAGS.SILENT (\\Seen) -> OK", data)
typ, data = ro.search(None, "UNSEEN")
check(typ == "OK" and data[0].split() == [], "nothing is unseen for ro now", data)
ro.logout()
anna.logout()
done()
