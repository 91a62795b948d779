"""Hostile input over TLS: the server answers BAD/NO or closes, never dies.

argv: port cafile data_dir. After each attack a fresh client must still be
able to log in.
"""
import socket
import ssl
import sys
import time

PORT, CAFILE = int(sys.argv[1]), sys.argv[2]
CTX = ssl.create_default_context(cafile=CAFILE)


def conn():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    t = CTX.wrap_socket(s, server_hostname="127.0.0.1")
    greeting = t.recv(4096)
    assert greeting.startswith(b"* OK"), greeting
    return t


def read_until(t, marker, limit=10.0):
    buf = b""
    end = time.monotonic() + limit
    while marker not in buf and time.monotonic() < end:
        try:
            chunk = t.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def check(cond, what, detail=b""):
    if not cond:
        print(f"FAIL: {what}: {detail[:300]!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def still_serving():
    t = conn()
    t.sendall(b"z LOGIN mario pw-Secret-1\r\n")
    r = read_until(t, b"z ")
    check(b"z OK" in r, "server still serves a fresh login", r)
    t.close()


# garbage lines
t = conn()
t.sendall(b"\x00\xff garbage\r\n)))(((\r\nno-tag\r\n")
r = read_until(t, b"BAD")
check(b"BAD" in r, "garbage gets BAD", r)
t.close()
still_serving()

# commands before login
t = conn()
t.sendall(b"a SELECT prot/INBOX\r\nb FETCH 1 BODY[]\r\nc LIST \"\" *\r\n")
r = read_until(t, b"c ")
check(r.count(b"BAD") >= 3 and b"* 1 FETCH" not in r, "commands before login refused", r)
t.close()

# a 100 MB literal announcement
t = conn()
t.sendall(b"a LOGIN mario pw-Secret-1\r\n")
read_until(t, b"a OK")
t.sendall(b"b APPEND prot/Sent {104857600}\r\n")
r = read_until(t, b"b ")
check(b"b BAD" in r and b"+ " not in r, "100 MB literal refused without a continuation", r)
t.sendall(b"c NOOP\r\n")
r = read_until(t, b"c ")
check(b"c OK" in r, "session usable after the refused literal", r)
t.close()

# unterminated literal then disconnect
t = conn()
t.sendall(b"a LOGIN {5}\r\n")
read_until(t, b"+")
t.sendall(b"ma")
t.close()
still_serving()

# thousands of pipelined NOOPs
t = conn()
t.sendall(b"".join(b"n%d NOOP\r\n" % i for i in range(5000)))
r = read_until(t, b"n4999 ", limit=20)
check(b"n4999 OK" in r or b"BYE" in r or r == b"", "5000 pipelined NOOPs answered or refused", r[-200:])
t.close()
still_serving()

# a very long line
t = conn()
try:
    t.sendall(b"a " + b"X" * (2 * 1024 * 1024) + b"\r\n")
except OSError:
    pass
t.close()
still_serving()
print("all checks passed")
