//! The daemon as systemd runs it: readiness over `NOTIFY_SOCKET`, SIGHUP
//! reload (a new mailbox is picked up; an invalid file is refused and the old
//! configuration kept), JSON logs, clean exit on SIGTERM.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::gateway::{mailbox_toml, Gateway, FAST_UPSTREAM};
use support::{make_message, pecgate_bin, Dovecot, DovecotOptions, UserSpec};

#[test]
fn notify_socket_gets_ready_and_stopping() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let cfg = d.path().join("pecgate.toml");
    std::fs::write(&cfg, format!("[store]\ndata_dir = \"{}\"\n", d.path().join("data").display())).unwrap();
    let child = Command::new(pecgate_bin())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    // A signal to the test process (another test's child exiting) can
    // interrupt the wait: EINTR is not an answer, wait again.
    let recv = |buf: &mut [u8]| loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    // While it starts, systemd is asked to wait longer (an index rebuilt
    // at ten million messages takes minutes); then it is ready.
    let mut before = Vec::new();
    loop {
        let n = recv(&mut buf).expect("a readiness notification");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("READY=1") {
            break;
        }
        before.push(m);
    }
    assert!(
        before.iter().any(|m| m.contains("EXTEND_TIMEOUT_USEC=60000000") && m.contains("STATUS=starting")),
        "no start extension before READY=1: {before:?}"
    );
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let n = recv(&mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.trim().is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(log.contains("archive closed"));
}

#[test]
fn sighup_reloads_mailboxes_and_refuses_a_bad_file() {
    let dv = Dovecot::start(
        DovecotOptions::new()
            .user(UserSpec::new("a@pec.example.it", "pa"))
            .user(UserSpec::new("b@pec.example.it", "pb")),
    );
    dv.imap("a@pec.example.it").append("INBOX", (0..3).map(|i| make_message(i, 1000)));
    dv.imap("b@pec.example.it").append("INBOX", (10..15).map(|i| make_message(i, 1000)));
    let one = format!("{FAST_UPSTREAM}{}", mailbox_toml("alpha", "a@pec.example.it", "pa", dv.port, ""));
    let mut g = Gateway::new(&one);
    g.start();
    g.wait_mailbox("alpha", Duration::from_secs(60), "alpha archived", |s| s["archived_total"] == 3);

    // A broken file: refused, the daemon keeps running with the old one.
    std::fs::write(&g.config_path, "[store]\ndata_dir = 42\n").unwrap();
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.log().contains("new configuration refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(g.is_running());

    // A second mailbox added: picked up without a restart.
    g.write_config(&format!("{one}{}", mailbox_toml("beta", "b@pec.example.it", "pb", dv.port, "")));
    g.signal("HUP");
    g.wait_mailbox("beta", Duration::from_secs(60), "beta archived after reload", |s| s["archived_total"] == 5);
    assert_eq!(g.mailbox_status("alpha").unwrap()["archived_total"], 3);
    assert_eq!(g.stop(), Some(0));
    assert_eq!(dv.imap("b@pec.example.it").count("INBOX"), 0);
}

/// SHA-256 (hex) of the first certificate of a PEM chain, as Python sees a
/// peer certificate.
const PY_FINGERPRINTS: &str = r#"
import hashlib, imaplib, ssl, sys, json, urllib.request, base64
PORT, HTTP = int(sys.argv[1]), int(sys.argv[2])
def pem_fp(path):
    text = open(path).read()
    first = text[: text.index("-----END CERTIFICATE-----") + 25]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()
def served_fp():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=ctx)
    fp = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
    return c, fp
def login(c, user, pw):
    try:
        c.login(user, pw)
        return True
    except imaplib.IMAP4.error:
        return False
def api(user, pw):
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP}/api/mailboxes")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
"#;

#[test]
fn sighup_reloads_tls_certificate_imap_limits_and_http_users() {
    let d = tempfile::tempdir().unwrap();
    let write_cert = |name: &str| {
        let c = pecgate::sim::pki::server_cert_for_ip("127.0.0.1").unwrap();
        let (cert, key) = (d.path().join(format!("{name}.pem")), d.path().join(format!("{name}.key")));
        std::fs::write(&cert, c.chain).unwrap();
        std::fs::write(&key, c.key).unwrap();
        (cert, key)
    };
    let (cert_a, key_a) = write_cert("a");
    let (cert_b, key_b) = write_cert("b");
    let (imaps, http) = (support::free_port(), support::free_port());
    let user = |name: &str, pw: &str| {
        let hash = pecgate::auth::hash_password(pw).unwrap();
        format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngrants = {{ prot = [\"read\"] }}\n")
    };
    let mario = user("mario", "pw-mario");
    let config = |cert: &std::path::Path, key: &std::path::Path, per_user: usize, imap_port: u16, users: &str| {
        format!(
            "[[mailbox]]\nalias = \"prot\"\naddress = \"prot@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\n\
             imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\noffload = {{ mode = \"never\" }}\npoll_interval = \"1h\"\n\n\
             [imap]\nlisten = [\"127.0.0.1:{imap_port}\"]\nmax_sessions_per_user = {per_user}\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{users}",
            cert.display(),
            key.display()
        )
    };
    let mut g = Gateway::new(&config(&cert_a, &key_a, 1, imaps, &mario));
    g.start();
    support::sim::wait_port(imaps, &g.log_path);
    support::sim::wait_port(http, &g.log_path);
    let py = |code: &str| {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{PY_FINGERPRINTS}{code}"))
            .arg(imaps.to_string())
            .arg(http.to_string())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    // Start a Python process that holds one session across the reload and
    // reports on stdout; it waits for a line on stdin to go on.
    let mut held = Command::new("python3")
        .arg("-u")
        .arg("-c")
        .arg(format!(
            "{PY_FINGERPRINTS}\n\
c, fp = served_fp()\n\
assert fp == pem_fp({a:?}), 'before the reload: certificate A'\n\
assert login(c, 'mario', 'pw-mario')\n\
assert b'Offices' not in b''.join(c.list()[1]), 'no office yet'\n\
c2, _ = served_fp()\n\
assert not login(c2, 'mario', 'pw-mario'), 'max_sessions_per_user = 1 holds'\n\
assert api('neu', 'pw-neu') == 401\n\
print('ready', flush=True)\n\
sys.stdin.readline()\n\
typ, _ = c.noop()\n\
assert typ == 'OK', 'the session opened before the reload survives it'\n\
names = b''.join(c.list()[1])\n\
assert b'prot/Offices/segreteria' in names, ('the office added by the reload shows in the open session', names)\n\
c.logout()\n\
print('survived', flush=True)\n",
            a = cert_a.display().to_string()
        ))
        .arg(imaps.to_string())
        .arg(http.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{}", g.log());

    // Certificate B, 3 sessions per user, a new user, an office with mario
    // in it; the IMAP port moved too, which needs a restart: said in the
    // log, the old port kept.
    let other_port = support::free_port();
    let users = format!("{mario}{}[[office]]\nname = \"segreteria\"\nmembers = [\"mario\"]\n", user("neu", "pw-neu"));
    g.write_config(&config(&cert_b, &key_b, 3, other_port, &users));
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.log().contains("IMAP limits reloaded") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = g.log();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    assert!(log.contains("[imap] listen / listen_starttls changed: restart pecgate"), "{log}");
    let (ok, text) = py(&format!(
        "c, fp = served_fp()\n\
assert fp == pem_fp({b:?}), 'after the reload: certificate B'\n\
assert login(c, 'mario', 'pw-mario'), 'second session: the new limit is 3'\n\
c3, _ = served_fp()\n\
assert login(c3, 'mario', 'pw-mario'), 'third session'\n\
c4, _ = served_fp()\n\
assert not login(c4, 'mario', 'pw-mario'), 'fourth refused: the session held from before counts'\n\
assert api('neu', 'pw-neu') == 200, 'the HTTP API knows the new user'\n\
c.logout(); c3.logout()\n",
        b = cert_b.display().to_string()
    ));
    assert!(ok, "{text}\n{}", g.log());
    std::io::Write::write_all(held.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let status = held.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(held.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success() && rest.contains("survived"), "{rest}{err}");

    // A key that does not match its certificate: refused, B stays.
    g.write_config(&config(&cert_b, &key_a, 3, other_port, &users));
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.log().contains("TLS certificate refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, text) = py(&format!("c, fp = served_fp()\nassert fp == pem_fp({:?})\n", cert_b.display().to_string()));
    assert!(ok, "{text}");
    assert_eq!(g.stop(), Some(0));
}
