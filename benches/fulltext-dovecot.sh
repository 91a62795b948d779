#!/usr/bin/env bash
# Dovecot 2.3 with fts-xapian on the same messages as benches/fulltext.rs:
# the side-by-side figures of BENCHMARKS.md "Full-text search".
#
#   benches/fulltext-dovecot.sh [N]     # N messages (default 20000)
#
# DOVECOT_FTS_XAPIAN sets fts-xapian's options (default `partial=3
# full=20`, its documented ones; `partial=20 full=20` keeps no prefixes
# shorter than 20 characters, so it indexes whole words only: 3..20 is
# what 1.5.5 accepts). DOVECOT_KEEP=1 keeps the data directory.
#
# Writes the messages as a Maildir (the bench's FULLTEXT_MAILDIR mode, the
# same generator and seed), starts a throwaway Dovecot as root's tests do
# (mail as the dovecot user, vsz_limit raised), times `doveadm index`
# (which builds the xapian index), then times `doveadm search ... body W`
# for the words the pecgate bench searches (median of 20 after a warm-up)
# and the same as IMAP `SEARCH BODY` in one `doveadm exec imap` session
# (no process start: what a connected client waits), and prints the
# index's size. Installs dovecot-imapd and
# dovecot-fts-xapian if missing (apt-get, as root).
#
# DOVECOT_DIR=/var/tmp/DIR: work in DIR and keep it. Run again with the
# same DIR after an interruption (a machine stopped): `doveadm index`
# goes on from what fts-xapian committed, and the indexing time printed is
# the sum of the runs (each run's time up to its last heartbeat, written
# every 30 s to DIR/heartbeat). For sizes that take longer than a machine
# is up: 100,000 messages index at ≈ 7 messages/s, about 4 hours.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-20000}
die() { echo "fulltext-dovecot: $*" >&2; exit 1; }

if ! dpkg -s dovecot-fts-xapian >/dev/null 2>&1 || ! dpkg -s dovecot-imapd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dovecot-imapd and dovecot-fts-xapian are missing: install them (as root)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-fts-xapian >/dev/null
fi

resume=
if [ -n "${DOVECOT_DIR:-}" ]; then
  D=$DOVECOT_DIR
  DOVECOT_KEEP=1
  if [ -s "$D/messages" ]; then
    resume=1
    N=$(cat "$D/messages")
    echo "fulltext-dovecot: going on in $D ($N messages)"
  else
    rm -rf "$D"
    mkdir -p "$D"
  fi
else
  D=$(mktemp -d /var/tmp/pecgate-fts-dovecot.XXXXXX)
fi
chmod 755 "$D"
trap 'kill $(cat "$D/run/master.pid" 2>/dev/null) 2>/dev/null || true; [ -n "${DOVECOT_KEEP:-}" ] || rm -rf "$D"' EXIT
mkdir -p "$D/run" "$D/home/bench"
# FULLTEXT_BENCH: a built benches/fulltext binary to run instead of cargo.
if [ -n "$resume" ]; then
  :
elif [ -n "${FULLTEXT_BENCH:-}" ]; then
  FULLTEXT_MAILDIR="$D/home/bench/Maildir" FULLTEXT_MESSAGES="$N" "$FULLTEXT_BENCH" | tail -1
else
  FULLTEXT_MAILDIR="$D/home/bench/Maildir" FULLTEXT_MESSAGES="$N" cargo bench --bench fulltext 2>/dev/null | tail -1
fi
[ -n "$resume" ] || echo "$N" > "$D/messages"
chown -R dovecot:dovecot "$D/home"
cat > "$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/run
log_path = $D/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {
  driver = static
  args = password=bench
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$D/home/%u mail=maildir:~/Maildir
}
mail_plugins = fts fts_xapian
plugin {
  fts = xapian
  fts_xapian = ${DOVECOT_FTS_XAPIAN:-partial=3 full=20} verbose=0
  fts_autoindex = no
  fts_enforced = yes
}
service imap-login {
  inet_listener imap {
    port = 0
  }
}
service imap {
  vsz_limit = 4G
}
service indexer-worker {
  vsz_limit = 4G
}
EOF
dovecot -c "$D/dovecot.conf"
bytes=$(du -sb "$D/home/bench/Maildir/cur" | cut -f1)
# A run cut short left its start and its last heartbeat: count it.
if [ -s "$D/segment.start" ] && [ -s "$D/heartbeat" ]; then
  echo "$(cat "$D/heartbeat") - $(cat "$D/segment.start")" | bc -l >> "$D/segments"
fi
start=$(date +%s.%N)
echo "$start" > "$D/segment.start"
( while sleep 30; do date +%s.%N > "$D/heartbeat"; done ) &
beat=$!
doveadm -c "$D/dovecot.conf" index -u bench INBOX
end=$(date +%s.%N)
kill "$beat" 2>/dev/null || true
echo "$end - $start" | bc -l >> "$D/segments"
rm -f "$D/segment.start" "$D/heartbeat"
secs=$(paste -sd+ "$D/segments" | bc -l)
runs=$(wc -l < "$D/segments")
[ "$runs" -gt 1 ] && echo "fulltext-dovecot: indexing took $runs runs: $(paste -sd' ' "$D/segments") s"
idx=$(du -sb "$D/home/bench/Maildir/xapian-indexes" 2>/dev/null | cut -f1 || echo 0)
printf 'dovecot fts-xapian: indexed %d messages (%.1f MB) in %.1f s: %.0f messages/s; index %.1f MB = %.1f %% of the messages\n' \
  "$N" "$(echo "$bytes/1000000" | bc -l)" "$secs" "$(echo "$N/$secs" | bc -l)" "$(echo "$idx/1000000" | bc -l)" "$(echo "100*$idx/$bytes" | bc -l)"
for w in raccomandata sollecito raccom "raccomandata urgente"; do
  args=()
  for x in $w; do args+=(body "$x"); done
  doveadm -c "$D/dovecot.conf" search -u bench mailbox INBOX "${args[@]}" >/dev/null
  ts=()
  for _ in $(seq 20); do
    s=$(date +%s%N)
    hits=$(doveadm -c "$D/dovecot.conf" search -u bench mailbox INBOX "${args[@]}" | wc -l)
    ts+=($(( ($(date +%s%N) - s) / 1000 )))
  done
  median=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 10p)
  printf 'dovecot BODY %s: %d hits, median %.2f ms (doveadm process included)\n' "$w" "$hits" "$(echo "$median/1000" | bc -l)"
done
# The same queries as IMAP SEARCH in one session (Dovecot's imap process
# over stdin/stdout, pre-authenticated): the time a connected client waits.
python3 - "$D/dovecot.conf" <<'PY'
import subprocess, sys, time
p = subprocess.Popen(["doveadm", "-c", sys.argv[1], "exec", "imap", "-u", "bench"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
n = 0
def cmd(c):
    global n
    n += 1
    tag = b"t%d" % n
    p.stdin.write(tag + b" " + c.encode() + b"\r\n"); p.stdin.flush()
    hits = 0
    while True:
        l = p.stdout.readline()
        if not l:
            raise SystemExit("imap closed: " + c)
        if l.startswith(b"* SEARCH"):
            hits = len(l.split()) - 2
        if l.startswith(tag + b" "):
            assert b" OK" in l, l
            return hits
p.stdout.readline()
cmd("SELECT INBOX")
for w in ["raccomandata", "sollecito", "raccom", "raccomandata urgente"]:
    q = "UID SEARCH " + " ".join("BODY " + x for x in w.split())
    cmd(q)
    ts = []
    for _ in range(20):
        t = time.perf_counter(); hits = cmd(q); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    print("dovecot IMAP SEARCH BODY %s: %d hits, median %.2f ms, max %.2f ms" % (w, hits, ts[10], ts[19]))
cmd("LOGOUT")
PY
[ -n "${DOVECOT_KEEP:-}" ] && echo "data in $D (remove it when done)"
true
