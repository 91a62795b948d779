#!/usr/bin/env python3
"""Real clients for tests/directory.rs: imaplib and smtplib against pecgate.

    directory_client.py imap-login PORT CERT USER PASSWORD
        -> {"ok": bool, "text": "...", "folders": [...]}
    directory_client.py imap-idle PORT CERT USER PASSWORD SECONDS
        logs in, selects INBOX, IDLEs; prints "IDLING" when the server took
        IDLE, then {"bye": "text" | null, "seconds": n} when the server said
        BYE (or the time ran out)
    directory_client.py smtp-login PORT USER PASSWORD
        -> {"code": n, "text": "..."}
"""
import imaplib
import json
import os
import smtplib
import socket
import ssl
import sys
import time


def ctx(cert=None):
    c = ssl.create_default_context()
    if cert:
        c.load_verify_locations(cert)
    else:
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
    return c


# The tests connect from a different loopback address each time
# (PECGATE_TEST_SOURCE), so the login throttle's per-address delays do not
# add up across cases that fail on purpose.
SOURCE = os.environ.get("PECGATE_TEST_SOURCE")


class Imap(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        addr = (SOURCE, 0) if SOURCE else None
        sock = socket.create_connection((self.host, self.port), timeout, source_address=addr)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap(port, cert):
    return Imap("127.0.0.1", int(port), ssl_context=ctx(cert), timeout=30)


def imap_login(port, cert, user, password):
    m = imap(port, cert)
    try:
        typ, data = m.login(user, password)
    except imaplib.IMAP4.error as e:
        print(json.dumps({"ok": False, "text": str(e)}))
        return
    typ, lst = m.list()
    folders = [l.decode("utf-8", "replace").rsplit(' "/" ', 1)[-1].strip('"') for l in lst if l]
    m.logout()
    print(json.dumps({"ok": True, "text": data[0].decode("utf-8", "replace"), "folders": folders}))


def imap_idle(port, cert, user, password, seconds):
    m = imap(port, cert)
    m.login(user, password)
    m.select("INBOX")
    tag = b"I1"
    m.send(tag + b" IDLE\r\n")
    line = m.readline()
    if not line.startswith(b"+"):
        print(json.dumps({"bye": None, "error": line.decode("utf-8", "replace")}))
        return
    print("IDLING", flush=True)
    m.sock.settimeout(1.0)
    t0 = time.time()
    bye = None
    buf = b""
    while time.time() - t0 < float(seconds):
        try:
            chunk = m.sock.recv(4096)
        except (socket.timeout, TimeoutError):
            continue
        if not chunk:
            break
        buf += chunk
        for l in buf.split(b"\r\n"):
            if l.startswith(b"* BYE"):
                bye = l.decode("utf-8", "replace")
        if bye:
            break
    print(json.dumps({"bye": bye, "seconds": round(time.time() - t0, 2)}), flush=True)


def smtp_login(port, user, password):
    addr = (SOURCE, 0) if SOURCE else None
    s = smtplib.SMTP_SSL("127.0.0.1", int(port), context=ctx(), timeout=30, source_address=addr)
    try:
        code, text = s.login(user, password)
    except smtplib.SMTPAuthenticationError as e:
        code, text = e.smtp_code, e.smtp_error
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error
    try:
        s.quit()
    except Exception:
        pass
    print(json.dumps({"code": code, "text": text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"imap-login": imap_login, "imap-idle": imap_idle, "smtp-login": smtp_login}[cmd](*args)
