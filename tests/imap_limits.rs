//! Session limits and live reload of users, over imaplib against
//! `pecgate serve`: at most `max_sessions_per_user` sessions per user and
//! `max_sessions_per_address` connections per source address
//! (tests/imap/limits.py); a SIGHUP adds and removes users and changes
//! grants while other sessions go on (tests/imap/reload.py).

mod imap_support;

use imap_support::{start_with, Gateway, Setup};

fn run(gw: &Gateway, script: &str, extra: &[&str]) {
    let (ok, out, err) = gw.python(script, extra);
    assert!(
        ok,
        "{script} failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn per_user_and_per_address_limits() {
    let gw = start_with(Setup {
        inbox: 1,
        imap_config: "max_sessions_per_user = 2\nmax_sessions_per_address = 4\n".into(),
        ..Setup::default()
    });
    run(&gw, "limits.py", &[]);
}

/// The user blocks of a configuration written by `imap_support`, edited:
/// `ro` removed, `anna` left with `read` only, `nuovo` (read on prot) added.
fn edited_config(text: &str) -> String {
    let mut blocks = text.split("[[user]]\n");
    let mut out = blocks.next().expect("head").to_string();
    for b in blocks {
        if b.starts_with("name = \"ro\"") {
            continue;
        }
        out += "[[user]]\n";
        if b.starts_with("name = \"anna\"") {
            let edited = b.replace("prot = [\"read\", \"triage\"]", "prot = [\"read\"]");
            assert_ne!(edited, b, "anna's grant not found in {b}");
            out += &edited;
        } else {
            out += b;
        }
    }
    let hash = pecgate::auth::hash_password(imap_support::PASSWORD).expect("hash");
    out += &format!(
        "\n[[user]]\nname = \"nuovo\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\ngrants = {{ prot = [\"read\"] }}\n"
    );
    out
}

#[test]
fn sighup_reloads_users_and_grants() {
    let mut gw = start_with(Setup {
        inbox: 2,
        ..Setup::default()
    });
    let text = std::fs::read_to_string(&gw.config).expect("config");
    let new_config = gw.dir.path().join("pecgate.toml.new");
    std::fs::write(&new_config, edited_config(&text)).expect("write new config");
    let pid = gw.child.id().to_string();
    let cfg = gw.config.display().to_string();
    let new = new_config.display().to_string();
    run(&gw, "reload.py", &[&pid, &cfg, &new]);
    // The daemon is still the same process, serving.
    assert!(
        matches!(gw.child.try_wait(), Ok(None)),
        "pecgate exited: {}",
        gw.log()
    );
    gw.stop();
}

#[test]
fn commands_and_throttled_logins_are_counted_in_metrics() {
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = start_with(Setup {
        inbox: 1,
        extra_config: format!("\n[http]\nlisten = \"127.0.0.1:{http}\"\n"),
        ..Setup::default()
    });
    run(&gw, "metrics.py", &[&http.to_string()]);
}
