#!/usr/bin/env python3
"""A real RFC 3161 time-stamping authority for the tests: `openssl ts
-reply` behind a small HTTP responder (POST application/timestamp-query,
answer application/timestamp-reply).

    tsa_server.py DIR PORT

DIR holds tsa.cnf (openssl's TSA section), the keys and certificates. If
DIR/fail exists the responder answers 503 (the tests' TSA outage); every
request served is counted in DIR/served.
"""
import http.server
import os
import subprocess
import sys
import tempfile

DIR, PORT = sys.argv[1], int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        query = self.rfile.read(n)
        if os.path.exists(os.path.join(DIR, "fail")):
            self.send_response(503)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"TSA down for the test\n")
            return
        if self.headers.get("content-type") != "application/timestamp-query":
            self.send_response(415)
            self.end_headers()
            return
        with tempfile.TemporaryDirectory(dir=DIR) as t:
            q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
            with open(q, "wb") as f:
                f.write(query)
            p = subprocess.run(
                ["openssl", "ts", "-reply", "-config", os.path.join(DIR, "tsa.cnf"), "-queryfile", q, "-out", r],
                cwd=DIR, capture_output=True)
            if p.returncode != 0:
                self.send_response(400)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(p.stderr)
                return
            reply = open(r, "rb").read()
        with open(os.path.join(DIR, "served"), "a") as f:
            f.write("1\n")
        self.send_response(200)
        self.send_header("content-type", "application/timestamp-reply")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
