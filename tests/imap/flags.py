"""Read or change one message's flags over IMAP (for the mbsync test).

argv: port cafile data_dir folder uid [+FLAGS|-FLAGS flag]. Prints the
message's flags after the change as `FLAGS <flags>`.
"""
import imaplib
import re
import ssl
import sys

PORT, CAFILE, DATA, FOLDER, UID = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
m = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=ssl.create_default_context(cafile=CAFILE))
m.login("mario", "pw-Secret-1")
typ, data = m.select(FOLDER)
assert typ == "OK", data
if len(sys.argv) > 7:
    typ, data = m.uid("STORE", UID, sys.argv[6], f"({sys.argv[7]})")
    assert typ == "OK", data
typ, data = m.uid("FETCH", UID, "(FLAGS)")
assert typ == "OK" and data[0] is not None, data
print("FLAGS " + re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).decode())
m.logout()
