#!/usr/bin/env python3
"""IMAP test client used by tests/support/mod.rs (the `Imap` helper).

Usage: imap_tool.py '<json request>'

The request is a JSON object with the connection
  {"host", "port", "user", "password", "tls": bool, "cafile": path|null,
   "timeout": seconds, "op": name, ...op arguments}
and one operation. The answer is one JSON object on stdout:
  {"ok": true, "result": ...}   exit status 0
  {"ok": false, "error": "..."} exit status 1

Operation "append" reads its messages from stdin, one JSON object per line:
  {"path": file, "date": unix seconds|null, "flags": ["\\Seen", ...]}
It appends the file's exact bytes (no line-ending rewriting, unlike
imaplib.IMAP4.append) and deletes the file once the server has answered OK,
so the caller can bound the disk used by a large batch. The whole batch runs
over one connection, in MULTIAPPEND commands of up to MULTI_MAX_MESSAGES /
MULTI_MAX_BYTES when the server advertises MULTIAPPEND and LITERAL+ (a
refused batch is retried one message at a time, so the error names the
exact message and the ones before it are appended).
"""

import hashlib
import imaplib
import json
import os
import re
import sys

# 5 MB messages and several at a time: well above imaplib's 1 MB default.
imaplib._MAXLINE = 1 << 24

UID_RE = re.compile(rb"\bUID (\d+)")
SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")
FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([\d:,]+)\]")
STATUS_RE = re.compile(rb"\b(MESSAGES|UIDNEXT|UIDVALIDITY|UNSEEN|RECENT) (\d+)")
QUOTA_RES_RE = re.compile(rb"([A-Za-z-]+) (\d+) (\d+)")
LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.*)$')

FETCH_BATCH_BYTES = 64 << 20


class ToolError(Exception):
    pass


def check(typ, data, what):
    if typ != "OK":
        raise ToolError("%s failed: %s %r" % (what, typ, data))
    return data


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(raw):
    s = raw.decode("utf-8", "replace")
    if s.startswith('"') and s.endswith('"'):
        s = s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return s


def connect(req):
    timeout = req.get("timeout") or 120
    if req.get("tls"):
        import ssl  # only when needed: it is the slowest import here

        ctx = ssl.create_default_context(cafile=req.get("cafile"))
        conn = imaplib.IMAP4_SSL(req["host"], req["port"], ssl_context=ctx, timeout=timeout)
    else:
        conn = imaplib.IMAP4(req["host"], req["port"], timeout=timeout)
    check(*conn.login(req["user"], req["password"]), "LOGIN")
    return conn


def append_args(flags, date):
    args = []
    if flags:
        args.append("(" + " ".join(flags) + ")")
    if date is not None:
        args.append(imaplib.Time2Internaldate(date))
    return args


def appenduids(resp, n):
    """UIDs from the tagged OK's [APPENDUID validity uid-set] (Dovecot sends
    it even when UIDPLUS is hidden from CAPABILITY), or n times None."""
    for line in resp:
        if isinstance(line, bytes):
            m = APPENDUID_RE.search(line)
            if m:
                uids = []
                for part in m.group(2).decode().split(","):
                    lo, _, hi = part.partition(":")
                    uids.extend(range(int(lo), int(hi or lo) + 1))
                if len(uids) == n:
                    return uids
    return [None] * n


def append_one(conn, folder, data, flags, date):
    """APPEND the exact bytes: imaplib.append would rewrite bare LF/CR."""
    conn.literal = data
    typ, resp = conn._simple_command("APPEND", quote(folder), *append_args(flags, date))
    check(typ, resp, "APPEND")
    return appenduids(resp, 1)[0]


def append_multi(conn, folder, batch):
    """One MULTIAPPEND command with LITERAL+ literals: one round trip and one
    server transaction for the whole batch (5x faster for small messages).
    All or nothing: returns None if the server refused the batch."""
    tag = conn._new_tag()
    parts = [tag, b" APPEND ", quote(folder).encode()]
    for data, flags, date in batch:
        for a in append_args(flags, date):
            parts += [b" ", a.encode()]
        parts += [b" {%d+}\r\n" % len(data), data]
    parts.append(b"\r\n")
    conn.tagged_commands[tag] = None
    conn.send(b"".join(parts))
    try:
        typ, resp = conn._command_complete("APPEND", tag)
    except conn.error:
        return None
    if typ != "OK":
        return None
    return appenduids(resp, len(batch))


MULTI_MAX_MESSAGES = 32  # tests/support/mod.rs keeps more than this in flight
MULTI_MAX_BYTES = 16 << 20


def op_append(conn, req):
    uids = []
    folder = req["folder"]
    caps = set(check(*conn.capability(), "CAPABILITY")[0].decode().upper().split())
    multi = "MULTIAPPEND" in caps and "LITERAL+" in caps
    batch, paths, batch_bytes = [], [], 0

    def flush():
        nonlocal batch, paths, batch_bytes
        got = append_multi(conn, folder, batch) if multi and len(batch) > 1 else None
        if got is None:
            # one by one: exact UIDs, and on failure exactly which message
            got = []
            for (data, flags, date), path in zip(batch, paths):
                try:
                    got.append(append_one(conn, folder, data, flags, date))
                except ToolError as e:
                    raise ToolError("message %d (%s): %s" % (len(uids) + len(got), path, e))
                os.unlink(path)
        else:
            for path in paths:
                os.unlink(path)
        uids.extend(got)
        batch, paths, batch_bytes = [], [], 0

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        item = json.loads(line)
        with open(item["path"], "rb") as f:
            data = f.read()
        batch.append((data, item.get("flags") or [], item.get("date")))
        paths.append(item["path"])
        batch_bytes += len(data)
        if not multi or len(batch) >= MULTI_MAX_MESSAGES or batch_bytes >= MULTI_MAX_BYTES:
            flush()
    if batch:
        flush()
    return uids


def select(conn, folder, readonly=True):
    typ, data = conn.select(quote(folder), readonly=readonly)
    check(typ, data, "SELECT %s" % folder)
    return int(data[0])


def search_uids(conn):
    typ, data = conn.uid("SEARCH", None, "ALL")
    check(typ, data, "UID SEARCH")
    return sorted(int(x) for x in b" ".join(d for d in data if d).split())


def op_uids(conn, req):
    select(conn, req["folder"])
    return search_uids(conn)


def op_count(conn, req):
    return select(conn, req["folder"])


def op_status(conn, req):
    typ, data = conn.status(quote(req["folder"]), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
    check(typ, data, "STATUS")
    return {k.decode().lower(): int(v) for k, v in STATUS_RE.findall(data[0])}


def uid_set(uids):
    """Compact IMAP sequence set: [1,2,3,7] -> "1:3,7"."""
    parts, run = [], None
    for u in sorted(uids):
        if run and u == run[1] + 1:
            run[1] = u
            continue
        if run:
            parts.append("%d:%d" % tuple(run) if run[0] != run[1] else str(run[0]))
        run = [u, u]
    if run:
        parts.append("%d:%d" % tuple(run) if run[0] != run[1] else str(run[0]))
    return ",".join(parts)


def fetch_items(conn, uids, items):
    """UID FETCH items for uids; yields (header bytes, literal or None)."""
    typ, data = conn.uid("FETCH", uid_set(uids), items)
    check(typ, data, "UID FETCH")
    for part in data:
        if isinstance(part, tuple):
            yield part[0], part[1]
        elif part and part != b")":
            yield part, None


def sizes(conn, uids):
    out = {}
    if not uids:
        return out
    for head, _ in fetch_items(conn, uids, "(UID RFC822.SIZE)"):
        out[int(UID_RE.search(head).group(1))] = int(SIZE_RE.search(head).group(1))
    return out


def bodies(conn, folder):
    """Yields (uid, raw bytes) for every message in folder, in UID order,
    fetching in batches of at most FETCH_BATCH_BYTES."""
    select(conn, folder)
    uids = search_uids(conn)
    size_of = sizes(conn, uids)
    batches, batch, batch_bytes = [], [], 0
    for uid in uids:
        if batch and batch_bytes + size_of[uid] > FETCH_BATCH_BYTES:
            batches.append(batch)
            batch, batch_bytes = [], 0
        batch.append(uid)
        batch_bytes += size_of[uid]
    if batch:
        batches.append(batch)
    for batch in batches:
        got = {}
        for head, body in fetch_items(conn, batch, "(UID BODY.PEEK[])"):
            if body is not None:
                got[int(UID_RE.search(head).group(1))] = body
        for u in batch:
            if u not in got:
                raise ToolError("UID %d missing from FETCH response" % u)
            yield u, got[u]


def op_sha256(conn, req):
    return [
        {"uid": uid, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        for uid, body in bodies(conn, req["folder"])
    ]


def op_fetch(conn, req):
    select(conn, req["folder"])
    for head, body in fetch_items(conn, [req["uid"]], "(UID BODY.PEEK[])"):
        if body is not None:
            with open(req["out"], "wb") as f:
                f.write(body)
            return len(body)
    raise ToolError("UID %d not found in %s" % (req["uid"], req["folder"]))


def op_flags(conn, req):
    select(conn, req["folder"])
    uids = search_uids(conn)
    out = []
    if uids:
        for head, _ in fetch_items(conn, uids, "(UID FLAGS)"):
            m = FLAGS_RE.search(head)
            flags = m.group(1).decode().split() if m else []
            out.append({"uid": int(UID_RE.search(head).group(1)), "flags": flags})
    return sorted(out, key=lambda x: x["uid"])


def op_search(conn, req):
    select(conn, req["folder"])
    crit = [quote(c) if (" " in c or not c) else c for c in req["criteria"]]
    typ, data = conn.uid("SEARCH", *crit)
    check(typ, data, "SEARCH")
    return sorted(int(x) for x in (data[0] or b"").split())


def op_store_flags(conn, req):
    select(conn, req["folder"], readonly=False)
    if req["uids"]:
        mode = "+FLAGS.SILENT" if req.get("add", True) else "-FLAGS.SILENT"
        typ, data = conn.uid("STORE", uid_set(req["uids"]), mode, "(" + " ".join(req["flags"]) + ")")
        check(typ, data, "UID STORE")
    return None


def op_expunge(conn, req):
    select(conn, req["folder"], readonly=False)
    if req["uids"]:
        typ, data = conn.uid("STORE", uid_set(req["uids"]), "+FLAGS.SILENT", "(\\Deleted)")
        check(typ, data, "UID STORE")
        typ, data = conn.expunge()
        check(typ, data, "EXPUNGE")
    return None


def op_quota(conn, req):
    typ, data = conn.getquotaroot(quote(req["folder"]))
    check(typ, data, "GETQUOTAROOT")
    roots, quotas = data
    out = {"roots": [], "resources": {}}
    for r in roots:
        if r:
            out["roots"].append(r.decode())
    for q in quotas:
        if not q:
            continue
        inner = q[q.index(b"(") + 1 : q.rindex(b")")] if b"(" in q else b""
        for name, used, limit in QUOTA_RES_RE.findall(inner):
            out["resources"][name.decode().upper()] = [int(used), int(limit)]
    return out


def op_create(conn, req):
    check(*conn.create(quote(req["folder"])), "CREATE")


def op_delete(conn, req):
    check(*conn.delete(quote(req["folder"])), "DELETE")


def op_list(conn, req):
    typ, data = conn.list('""', "*")
    check(typ, data, "LIST")
    names = []
    for line in data:
        if isinstance(line, tuple):  # name sent as a literal
            names.append(line[1].decode("utf-8", "replace"))
            continue
        m = LIST_RE.match(line or b"")
        if m:
            names.append(unquote(m.group("name")))
    return sorted(names)


def op_capability(conn, req):
    typ, data = conn.capability()
    check(typ, data, "CAPABILITY")
    return data[0].decode().split()


def op_login(conn, req):
    return None


OPS = {
    "search": op_search,
    "append": op_append,
    "uids": op_uids,
    "count": op_count,
    "status": op_status,
    "sha256": op_sha256,
    "fetch": op_fetch,
    "flags": op_flags,
    "store_flags": op_store_flags,
    "expunge": op_expunge,
    "quota": op_quota,
    "create": op_create,
    "delete": op_delete,
    "list": op_list,
    "capability": op_capability,
    "login": op_login,
}


def main():
    req = json.loads(sys.argv[1])
    try:
        op = OPS[req["op"]]
        conn = connect(req)
        try:
            result = op(conn, req)
        finally:
            try:
                conn.logout()
            except Exception:
                pass
    except Exception as e:  # report every failure as JSON: the Rust side panics with it
        json.dump({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}, sys.stdout)
        sys.stdout.write("\n")
        return 1
    json.dump({"ok": True, "result": result}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
