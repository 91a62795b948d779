"""Per-user subscriptions against `pecgate serve`, after RFC 3501
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
import re
import sys

from common import check, done
from helpers import Raw

PHASE = sys.argv[4] if len(sys.argv) > 4 else "run"


def ok(r, tag, cmd, what):
    lines, t = r.command(tag, cmd)
    check(t is not None and t.startswith(tag.encode() + b" OK"), what, (cmd, lines, t))
    return lines


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


def lsub(r, tag, pattern):
    return listed(ok(r, tag, f'LSUB "" "{pattern}"', f"LSUB {pattern}"), b"LSUB")


def verify(r, who):
    """What `run` leaves: checked in `run` and again after a rebuild."""
    got = lsub(r, f"v{who}", "*")
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


mario, anna = Raw(), Raw()
check(mario.login("mario") and anna.login("anna"), "mario and anna log in")

if PHASE == "verify":
    verify(mario, "mario")
    verify(anna, "anna")
    done()
    sys.exit(0)

got = lsub(mario, "s1", "*")
check({"INBOX", "prot/INBOX", "prot/Sent", "prot/Receipts", "Drafts"} <= set(got),
      "by default INBOX, the gateway's folders and Drafts are subscribed", sorted(got))
check("prot" not in got, "a mailbox's parent is not subscribed", sorted(got))

ok(mario, "c1", 'CREATE "prot/Sub/a"', "CREATE prot/Sub/a (and its parent)")
ok(mario, "c2", 'CREATE "prot/Gone"', "CREATE prot/Gone")
got = lsub(mario, "s2", "prot/*")
check(not any(n.startswith("prot/Sub") or n == "prot/Gone" for n in got),
      "CREATE does not subscribe (RFC 3501 §6.3.3)", sorted(got))

ok(mario, "u1", 'SUBSCRIBE "prot/Sub/a"', "SUBSCRIBE prot/Sub/a")
ok(mario, "u2", 'SUBSCRIBE "prot/Gone"', "SUBSCRIBE prot/Gone")
ok(anna, "u3", 'SUBSCRIBE "prot/Sub/a"', "anna subscribes prot/Sub/a too")
lines, t = mario.command("u4", 'SUBSCRIBE "prot/Nope"')
check(t is not None and t.startswith(b"u4 NO [NONEXISTENT]"), "SUBSCRIBE of a name nobody has: NO [NONEXISTENT]", t)

# RFC 3501 §6.3.9: `%` does not reach prot/Sub/a, so its unsubscribed
# parent is shown, \Noselect.
got = lsub(mario, "s3", "prot/%")
check(got.get("prot/Sub", (set(),))[0] == {"\\noselect"}, "LSUB prot/%: the parent as \\Noselect", got)
check("prot/Sub/a" not in got and "prot/Gone" in got and "prot/INBOX" in got, "LSUB prot/%: the level asked", got)
got = lsub(mario, "s4", "prot/Sub*")
check(list(got) == ["prot/Sub/a"] and "\\noselect" not in got["prot/Sub/a"][0],
      "LSUB prot/Sub*: only the subscribed child, selectable", got)

ok(mario, "u5", 'UNSUBSCRIBE "prot/Receipts"', "UNSUBSCRIBE one of the gateway's folders")
check("prot/Receipts" not in lsub(mario, "s5", "prot/*"), "it is no longer listed by LSUB")
got = listed(ok(mario, "l1", 'LIST "" "prot/%" RETURN (SUBSCRIBED)', "LIST RETURN (SUBSCRIBED)"))
check("\\subscribed" in got["prot/INBOX"][0] and "\\subscribed" not in got["prot/Receipts"][0]
      and "\\subscribed" not in got["prot/Sub"][0], "RETURN (SUBSCRIBED) marks only the subscribed", got)
check("prot/Receipts" in lsub(anna, "s6", "prot/*"), "anna's subscriptions are her own")
lines, t = mario.command("u6", 'UNSUBSCRIBE "prot/Receipts"')
check(t is not None and t.startswith(b"u6 OK"), "UNSUBSCRIBE again: OK, nothing to change", t)

# RFC 5258 §5 example 3: a subscribed name whose folder is gone.
ok(mario, "d1", 'DELETE "prot/Gone"', "DELETE prot/Gone")
got = listed(ok(mario, "l2", 'LIST (SUBSCRIBED) "" "prot/*"', "LIST (SUBSCRIBED)"))
check(got.get("prot/Gone", (set(),))[0] == {"\\subscribed", "\\nonexistent"},
      "LIST (SUBSCRIBED): the deleted folder is \\Subscribed \\NonExistent", got)
check("\\subscribed" in got.get("prot/Sub/a", (set(),))[0] and "prot/Sub" not in got and "prot/Receipts" not in got,
      "LIST (SUBSCRIBED): only subscribed names", got)
got = listed(ok(mario, "l3", 'LIST "" "prot/*"', "plain LIST"))
check("prot/Gone" not in got, "a plain LIST does not show the deleted folder", sorted(got))

# RFC 5258 §5 example 8: RECURSIVEMATCH.
got = listed(ok(mario, "l4", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "prot/%" RETURN (CHILDREN)', "RECURSIVEMATCH"))
sub = got.get("prot/Sub")
check(sub is not None and "\\subscribed" not in sub[0] and "\\haschildren" in sub[0]
      and sub[1] == '("CHILDINFO" ("SUBSCRIBED"))',
      "an unsubscribed parent of a subscribed child: CHILDINFO (\"SUBSCRIBED\")", got)
check("\\subscribed" in got["prot/INBOX"][0] and got["prot/INBOX"][1] == "", "a subscribed folder: no CHILDINFO", got)
got = listed(ok(mario, "l5", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" ("prot/Sub" "prot/Sub/a")', "RECURSIVEMATCH, child matched"))
check("prot/Sub" not in got and "prot/Sub/a" in got, "no CHILDINFO when the child matches itself", got)

# RENAME moves every user's subscriptions of the category and its children.
ok(mario, "r1", 'RENAME "prot/Sub" "prot/Moved"', "RENAME prot/Sub prot/Moved")
verify(mario, "mario")
verify(anna, "anna")
got = listed(ok(mario, "l6", 'LIST (SUBSCRIBED) "" "prot/Moved*"', "LIST (SUBSCRIBED) after RENAME"))
check(set(got) == {"prot/Moved/a"} and "\\nonexistent" not in got["prot/Moved/a"][0],
      "the new name is subscribed and exists", got)
mario.close()
anna.close()
done()
