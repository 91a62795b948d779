"""Per-user subscriptions against `pecgate serve` through imaplib, after RFC 3501
§6.3.6-6.3.9 (SUBSCRIBE, UNSUBSCRIBE, LSUB) and RFC 5258 (LIST-EXTENDED's
SUBSCRIBED selection and return option, RECURSIVEMATCH, CHILDINFO,
\\NonExistent).

- The gateway's own folders are subscribed until a user unsubscribes one;
  categories (folders people create) only once subscribed: CREATE does
  not subscribe.
- UNSUBSCRIBE really unsubscribes, for that user only.
- LSUB "" "prot/%" shows an unsubscribed parent of a subscribed inferior
  as \\Noselect (RFC 3501 §6.3.9's news/comp example).
- A subscription outlives DELETE: LIST (SUBSCRIBED) shows the name as
  \\Subscribed \\NonExistent (RFC 5258 §5 example 3).
- LIST (SUBSCRIBED RECURSIVEMATCH) gives a parent with a subscribed child
  it does not match CHILDINFO ("SUBSCRIBED") (RFC 5258 §5 example 8).
- RENAME moves the subscriptions of the category and its inferiors,
  every user's.

Before this (every folder subscribed, UNSUBSCRIBE a no-op) the first
LSUB of a new category, and everything after, failed.

argv: port cafile data_dir phase. Users mario (read, triage, send, delete
on prot) and anna (read, triage on prot). phase `run` (default) does the
above; `verify` (after the index was rebuilt from the journal) checks that
the subscriptions are still what `run` left.
"""
import imaplib
import re
import sys

from common import check, done, login

PHASE = sys.argv[4] if len(sys.argv) > 4 else "run"


def ok(m, name, *args):
    """`name args` through imaplib, checked OK; its untagged `name` lines
    as the server wrote them (`* LIST (...) "/" name ...`)."""
    typ, data = m._simple_command(name, *args)
    check(typ == "OK", f"{name} {' '.join(args)}", data)
    typ, data = m._untagged_response(typ, data, name)
    return [b"* " + name.encode() + b" " + d for d in data if isinstance(d, bytes)]


def answer(m, name, *args):
    """(type, text) of the tagged answer, NO included."""
    try:
        typ, data = m._simple_command(name, *args)
    except m.error as e:
        return "BAD", str(e).encode()
    return typ, (data[-1] if data and isinstance(data[-1], bytes) else b"")


def listed(lines, kind=b"LIST"):
    """{name: (attributes, extended data)} of `* LIST` (or LSUB) lines."""
    out = {}
    for l in lines:
        mo = re.match(rb'\* ' + kind + rb' \(([^)]*)\) (?:"/"|NIL) ("(?:[^"\\]|\\.)*"|\S+)(?: (.*))?$', l)
        if mo:
            name = mo.group(2).strip(b'"').decode()
            attrs = {a.lower() for a in mo.group(1).decode().split()}
            out[name] = (attrs, (mo.group(3) or b"").decode())
    return out


def lsub(m, pattern):
    return listed(ok(m, "LSUB", '""', f'"{pattern}"'), b"LSUB")


def verify(m, who):
    """What `run` leaves: checked in `run` and again after a rebuild."""
    got = lsub(m, "*")
    if who == "mario":
        check("prot/INBOX" in got and "INBOX" in got and "prot/Sent" in got,
              "mario: the gateway's folders he did not unsubscribe", sorted(got))
        check("prot/Receipts" not in got, "mario: prot/Receipts stays unsubscribed", sorted(got))
        check("prot/Moved/a" in got and "prot/Sub/a" not in got and "prot/Gone" in got,
              "mario: the renamed child and the deleted folder", sorted(got))
    else:
        check("prot/Receipts" in got, "anna: mario's UNSUBSCRIBE is not hers", sorted(got))
        check("prot/Moved/a" in got and not any(n.startswith("prot/Sub") for n in got),
              "anna: her subscription moved with the RENAME", sorted(got))


mario, anna = login("mario"), login("anna")

if PHASE == "verify":
    verify(mario, "mario")
    verify(anna, "anna")
    done()
    sys.exit(0)

got = lsub(mario, "*")
check({"INBOX", "prot/INBOX", "prot/Sent", "prot/Receipts", "Drafts"} <= set(got),
      "by default INBOX, the gateway's folders and Drafts are subscribed", sorted(got))
check("prot" not in got, "a mailbox's parent is not subscribed", sorted(got))

ok(mario, "CREATE", '"prot/Sub/a"')
ok(mario, "CREATE", '"prot/Gone"')
got = lsub(mario, "prot/*")
check(not any(n.startswith("prot/Sub") or n == "prot/Gone" for n in got),
      "CREATE does not subscribe (RFC 3501 §6.3.3)", sorted(got))

ok(mario, "SUBSCRIBE", '"prot/Sub/a"')
ok(mario, "SUBSCRIBE", '"prot/Gone"')
ok(anna, "SUBSCRIBE", '"prot/Sub/a"')
typ, text = answer(mario, "SUBSCRIBE", '"prot/Nope"')
check(typ == "NO" and text.startswith(b"[NONEXISTENT]"), "SUBSCRIBE of a name nobody has: NO [NONEXISTENT]", text)

# RFC 3501 §6.3.9: `%` does not reach prot/Sub/a, so its unsubscribed
# parent is shown, \Noselect.
got = lsub(mario, "prot/%")
check(got.get("prot/Sub", (set(),))[0] == {"\\noselect"}, "LSUB prot/%: the parent as \\Noselect", got)
check("prot/Sub/a" not in got and "prot/Gone" in got and "prot/INBOX" in got, "LSUB prot/%: the level asked", got)
got = lsub(mario, "prot/Sub*")
check(list(got) == ["prot/Sub/a"] and "\\noselect" not in got["prot/Sub/a"][0],
      "LSUB prot/Sub*: only the subscribed child, selectable", got)

ok(mario, "UNSUBSCRIBE", '"prot/Receipts"')
check("prot/Receipts" not in lsub(mario, "prot/*"), "it is no longer listed by LSUB")
got = listed(ok(mario, "LIST", '""', '"prot/%"', 'RETURN', '(SUBSCRIBED)'))
check("\\subscribed" in got["prot/INBOX"][0] and "\\subscribed" not in got["prot/Receipts"][0]
      and "\\subscribed" not in got["prot/Sub"][0], "RETURN (SUBSCRIBED) marks only the subscribed", got)
check("prot/Receipts" in lsub(anna, "prot/*"), "anna's subscriptions are her own")
typ, text = answer(mario, "UNSUBSCRIBE", '"prot/Receipts"')
check(typ == "OK", "UNSUBSCRIBE again: OK, nothing to change", text)

# NOTIFY (RFC 5465 §6): SUBSCRIBED is the folders subscribed now; SET
# STATUS tells each one's state at once.
imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
ok(mario, "NOTIFY", "SET", "STATUS", "(subscribed (MessageNew))")
typ, data = mario._untagged_response("OK", [None], "STATUS")
told = {re.match(rb'"?([^"(]*?)"? \(', d).group(1).decode() for d in data if isinstance(d, bytes)}
check("prot/INBOX" in told and "prot/Receipts" not in told and "prot/Sub" not in told,
      "NOTIFY SET STATUS (subscribed ...): the subscribed folders only", sorted(told))
ok(mario, "NOTIFY", "NONE")

# RFC 5258 §5 example 3: a subscribed name whose folder is gone.
ok(mario, "DELETE", '"prot/Gone"')
got = listed(ok(mario, "LIST", '(SUBSCRIBED)', '""', '"prot/*"'))
check(got.get("prot/Gone", (set(),))[0] == {"\\subscribed", "\\nonexistent"},
      "LIST (SUBSCRIBED): the deleted folder is \\Subscribed \\NonExistent", got)
check("\\subscribed" in got.get("prot/Sub/a", (set(),))[0] and "prot/Sub" not in got and "prot/Receipts" not in got,
      "LIST (SUBSCRIBED): only subscribed names", got)
got = listed(ok(mario, "LIST", '""', '"prot/*"'))
check("prot/Gone" not in got, "a plain LIST does not show the deleted folder", sorted(got))

# RFC 5258 §5 example 8: RECURSIVEMATCH.
got = listed(ok(mario, "LIST", '(SUBSCRIBED RECURSIVEMATCH)', '""', '"prot/%"', 'RETURN', '(CHILDREN)'))
sub = got.get("prot/Sub")
check(sub is not None and "\\subscribed" not in sub[0] and "\\haschildren" in sub[0]
      and sub[1] == '("CHILDINFO" ("SUBSCRIBED"))',
      "an unsubscribed parent of a subscribed child: CHILDINFO (\"SUBSCRIBED\")", got)
check("\\subscribed" in got["prot/INBOX"][0] and got["prot/INBOX"][1] == "", "a subscribed folder: no CHILDINFO", got)
got = listed(ok(mario, "LIST", '(SUBSCRIBED RECURSIVEMATCH)', '""', '("prot/Sub" "prot/Sub/a")'))
check("prot/Sub" not in got and "prot/Sub/a" in got, "no CHILDINFO when the child matches itself", got)

# RENAME moves every user's subscriptions of the category and its children.
ok(mario, "RENAME", '"prot/Sub"', '"prot/Moved"')
verify(mario, "mario")
verify(anna, "anna")
got = listed(ok(mario, "LIST", '(SUBSCRIBED)', '""', '"prot/Moved*"'))
check(set(got) == {"prot/Moved/a"} and "\\nonexistent" not in got["prot/Moved/a"][0],
      "the new name is subscribed and exists", got)
mario.logout()
anna.logout()
done()
