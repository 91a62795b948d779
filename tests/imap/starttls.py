"""STARTTLS on the plain listener: LOGINDISABLED before, login after.

argv: port cafile data_dir starttls_port. Exits non-zero on the first
failed check.
"""
import imaplib
import socket
import ssl
import sys

PORT, CAFILE, DATA, SPORT = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
from common import PW, check



ctx = ssl.create_default_context(cafile=CAFILE)

m = imaplib.IMAP4("127.0.0.1", SPORT)
caps = m.capabilities
check("LOGINDISABLED" in caps and "STARTTLS" in caps and "AUTH=PLAIN" not in caps,
      "plain listener advertises STARTTLS and LOGINDISABLED", caps)
try:
    typ, data = m.login("mario", PW)
    check(False, "LOGIN before STARTTLS refused", (typ, data))
except imaplib.IMAP4.error as e:
    check("PRIVACYREQUIRED" in str(e), "LOGIN before STARTTLS refused", e)
# AUTHENTICATE PLAIN with an initial response, sent by hand (imaplib would
# refuse to send it itself without AUTH=PLAIN).
tag = m._new_tag()
m.send(tag + b" AUTHENTICATE PLAIN AG1hcmlvAHB3LVNlY3JldC0x\r\n")
line = m.readline()
check(line.startswith(tag + b" NO") and b"PRIVACYREQUIRED" in line, "AUTHENTICATE before STARTTLS refused", line)

typ, data = m.starttls(ssl_context=ctx)
check(typ == "OK", "STARTTLS", data)
caps = m.capabilities
check("LOGINDISABLED" not in caps and "STARTTLS" not in caps and "AUTH=PLAIN" in caps,
      "after STARTTLS: login allowed, STARTTLS no longer offered", caps)
check(m.sock.version() is not None and m.sock.version().startswith("TLS"), "the socket is TLS", m.sock.version())
typ, data = m.login("mario", PW)
check(typ == "OK", "LOGIN after STARTTLS", data)
typ, data = m.select("prot/INBOX")
check(typ == "OK" and int(data[0]) == 2, "SELECT over the upgraded connection", data)
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(typ == "OK" and b"Notifica numero 1" in data[0][1], "FETCH over the upgraded connection", data)
tag = m._new_tag()
m.send(tag + b" STARTTLS\r\n")
line = m.readline()
check(line.startswith(tag + b" BAD"), "a second STARTTLS is refused", line)
m.logout()

# A command pipelined behind STARTTLS in clear is never executed over TLS
# (no plaintext command injection, CVE-2011-0411 style).
s = socket.create_connection(("127.0.0.1", SPORT))
f = s.makefile("rb")
f.readline()  # greeting
s.sendall(b"a STARTTLS\r\nb LOGIN mario " + PW.encode() + b"\r\n")
line = f.readline()
check(line.startswith(b"a OK"), "pipelined STARTTLS accepted", line)
try:
    t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    t.settimeout(5)
    t.sendall(b"c NOOP\r\n")
    got = b""
    while not got.endswith(b"\r\n") or not any(l.startswith(b"c ") for l in got.split(b"\r\n")):
        chunk = t.recv(4096)
        if not chunk:
            break
        got += chunk
    check(b"b OK" not in got and b"b NO" not in got, "the pipelined LOGIN was discarded", got)
    t.sendall(b"d SELECT prot/INBOX\r\n")
    got = t.recv(4096)
    check(b"d BAD" in got or b"d NO" in got, "still not logged in after STARTTLS", got)
    t.close()
except (ssl.SSLError, OSError) as e:
    # The server read the pipelined bytes as TLS: the handshake fails, which
    # is as safe.
    check(True, f"the pipelined LOGIN broke the handshake ({e})")
print("all checks passed")
