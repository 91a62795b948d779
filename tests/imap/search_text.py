"""SEARCH TEXT sees every header field, SEARCH BODY none (RFC 3501
§6.4.4: TEXT is "the header or body"), with the full-text index answering
both: imaptest's search-body messages, APPENDed with imaplib. Before the
index held the other header fields, `TEXT qwertyuiop` missed message 3,
whose only occurrence is `X-Header: qwertyuiop`.

argv: port cafile data_dir. User mario (read, triage on prot).
"""
import time

from common import check, done, login

DATE = "Date: Sat, 24 Mar 2007 23:00:00 +0200\r\n"
MESSAGES = [
    DATE + "\r\nasdfghjkl zxcvbnm\r\n",
    DATE + "Subject: qwertyuiop\r\n\r\nasdfghjkl\r\n",
    DATE + "X-Header: qwertyuiop\r\n\r\nzxcvbnm\r\n",
    DATE + "\r\nzxcvbnm qwertyuiop\r\n",
]

m = login("mario")
typ, data = m.create("prot/Testo")
check(typ == "OK", "a category to search in", data)
for i, msg in enumerate(MESSAGES):
    typ, data = m.append("prot/Testo", None, None, msg.encode())
    check(typ == "OK", f"APPEND {i + 1}", data)
typ, data = m.select("prot/Testo")
check(typ == "OK" and data == [b"4"], "four messages", data)


def search(*keys):
    typ, data = m.search(None, *keys)
    check(typ == "OK", f"SEARCH {keys}", data)
    return data[0].split()


# The indexer follows the APPENDs by itself: wait until it has them all.
deadline = time.monotonic() + 30
while search("BODY", "zxcvbnm") != [b"1", b"3", b"4"]:
    check(time.monotonic() < deadline, "the full-text index has the four messages", search("BODY", "zxcvbnm"))
    time.sleep(0.2)

check(search("TEXT", "qwertyuiop") == [b"2", b"3", b"4"], "TEXT: Subject, X-Header and body", search("TEXT", "qwertyuiop"))
check(search("BODY", "qwertyuiop") == [b"4"], "BODY: the body only", search("BODY", "qwertyuiop"))
check(search("TEXT", "asdfghjkl") == [b"1", b"2"], "TEXT: a body word", search("TEXT", "asdfghjkl"))
check(search("TEXT", "qwerty") == [b"2", b"3", b"4"], "TEXT: a word's start, in a header field too",
      search("TEXT", "qwerty"))
check(search("NOT", "TEXT", "qwertyuiop") == [b"1"], "NOT TEXT", search("NOT", "TEXT", "qwertyuiop"))
m.logout()
done()
