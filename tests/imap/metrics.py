"""Client metrics: commands by name and throttled logins show on /metrics.

argv: port cafile data_dir http_port. Two wrong passwords for the same user
(the second waits in the throttle), then a good login and a NOOP; then
/metrics must count them. Exits non-zero on the first failed check.
"""
import imaplib
import ssl
import sys
import urllib.request

PORT, CAFILE, HTTP = int(sys.argv[1]), sys.argv[2], int(sys.argv[4])
from common import CTX, check



for _ in range(2):
    c = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX)
    try:
        c.login("mario", "wrong-password")
        check(False, "a wrong password is refused")
    except imaplib.IMAP4.error:
        pass
    c.logout()
c = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=CTX)
c.login("mario", "pw-Secret-1")
c.noop()
c.logout()

text = urllib.request.urlopen(f"http://127.0.0.1:{HTTP}/metrics", timeout=10).read().decode()
values = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, _, v = line.rpartition(" ")
        values[name] = float(v)
login = values.get('pecgate_client_commands_total{command="LOGIN",protocol="imap"}', 0)
noop = values.get('pecgate_client_commands_total{command="NOOP",protocol="imap"}', 0)
check(login >= 3, "LOGIN commands counted", login)
check(noop >= 1, "NOOP commands counted", noop)
check(values.get("pecgate_throttled_logins_total", 0) >= 1, "the throttled login counted", values.get("pecgate_throttled_logins_total"))
print("all checks passed")
