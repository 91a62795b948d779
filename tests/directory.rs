//! Directory logins (`[directory]`) against a real OpenLDAP (`slapd`) on
//! loopback, over LDAPS and StartTLS, with real clients (imaplib, smtplib,
//! HTTP Basic) talking to `pecgate serve`: search-then-bind, grants from
//! two groups, a user removed from a group and a user disabled while
//! logged in (their IDLE sessions end), the directory stopped (directory
//! users get "unavailable", the local account still logs in), LDAP
//! injection in the login name, an empty password, `pecgate users show`,
//! the DN in the login's audit record, the metric.

mod imap_support;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use imap_support::{start_with, Gateway, Setup, PASSWORD};
use serde_json::Value;
use support::slapd::{group, person, Person, Slapd, SVC_DN, SVC_PW};

const CLIENT: &str = "tests/support/directory_client.py";

fn people() -> Vec<Person<'static>> {
    vec![
        Person { uid: "giulia", password: "giulia-Pw-1", disabled: false },
        Person { uid: "paolo", password: "paolo-Pw-1", disabled: false },
        Person { uid: "carla", password: "carla-Pw-1", disabled: true },
        Person { uid: "dario", password: "dario-Pw-1", disabled: false },
    ]
}

fn slapd() -> Slapd {
    Slapd::start(
        &people(),
        &[("PEC-Protocollo", &["giulia", "paolo", "carla"]), ("PEC-Tributi", &["giulia"]), ("PEC-Audit", &[])],
    )
}

struct Setup2 {
    gw: Gateway,
    smtp: u16,
    http: u16,
}

/// `pecgate serve` with the usual local users (mario, anna, ro, luigi) and
/// `[directory]` pointing at `slapd` (LDAPS, or StartTLS).
fn gateway(slapd: &Slapd, starttls: bool, cache: &str) -> Setup2 {
    gateway_with(slapd, starttls, cache, "(&(objectClass=inetOrgPerson)(uid={login})(!(employeeType=disabled)))")
}

fn gateway_with(slapd: &Slapd, starttls: bool, cache: &str, filter: &str) -> Setup2 {
    let smtp = support::free_port();
    let http = support::free_port();
    let pwfile = slapd.dir.path().join("bind-password");
    std::fs::write(&pwfile, format!("{SVC_PW}\n")).unwrap();
    let url = if starttls {
        format!("url = \"{}\"\nstarttls = true\n", slapd.ldap_url())
    } else {
        format!("url = \"{}\"\n", slapd.ldaps_url())
    };
    let extra = format!(
        "[smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [directory]\n{url}ca = \"{ca}\"\nbind_dn = \"{SVC_DN}\"\nbind_password_file = \"{pw}\"\n\
         user_base = \"ou=Persone,dc=comune,dc=test\"\n\
         user_filter = \"{filter}\"\n\
         cache = \"{cache}\"\ntimeout = \"3s\"\n\n\
         [[directory.group]]\ndn = \"{prot}\"\ngrants = {{ prot = [\"read\", \"triage\"] }}\ndefault_mailbox = \"prot\"\n\n\
         [[directory.group]]\ndn = \"{trib}\"\ngrants = {{ tributi = [\"read\"] }}\n\n\
         [[user]]\nname = \"giulia\"\ngrants = {{ prot = [\"send\"] }}\n",
        ca = slapd.ca().display(),
        pw = pwfile.display(),
        prot = group("PEC-Protocollo"),
        trib = group("PEC-Tributi"),
    );
    let gw = start_with(Setup { inbox: 2, extra_config: extra, ..Setup::default() });
    Setup2 { gw, smtp, http }
}

/// A loopback address not used before by this test binary: failures on
/// purpose then only count against the user name in the login throttle.
fn source_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(2);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("127.0.{}.{}", n / 250, n % 250 + 2)
}

fn client(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIENT))
        .args(args)
        .env("PECGATE_TEST_SOURCE", source_address())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("client {args:?}: {e}: {text} / {}", String::from_utf8_lossy(&out.stderr)))
}

fn imap_login(s: &Setup2, user: &str, pw: &str) -> Value {
    let port = s.gw.port.to_string();
    let cert = s.gw.cert();
    client(&["imap-login", &port, cert.to_str().unwrap(), user, pw])
}

fn smtp_login(s: &Setup2, user: &str, pw: &str) -> (i64, String) {
    let v = client(&["smtp-login", &s.smtp.to_string(), user, pw]);
    (v["code"].as_i64().unwrap(), v["text"].as_str().unwrap().to_string())
}

fn http_status(s: &Setup2, user: &str, pw: &str) -> String {
    let r = support::http_get(s.http, "/api/mailboxes", Some((user, pw)));
    r.lines().next().unwrap_or("").to_string()
}

fn folders(v: &Value) -> Vec<String> {
    v["folders"].as_array().map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// A client that logs in, selects INBOX and IDLEs (up to `secs`), running.
struct Idler {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Idler {
    fn start(s: &Setup2, user: &str, pw: &str, secs: u32) -> Idler {
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIENT))
            .args(["imap-idle", &s.gw.port.to_string(), s.gw.cert().to_str().unwrap(), user, pw, &secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "IDLING", "{user} did not get to IDLE");
        Idler { child, out }
    }

    /// The BYE the session got (None: none in the time given).
    fn finish(mut self) -> (Option<String>, f64) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
        (v["bye"].as_str().map(str::to_string), v["seconds"].as_f64().unwrap_or(0.0))
    }
}

fn cli(s: &Setup2, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(args)
        .arg("--config")
        .arg(&s.gw.config)
        .output()
        .expect("run pecgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `login` audit records of `actor`, newest last (from `audit query`).
fn logins(s: &Setup2, actor: &str) -> Vec<Value> {
    let (ok, out, err) = cli(s, &["audit", "query", "--user", actor, "--op", "login", "--format", "jsonl"]);
    assert!(ok, "audit query: {err}");
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn directory_users_log_in_over_ldaps_with_their_groups_grants() {
    let slapd = slapd();
    let s = gateway(&slapd, false, "5m");

    // Search-then-bind; grants of two groups and the [[user]] of the same
    // name, INBOX from the group that names it.
    let v = imap_login(&s, "giulia", "giulia-Pw-1");
    assert!(v["ok"].as_bool().unwrap(), "giulia: {v} / {}", s.gw.log());
    let f = folders(&v);
    assert!(f.iter().any(|x| x == "INBOX"), "{f:?}");
    assert!(f.iter().any(|x| x.starts_with("tributi/")), "the second group's mailbox: {f:?}");
    // The login name is matched as the directory does (without case).
    assert!(imap_login(&s, "Giulia", "giulia-Pw-1")["ok"].as_bool().unwrap());
    // The DN is in the login's audit record.
    let recs = logins(&s, "giulia");
    assert!(
        recs.iter().any(|r| r["identity"] == person("giulia").as_str() && r["outcome"] == "ok"),
        "audit records: {recs:?}"
    );

    // Wrong password, unknown user, an account the filter leaves out
    // (disabled): all refused the same way.
    for (u, p) in [("giulia", "wrong"), ("nessuno", "giulia-Pw-1"), ("carla", "carla-Pw-1")] {
        let v = imap_login(&s, u, p);
        assert!(!v["ok"].as_bool().unwrap(), "{u}/{p} logged in");
        assert!(v["text"].as_str().unwrap().contains("AUTHENTICATIONFAILED"), "{u}: {v}");
    }
    // An empty password is an unauthenticated bind, which slapd accepts:
    // it must never log anybody in.
    assert_eq!(slapd.bind_rc(&person("giulia"), ""), 0, "slapd should accept the unauthenticated bind");
    assert!(!imap_login(&s, "giulia", "")["ok"].as_bool().unwrap());
    // LDAP injection in the login name: the filter is escaped.
    for u in ["*)(uid=*", "*", "giulia)(|(uid=*", "*)(objectClass=*"] {
        for p in ["giulia-Pw-1", SVC_PW, ""] {
            assert!(!imap_login(&s, u, p)["ok"].as_bool().unwrap(), "injection {u:?}/{p:?} logged in");
        }
    }
    // A member of no configured group logs in and sees nothing.
    let v = imap_login(&s, "dario", "dario-Pw-1");
    assert!(v["ok"].as_bool().unwrap());
    assert!(folders(&v).iter().all(|f| !f.starts_with("prot") && !f.starts_with("tributi")), "{v}");

    // SMTP AUTH and the HTTP API check the same way.
    assert_eq!(smtp_login(&s, "giulia", "giulia-Pw-1").0, 235);
    assert_eq!(smtp_login(&s, "giulia", "nope").0, 535);
    assert!(http_status(&s, "paolo", "paolo-Pw-1").contains("200"), "{}", http_status(&s, "paolo", "paolo-Pw-1"));
    assert!(http_status(&s, "paolo", "bad").contains("401"));
    // Local accounts keep working beside the directory.
    assert!(imap_login(&s, "mario", PASSWORD)["ok"].as_bool().unwrap());

    // users show: the effective grants and where each comes from.
    let (ok, out, err) = cli(&s, &["users", "show", "giulia"]);
    assert!(ok, "{err}");
    assert!(out.contains(&person("giulia")), "{out}");
    assert!(out.contains(&format!("prot             read    from group {}", group("PEC-Protocollo"))), "{out}");
    assert!(out.contains(&format!("tributi          read    from group {}", group("PEC-Tributi"))), "{out}");
    assert!(out.contains("prot             send    from [[user]] giulia"), "{out}");
    let (ok, out, _) = cli(&s, &["users", "show", "mario"]);
    assert!(ok && out.contains("local account"), "{out}");
    let (ok, _, err) = cli(&s, &["users", "show", "nessuno"]);
    assert!(!ok && err.contains("no user"), "{err}");

    // The metric: the directory answered.
    let m = support::http_get(s.http, "/metrics", None);
    assert_eq!(support::sample(&m, "pecgate_directory_up", &[]), Some(1.0), "{m}");
    assert!(support::sample(&m, "pecgate_directory_logins_total", &["result=\"ok\""]).unwrap() >= 3.0, "{m}");
    assert!(support::sample(&m, "pecgate_directory_logins_total", &["result=\"cached\""]).unwrap() >= 2.0, "{m}");
    assert!(support::sample(&m, "pecgate_directory_logins_total", &["result=\"rejected\""]).unwrap() >= 3.0);
}

#[test]
fn a_disabled_user_or_one_removed_from_a_group_loses_access_within_the_cache_time() {
    let slapd = slapd();
    let s = gateway(&slapd, false, "2s");
    let paolo = Idler::start(&s, "paolo", "paolo-Pw-1", 20);
    let giulia = Idler::start(&s, "giulia", "giulia-Pw-1", 20);
    // An IDLE session of a user not changed stays.
    let mario = Idler::start(&s, "mario", PASSWORD, 8);

    // paolo leaves PEC-Protocollo: his selected INBOX is no longer his.
    slapd.modify(&group("PEC-Protocollo"), "delete", "member", &[&person("paolo")]);
    // giulia's account is disabled (the filter leaves her out).
    slapd.modify(&person("giulia"), "add", "employeeType", &["disabled"]);
    let t0 = Instant::now();
    let (bye, _) = paolo.finish();
    assert!(bye.as_deref().is_some_and(|b| b.contains("withdrawn")), "paolo: {bye:?} / {}", s.gw.log());
    let (bye, _) = giulia.finish();
    assert!(bye.as_deref().is_some_and(|b| b.contains("removed or disabled")), "giulia: {bye:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    let (bye, _) = mario.finish();
    assert_eq!(bye, None, "mario's session was ended");

    // Their next logins: giulia is refused though her password is right;
    // paolo logs in and no longer sees the mailbox.
    assert!(!imap_login(&s, "giulia", "giulia-Pw-1")["ok"].as_bool().unwrap());
    let v = imap_login(&s, "paolo", "paolo-Pw-1");
    assert!(v["ok"].as_bool().unwrap());
    assert!(folders(&v).iter().all(|f| !f.starts_with("prot")), "{v}");
}

#[test]
fn with_the_directory_down_directory_users_get_unavailable_and_local_admins_log_in() {
    let mut slapd = slapd();
    let s = gateway(&slapd, false, "5m");
    assert!(imap_login(&s, "giulia", "giulia-Pw-1")["ok"].as_bool().unwrap());
    slapd.stop();
    // A login not remembered: the directory cannot be asked.
    let v = imap_login(&s, "paolo", "paolo-Pw-1");
    assert!(!v["ok"].as_bool().unwrap());
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("UNAVAILABLE") && text.contains("directory unavailable"), "{text}");
    let (code, text) = smtp_login(&s, "paolo", "paolo-Pw-1");
    assert_eq!(code, 454, "{text}");
    assert!(text.contains("directory unavailable"), "{text}");
    assert!(http_status(&s, "paolo", "paolo-Pw-1").contains("503"));
    // A login verified within the cache time still works; the break-glass
    // local account always does.
    assert!(imap_login(&s, "giulia", "giulia-Pw-1")["ok"].as_bool().unwrap());
    assert!(imap_login(&s, "mario", PASSWORD)["ok"].as_bool().unwrap());
    let m = support::http_get(s.http, "/metrics", None);
    assert_eq!(support::sample(&m, "pecgate_directory_up", &[]), Some(0.0), "{m}");
    assert!(support::sample(&m, "pecgate_directory_errors_total", &[]).unwrap() >= 1.0);
    // Back: directory logins work again.
    slapd.start_again();
    assert!(imap_login(&s, "paolo", "paolo-Pw-1")["ok"].as_bool().unwrap(), "{}", s.gw.log());
    let m = support::http_get(s.http, "/metrics", None);
    assert_eq!(support::sample(&m, "pecgate_directory_up", &[]), Some(1.0));
}

#[test]
fn starttls_works_and_a_wrong_ca_is_unavailable_not_wrong_password() {
    let slapd = slapd();
    let s = gateway(&slapd, true, "5m");
    let v = imap_login(&s, "giulia", "giulia-Pw-1");
    assert!(v["ok"].as_bool().unwrap(), "StartTLS: {v} / {}", s.gw.log());
    assert!(!imap_login(&s, "giulia", "nope")["ok"].as_bool().unwrap());

    // A directory whose certificate does not chain to `ca`: never a login,
    // and the client is told the directory is unavailable.
    let other = tempfile::tempdir().unwrap();
    support::slapd::make_ca_and_server_cert(other.path());
    let cfg = std::fs::read_to_string(&s.gw.config).unwrap();
    let cfg = cfg.replace(&slapd.ca().display().to_string(), &other.path().join("ca.pem").display().to_string());
    std::fs::write(&s.gw.config, cfg).unwrap();
    let st = Command::new("kill").args(["-HUP", &s.gw.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    loop {
        let v = imap_login(&s, "paolo", "paolo-Pw-1");
        let text = v["text"].as_str().unwrap_or("").to_string();
        if text.contains("UNAVAILABLE") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still {v} after SIGHUP / {}", s.gw.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn check_config_explains_directory_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pecgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\ndata_dir = \"{}\"\n\n[[mailbox]]\nalias = \"prot\"\naddress = \"p@pec.example.it\"\nusername = \"u\"\npassword = \"p\"\n\
             imap = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\n\n\
             [directory]\nurl = \"ldap://dc1.comune.local\"\nbind_dn = \"cn=svc\"\nbind_password_file = \"{}/missing\"\n\
             user_base = \"ou=p\"\nuser_filter = \"(uid=login\"\n\n\
             [[directory.group]]\ndn = \"cn=g\"\ngrants = {{ nowhere = [\"read\"] }}\n",
            dir.path().join("data").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pecgate")).args(["check-config", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for expected in [
        "directory.url",
        "passwords in clear",
        "directory.bind_password_file",
        "directory.user_filter",
        "{login}",
        "directory.group[0].grants.nowhere",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// With a filter that also takes the mail address, a person logging in by
/// address is the same gateway user as by uid (the entry's `uid`).
#[test]
fn logging_in_by_address_is_the_same_user() {
    let slapd = slapd();
    let s = gateway_with(&slapd, false, "5m", "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))");
    let v = imap_login(&s, "giulia@comune.test", "giulia-Pw-1");
    assert!(v["ok"].as_bool().unwrap(), "{v} / {}", s.gw.log());
    assert!(folders(&v).iter().any(|f| f.starts_with("tributi/")), "{v}");
    let recs = logins(&s, "giulia");
    assert!(recs.iter().any(|r| r["outcome"] == "ok" && r["identity"] == person("giulia").as_str()), "{recs:?}");
    assert!(logins(&s, "giulia@comune.test").iter().all(|r| r["outcome"] != "ok"));
}
