//! Test support shared by the integration tests: `mod support;` then `use support::*;`.
//!
//! * [`Dovecot`]: a throwaway Dovecot 2.3 (the "PEC provider") on free loopback
//!   ports, with passwd-file users, Maildir storage, per-user quota
//!   (GETQUOTAROOT works), optional TLS listener and capability override.
//! * [`Imap`]: a real IMAP client (Python's imaplib, `imap_tool.py`) to put
//!   messages into / look at Dovecot from the tests' side.
//! * [`make_message`], [`sha256_hex`], [`pecgate_bin`], [`free_port`].
//!
//! Everything panics with a useful message on failure: a broken environment
//! makes tests fail, never skip.
#![allow(dead_code)]

pub mod cluster;
pub mod gateway;
pub mod selfsigned;
pub mod sim;
pub mod slapd;
pub mod tsa;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// small helpers

/// The `pecgate` binary built by cargo for this test run.
pub fn pecgate_bin() -> PathBuf {
    // PECGATE_BIN: another build, for a bench's before/after.
    std::env::var_os("PECGATE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pecgate")))
}

static HANDED_OUT_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that is free right now and was not handed out
/// before by this test process (so parallel tests in one binary never get
/// the same one). Another process can still take it before you bind it.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let seen = guard.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port();
        if seen.insert(port) {
            return port;
        }
    }
    panic!("free_port: no fresh port after 1000 tries");
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A deterministic, valid RFC 5322 message number `i`: unique Message-ID
/// `<test-{i}@pecgate.test>`, CRLF line endings, body lines of at most 76
/// characters (no line starts with '.' or "From "). The whole message is
/// exactly `size` bytes when `size` is at least its header length (~330
/// bytes) + 2; smaller sizes give the smallest message (header + "\r\n").
pub fn make_message(i: usize, size: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-";
    const LINE: usize = 76;
    // 2024-01-01T00:00:00Z + i minutes
    let date = chrono::DateTime::from_timestamp(1_704_067_200 + 60 * i as i64, 0).expect("date in range").to_rfc2822();
    let mut m = Vec::with_capacity(size.max(512));
    write!(
        m,
        "From: Mittente {i} <mittente{}@pec.example.it>\r\n\
         To: protocollo@pec.comune.example.it\r\n\
         Subject: Test message {i}\r\n\
         Date: {date}\r\n\
         Message-ID: <test-{i}@pecgate.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         X-Pecgate-Test-Index: {i}\r\n\
         \r\n",
        i % 7
    )
    .expect("write to Vec");
    // body: `remaining` bytes made of lines "<= 76 chars>\r\n"
    let mut remaining = size.saturating_sub(m.len()).max(2);
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    while remaining > 0 {
        // a line takes len + 2 bytes; never leave a remainder of 1 byte
        let mut len = (remaining - 2).min(LINE);
        if remaining - (len + 2) == 1 {
            len -= 1;
        }
        let start = m.len();
        let mut r = 0u64;
        for k in 0..len {
            if k % 10 == 0 {
                r = next();
            }
            m.push(ALPHABET[(r & 63) as usize]);
            r >>= 6;
        }
        // word breaks make it look like text; never at the line's start or end
        for k in (start + 9..start + len.saturating_sub(1)).step_by(9) {
            m[k] = b' ';
        }
        m.extend_from_slice(b"\r\n");
        remaining -= len + 2;
    }
    m
}

fn find_bin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Where throwaway directories go. Dovecot's unprivileged users must be able
/// to traverse it, hence /tmp rather than e.g. a TMPDIR under /root.
/// Override with PECGATE_TEST_TMPDIR.
fn tmp_root() -> PathBuf {
    if let Some(d) = std::env::var_os("PECGATE_TEST_TMPDIR") {
        return d.into();
    }
    if Path::new("/tmp").is_dir() {
        return "/tmp".into();
    }
    std::env::temp_dir()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Dovecot

/// The capability list Dovecot 2.3.19 (as configured here) advertises after
/// login. Use [`capabilities_without`] to hide some of them.
pub const DOVECOT_DEFAULT_CAPABILITY: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT \
SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE \
UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT \
SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW \
STATUS=SIZE SAVEDATE LITERAL+ NOTIFY QUOTA";

/// [`DOVECOT_DEFAULT_CAPABILITY`] without the named capabilities
/// (case-insensitive), for [`DovecotOptions::capabilities`].
/// `capabilities_without(&["IDLE", "UIDPLUS"])`
pub fn capabilities_without(hide: &[&str]) -> String {
    DOVECOT_DEFAULT_CAPABILITY
        .split_whitespace()
        .filter(|c| !hide.iter().any(|h| h.eq_ignore_ascii_case(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A mailbox account on the test Dovecot.
#[derive(Clone, Debug)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
    /// Storage limit in bytes (GETQUOTAROOT reports it in KiB, rounded up).
    pub quota_bytes: Option<u64>,
    /// Limit on the number of messages.
    pub quota_messages: Option<u64>,
}

impl UserSpec {
    /// `UserSpec::new("pec1", "secret").quota(10 << 20, 1000)`
    pub fn new(name: &str, password: &str) -> Self {
        assert!(
            !name.contains([':', '\n', '/']) && !password.contains([':', '\n']),
            "user names and passwords must not contain ':' or newlines"
        );
        UserSpec { name: name.into(), password: password.into(), quota_bytes: None, quota_messages: None }
    }
    pub fn quota(mut self, bytes: u64, messages: u64) -> Self {
        self.quota_bytes = Some(bytes);
        self.quota_messages = Some(messages);
        self
    }
}

/// How to start a [`Dovecot`].
#[derive(Clone, Debug, Default)]
pub struct DovecotOptions {
    pub users: Vec<UserSpec>,
    /// Replaces Dovecot's advertised CAPABILITY (before and after login),
    /// verbatim (`imap_capability`). Dovecot still *accepts* the hidden
    /// commands (IDLE, UID EXPUNGE, MOVE…) and still sends APPENDUID codes.
    pub capabilities: Option<String>,
    /// Also start an implicit-TLS listener with a self-signed certificate
    /// for CN=127.0.0.1 (and subjectAltName IP:127.0.0.1).
    pub tls: bool,
    /// Raw dovecot.conf lines appended at the end (later settings win).
    pub extra_config: String,
}

impl DovecotOptions {
    /// `DovecotOptions::new().user(UserSpec::new("a", "pw")).tls(true)`
    pub fn new() -> Self {
        Self::default()
    }
    pub fn user(mut self, user: UserSpec) -> Self {
        self.users.push(user);
        self
    }
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    pub fn capabilities(mut self, caps: impl Into<String>) -> Self {
        self.capabilities = Some(caps.into());
        self
    }
    pub fn extra_config(mut self, conf: &str) -> Self {
        self.extra_config.push_str(conf);
        self.extra_config.push('\n');
        self
    }
}

/// Who Dovecot's processes run as.
struct Identity {
    login_user: String,
    internal_user: String,
    internal_group: String,
    mail_uid: u32,
    mail_gid: u32,
    root: bool,
}

impl Identity {
    fn detect() -> Identity {
        if is_root() {
            // Dovecot refuses to run login and mail processes as root.
            let id = |args: &[&str]| {
                output_ok(Command::new("id").args(args))
                    .parse::<u32>()
                    .unwrap_or_else(|e| panic!("id {args:?}: {e} (is dovecot-core installed?)"))
            };
            Identity {
                login_user: "dovenull".into(),
                internal_user: "dovecot".into(),
                internal_group: "dovecot".into(),
                mail_uid: id(&["-u", "dovecot"]),
                mail_gid: id(&["-g", "dovecot"]),
                root: true,
            }
        } else {
            let me = output_ok(Command::new("id").arg("-un"));
            let group = output_ok(Command::new("id").arg("-gn"));
            let meta = fs::metadata("/proc/self").expect("stat /proc/self");
            Identity {
                login_user: me.clone(),
                internal_user: me,
                internal_group: group,
                mail_uid: meta.uid(),
                mail_gid: meta.gid(),
                root: false,
            }
        }
    }
}

/// A throwaway Dovecot. Killed (with all its processes) on drop.
///
/// `let dc = Dovecot::start(DovecotOptions::new().user(UserSpec::new("pec1", "pw").quota(1 << 20, 100)));`
pub struct Dovecot {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Plain IMAP (plaintext login allowed) on 127.0.0.1.
    pub port: u16,
    /// Implicit TLS IMAP on 127.0.0.1, when `tls` was asked for.
    pub tls_port: Option<u16>,
    /// PEM certificate of the TLS listener (trust it as a CA).
    pub cert_path: Option<PathBuf>,
    pub users: Vec<UserSpec>,
    opts: DovecotOptions,
    child: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot and waits until it greets on its port(s). Panics with
    /// Dovecot's log if it cannot start.
    pub fn start(opts: DovecotOptions) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("pecgate-dovecot-")
            .tempdir_in(tmp_root())
            .expect("create temp dir for dovecot");
        let root = dir.path().to_path_buf();
        let ident = Identity::detect();
        chmod(&root, 0o755);
        for sub in ["run", "state", "home"] {
            fs::create_dir(root.join(sub)).expect("mkdir");
            chmod(&root.join(sub), 0o755);
        }
        if ident.root {
            std::os::unix::fs::chown(root.join("home"), Some(ident.mail_uid), Some(ident.mail_gid))
                .expect("chown home to the mail user");
        }
        // users
        let mut passwd = String::new();
        for u in &opts.users {
            let mut rule = String::new();
            if let Some(b) = u.quota_bytes {
                write!(rule, ":bytes={b}").unwrap();
            }
            if let Some(m) = u.quota_messages {
                write!(rule, ":messages={m}").unwrap();
            }
            let extra = if rule.is_empty() { String::new() } else { format!("userdb_quota_rule=*{rule}") };
            writeln!(
                passwd,
                "{}:{{PLAIN}}{}:{}:{}::{}::{}",
                u.name,
                u.password,
                ident.mail_uid,
                ident.mail_gid,
                root.join("home").join(&u.name).display(),
                extra
            )
            .unwrap();
        }
        fs::write(root.join("passwd"), passwd).expect("write passwd");
        chmod(&root.join("passwd"), 0o644);
        // certificate
        let cert_path = if opts.tls {
            let cert = root.join("cert.pem");
            let key = root.join("key.pem");
            output_ok(
                Command::new("openssl")
                    .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                    .args(["-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1"])
                    .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert)
                    .stderr(Stdio::piped()),
            );
            chmod(&cert, 0o644);
            Some(cert)
        } else {
            None
        };
        let mut dc = Dovecot {
            dir: Some(dir),
            root,
            port: 0,
            tls_port: None,
            cert_path,
            users: opts.users.clone(),
            opts,
            child: None,
        };
        // A port picked by free_port() can be taken by someone else before
        // Dovecot binds it: retry with fresh ports in that case.
        for attempt in 0.. {
            dc.port = free_port();
            dc.tls_port = dc.opts.tls.then(free_port);
            fs::write(dc.conf_path(), dc.config(&ident)).expect("write dovecot.conf");
            match dc.spawn_and_wait() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("Dovecot did not start:\n{log}"),
            }
        }
        dc
    }

    fn config(&self, ident: &Identity) -> String {
        let r = self.root.display();
        let mut c = format!(
            r#"# generated by tests/support/mod.rs
protocols = imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
auth_verbose = yes
default_login_user = {login}
default_internal_user = {internal}
default_internal_group = {group}
first_valid_uid = {uid}
last_valid_uid = 0
first_valid_gid = 1
last_valid_gid = 0
mail_location = maildir:~/Maildir
# store the bytes exactly as APPENDed (CRLF kept); no fsync: a killed
# process loses nothing written, and tests do not simulate power cuts
mail_save_crlf = yes
mail_fsync = never
mailbox_list_index = yes
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r}/passwd
}}
userdb {{
  driver = passwd-file
  args = {r}/passwd
}}
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
  mail_max_userip_connections = 200
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
"#,
            login = ident.login_user,
            internal = ident.internal_user,
            group = ident.internal_group,
            uid = ident.mail_uid,
            port = self.port,
        );
        if let Some(tls_port) = self.tls_port {
            write!(
                c,
                "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n\
                 ssl = yes\nssl_cert = <{r}/cert.pem\nssl_key = <{r}/key.pem\n"
            )
            .unwrap();
        } else {
            c.push_str("  inet_listener imaps {\n    port = 0\n  }\n}\nssl = no\n");
        }
        if let Some(caps) = &self.opts.capabilities {
            writeln!(c, "imap_capability = {caps}").unwrap();
        }
        c.push_str(&self.opts.extra_config);
        c
    }

    fn conf_path(&self) -> PathBuf {
        self.root.join("dovecot.conf")
    }

    /// The temp directory holding config, log, homes (kept after the test
    /// when PECGATE_KEEP_TEST_DIRS is set).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        let mut s = fs::read_to_string(self.root.join("dovecot.log")).unwrap_or_default();
        if let Ok(out) = fs::read_to_string(self.root.join("dovecot.out")) {
            if !out.trim().is_empty() {
                s.push_str("--- dovecot stdout/stderr ---\n");
                s.push_str(&out);
            }
        }
        s
    }

    /// The Maildir of `user` (INBOX's cur/new/tmp; other folders are `.Name`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.root.join("home").join(user).join("Maildir")
    }

    pub fn user(&self, name: &str) -> &UserSpec {
        self.users.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no Dovecot user {name:?}"))
    }

    /// IMAP client for `user` over the plain listener.
    /// `dc.imap("pec1").count("INBOX")`
    pub fn imap(&self, user: &str) -> Imap {
        let u = self.user(user);
        Imap {
            host: "127.0.0.1".into(),
            port: self.port,
            user: u.name.clone(),
            password: u.password.clone(),
            tls_ca: None,
        }
    }

    /// IMAP client for `user` over the TLS listener, trusting only the
    /// generated certificate. Panics if TLS was not enabled.
    pub fn imaps(&self, user: &str) -> Imap {
        let u = self.user(user);
        Imap {
            host: "127.0.0.1".into(),
            port: self.tls_port.expect("Dovecot started without tls"),
            user: u.name.clone(),
            password: u.password.clone(),
            tls_ca: Some(self.cert_path.clone().expect("cert")),
        }
    }

    /// Pid of the master process (= its process group), while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let out = fs::File::create(self.root.join("dovecot.out")).expect("create dovecot.out");
        let child = Command::new(find_bin("dovecot"))
            .arg("-F")
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run dovecot ({e}); install dovecot-imapd (scripts/test does)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("dovecot exited with {status}\n{}", self.log()));
            }
            let plain_ok = greets(self.port);
            let tls_ok = self.tls_port.is_none_or(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
            if plain_ok && tls_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("dovecot did not greet on port {} within 20 s\n{}", self.port, self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_group(&self, pgid: u32, sig: i32) -> bool {
        // SAFETY: plain syscall; pgid is the process group of a child we spawned.
        unsafe { libc::kill(-(pgid as i32), sig) == 0 }
    }

    fn end(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else { return };
        let pgid = child.id();
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pgid as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            // After SIGTERM the master lingers ~2 s with only its log process
            // left; once every other process has exited, finish it off.
            if group_members(pgid).iter().all(|(pid, comm)| *pid == pgid || comm == "log") {
                self.signal_group(pgid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            self.signal_group(pgid, libc::SIGKILL);
        }
        let _ = child.wait();
        // the master is gone; give its children a moment, then kill leftovers
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal_group(pgid, libc::SIGKILL);
    }

    /// Graceful shutdown (SIGTERM), waits until all its processes are gone.
    pub fn stop(&mut self) {
        self.end(libc::SIGTERM);
    }

    /// Its directory, handed over: no longer removed when this server is
    /// dropped (a bench removes it once it has measured everything).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self.dir.take()
    }

    /// Crash: SIGKILL to every Dovecot process at once.
    pub fn kill(&mut self) {
        if let Some(child) = &self.child {
            self.signal_group(child.id(), libc::SIGKILL);
        }
        self.end(libc::SIGKILL);
    }

    /// Starts again after [`stop`](Self::stop)/[`kill`](Self::kill): same
    /// ports, same config, same mail. Panics if it cannot.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: Dovecot is still running");
        // the old listening sockets may take a moment to disappear
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline && log.contains("Address already in use") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(log) => panic!("Dovecot did not start again:\n{log}"),
            }
        }
    }

    fn doveadm(&self, args: &[&str]) -> String {
        output_ok(Command::new(find_bin("doveadm")).arg("-c").arg(self.conf_path()).args(args))
    }

    /// Sets `folder`'s UIDVALIDITY with `doveadm mailbox update
    /// --uid-validity` (Dovecot must be running). Messages keep their UIDs;
    /// a client must treat them as new.
    pub fn set_uidvalidity(&self, user: &str, folder: &str, value: u32) {
        self.doveadm(&["mailbox", "update", "-u", user, "--uid-validity", &value.to_string(), folder]);
    }

    /// Changes `folder`'s UIDVALIDITY (works for INBOX too) to a new, larger
    /// value and returns it.
    pub fn bump_uidvalidity(&self, user: &str, folder: &str) -> u32 {
        let out = self.doveadm(&["-f", "flow", "mailbox", "status", "-u", user, "uidvalidity", folder]);
        let old: u32 = out
            .rsplit("uidvalidity=")
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("doveadm mailbox status: unexpected output {out:?}"));
        let new = old.checked_add(1).expect("uidvalidity overflow");
        self.set_uidvalidity(user, folder, new);
        new
    }
}

/// Live (non-zombie) members of process group `pgid`: (pid, comm). Zombies
/// are ignored: orphans are reaped by pid 1, which may take its time.
fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may contain spaces and ')'
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let mut f = stat[close + 1..].split_whitespace();
            let state = f.next()?;
            let pgrp: u32 = f.nth(1)?.parse().ok()?;
            (pgrp == pgid && state != "Z" && state != "X").then(|| (pid, stat[open + 1..close].to_string()))
        })
        .collect()
}

/// Whether any process of group `pgid` is still alive (zombies aside).
pub fn group_alive(pgid: u32) -> bool {
    !group_members(pgid).is_empty()
}

fn greets(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("* OK")
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGKILL: a graceful stop costs Dovecot's master ~2.5 s, and the
        // data is thrown away anyway
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of Dovecot log ({}) ---\n{}",
                self.root.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if std::env::var_os("PECGATE_KEEP_TEST_DIRS").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping {}", d.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// IMAP client (Python imaplib, tests/support/imap_tool.py)

/// One message to APPEND.
#[derive(Clone, Debug, Default)]
pub struct Msg {
    pub bytes: Vec<u8>,
    /// INTERNALDATE, Unix seconds.
    pub internal_date: Option<i64>,
    /// e.g. `\Seen`, `$Keyword`
    pub flags: Vec<String>,
}

impl Msg {
    /// `Msg::new(make_message(1, 2000)).dated(now - 40 * 86400).flags(&["\\Seen"])`
    pub fn new(bytes: Vec<u8>) -> Self {
        Msg { bytes, ..Default::default() }
    }
    pub fn dated(mut self, unix_secs: i64) -> Self {
        self.internal_date = Some(unix_secs);
        self
    }
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|s| s.to_string()).collect();
        self
    }
}

impl From<Vec<u8>> for Msg {
    fn from(bytes: Vec<u8>) -> Self {
        Msg::new(bytes)
    }
}

impl From<&[u8]> for Msg {
    fn from(bytes: &[u8]) -> Self {
        Msg::new(bytes.to_vec())
    }
}

/// One quota resource: (used, limit). STORAGE is in KiB (IMAP units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaResource {
    pub used: u64,
    pub limit: u64,
}

/// GETQUOTAROOT answer.
#[derive(Clone, Debug, Default)]
pub struct Quota {
    pub roots: Vec<String>,
    /// KiB used / limit (limit = configured bytes / 1024 rounded up).
    pub storage: Option<QuotaResource>,
    pub messages: Option<QuotaResource>,
}

/// STATUS answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub messages: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub unseen: u32,
}

/// An IMAP login to drive a server from tests. Every call is one Python
/// process and one connection (LOGIN, the operation, LOGOUT); calls panic
/// on any failure (the `try_` variants return it).
#[derive(Clone, Debug)]
pub struct Imap {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// `Some(cert)`: implicit TLS trusting this PEM; `None`: plain.
    pub tls_ca: Option<PathBuf>,
}

fn tool_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/imap_tool.py")
}

/// PECGATE_PYTHON, else Debian's /usr/bin/python3 (starts fast: a pyenv
/// shim costs ~0.3 s per call), else python3 from PATH.
pub fn python() -> String {
    if let Ok(p) = std::env::var("PECGATE_PYTHON") {
        return p;
    }
    if Path::new("/usr/bin/python3").is_file() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

/// Files written for an append but not yet appended (and deleted) by
/// imap_tool.py: at most this many / this many bytes. Must stay above
/// imap_tool.py's MULTI_MAX_MESSAGES / MULTI_MAX_BYTES (it waits for a full
/// batch), or appending deadlocks.
const APPEND_WINDOW: usize = 64;
const APPEND_WINDOW_BYTES: usize = 64 << 20;

impl Imap {
    fn request(&self, op: &str, mut args: Value) -> String {
        let obj = args.as_object_mut().expect("args object");
        obj.insert("op".into(), op.into());
        obj.insert("host".into(), self.host.clone().into());
        obj.insert("port".into(), self.port.into());
        obj.insert("user".into(), self.user.clone().into());
        obj.insert("password".into(), self.password.clone().into());
        obj.insert("tls".into(), self.tls_ca.is_some().into());
        obj.insert("cafile".into(), json!(self.tls_ca.as_ref().map(|p| p.display().to_string())));
        args.to_string()
    }

    fn command(&self, op: &str, args: Value) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg(tool_path()).arg(self.request(op, args));
        cmd
    }

    fn parse(op: &str, out: std::process::Output) -> Result<Value, String> {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reply: Value = match stdout.lines().last().map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => v,
            _ => {
                return Err(format!(
                    "imap_tool {op}: no JSON answer ({}): {stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        if reply["ok"] == true {
            Ok(reply["result"].clone())
        } else {
            Err(format!("imap_tool {op}: {}", reply["error"].as_str().unwrap_or("?")))
        }
    }

    /// Runs one operation; Err(message) on any failure.
    pub fn try_op(&self, op: &str, args: Value) -> Result<Value, String> {
        let out = self
            .command(op, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} (python3 missing?): {e}", python()))?;
        Self::parse(op, out)
    }

    fn op(&self, op: &str, args: Value) -> Value {
        self.try_op(op, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// APPENDs messages in order over one connection; returns their UIDs.
    /// Messages are produced lazily (an iterator of 1,000 × 5 MB keeps only a
    /// few in memory or on disk at a time).
    /// `imap.append("INBOX", (0..20).map(|i| make_message(i, 1000)))`
    pub fn append<M: Into<Msg>>(&self, folder: &str, msgs: impl IntoIterator<Item = M>) -> Vec<u32> {
        self.try_append(folder, msgs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`append`](Self::append); Err names the first message refused
    /// (e.g. "... APPEND failed: NO [b'[OVERQUOTA] Quota exceeded ...']").
    /// Messages before it are in the folder.
    pub fn try_append<M: Into<Msg>>(
        &self,
        folder: &str,
        msgs: impl IntoIterator<Item = M>,
    ) -> Result<Vec<u32>, String> {
        let tmp = tempfile::Builder::new().prefix("pecgate-append-").tempdir().map_err(|e| e.to_string())?;
        let mut child = self
            .command("append", json!({ "folder": folder }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} (python3 missing?): {e}", python()))?;
        let mut stdin = child.stdin.take().expect("stdin");
        let mut sent = 0;
        // flow control: python deletes each file once appended
        let mut pending: std::collections::VecDeque<(PathBuf, usize)> = Default::default();
        let mut pending_bytes = 0;
        'feed: for (i, m) in msgs.into_iter().enumerate() {
            let m: Msg = m.into();
            loop {
                while pending.front().is_some_and(|(p, _)| !p.exists()) {
                    pending_bytes -= pending.pop_front().expect("front").1;
                }
                if pending.is_empty() || (pending.len() < APPEND_WINDOW && pending_bytes < APPEND_WINDOW_BYTES) {
                    break;
                }
                if !matches!(child.try_wait(), Ok(None)) {
                    break 'feed;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let path = tmp.path().join(format!("{i}.eml"));
            fs::write(&path, &m.bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
            let line = json!({ "path": path, "date": m.internal_date, "flags": m.flags }).to_string() + "\n";
            pending_bytes += m.bytes.len();
            pending.push_back((path, m.bytes.len()));
            sent += 1;
            if stdin.write_all(line.as_bytes()).is_err() {
                break; // python died: its answer says why
            }
        }
        drop(stdin);
        let mut out =
            std::process::Output { status: child.wait().map_err(|e| e.to_string())?, stdout: vec![], stderr: vec![] };
        // the answer is small and written at the end, so reading after wait is safe
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_end(&mut out.stdout);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_end(&mut out.stderr);
        }
        let result = Self::parse("append", out)?;
        let uids: Vec<u32> = result
            .as_array()
            .ok_or("append: bad answer")?
            .iter()
            .map(|v| v.as_u64().map(|u| u as u32).ok_or("server sent no APPENDUID".to_string()))
            .collect::<Result<_, _>>()?;
        if uids.len() != sent {
            return Err(format!("append: {} of {sent} messages appended", uids.len()));
        }
        Ok(uids)
    }

    /// UIDs in `folder`, ascending.
    pub fn uids(&self, folder: &str) -> Vec<u32> {
        serde_json::from_value(self.op("uids", json!({ "folder": folder }))).expect("uids")
    }

    /// Number of messages in `folder` (EXISTS on SELECT).
    pub fn count(&self, folder: &str) -> usize {
        self.op("count", json!({ "folder": folder })).as_u64().expect("count") as usize
    }

    /// STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN) of `folder`.
    pub fn status(&self, folder: &str) -> Status {
        let v = self.op("status", json!({ "folder": folder }));
        let get = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("STATUS without {k}: {v}")) as u32;
        Status {
            messages: get("messages"),
            uidnext: get("uidnext"),
            uidvalidity: get("uidvalidity"),
            unseen: get("unseen"),
        }
    }

    pub fn uidvalidity(&self, folder: &str) -> u32 {
        self.status(folder).uidvalidity
    }

    /// (UID, SHA-256 hex of the exact bytes of BODY[]) for every message of
    /// `folder`, ascending UID. Does not set \Seen.
    pub fn sha256s(&self, folder: &str) -> Vec<(u32, String)> {
        self.op("sha256", json!({ "folder": folder }))
            .as_array()
            .expect("sha256 list")
            .iter()
            .map(|e| (e["uid"].as_u64().expect("uid") as u32, e["sha256"].as_str().expect("sha").to_string()))
            .collect()
    }

    /// The raw bytes of message `uid` (BODY.PEEK[]).
    pub fn fetch(&self, folder: &str, uid: u32) -> Vec<u8> {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        self.op("fetch", json!({ "folder": folder, "uid": uid, "out": tmp.path() }));
        fs::read(tmp.path()).expect("read fetched message")
    }

    /// (UID, flags) for every message of `folder`.
    pub fn flags(&self, folder: &str) -> Vec<(u32, Vec<String>)> {
        self.op("flags", json!({ "folder": folder }))
            .as_array()
            .expect("flags list")
            .iter()
            .map(|e| {
                (e["uid"].as_u64().expect("uid") as u32, serde_json::from_value(e["flags"].clone()).expect("flags"))
            })
            .collect()
    }

    /// UID SEARCH with `criteria` (each an IMAP atom or quoted string) in
    /// `folder`: the matching UIDs, ascending.
    pub fn search(&self, folder: &str, criteria: &[&str]) -> Vec<u32> {
        serde_json::from_value(self.op("search", json!({ "folder": folder, "criteria": criteria }))).expect("uids")
    }

    /// UID STORE +FLAGS (add) or -FLAGS on `uids`.
    pub fn store_flags(&self, folder: &str, uids: &[u32], flags: &[&str], add: bool) {
        self.op("store_flags", json!({ "folder": folder, "uids": uids, "flags": flags, "add": add }));
    }

    /// Marks `uids` \Deleted and EXPUNGEs (as another client of the provider would).
    pub fn expunge(&self, folder: &str, uids: &[u32]) {
        self.op("expunge", json!({ "folder": folder, "uids": uids }));
    }

    pub fn quota(&self, folder: &str) -> Quota {
        let v = self.op("quota", json!({ "folder": folder }));
        let res = |name: &str| {
            v["resources"][name]
                .as_array()
                .map(|a| QuotaResource { used: a[0].as_u64().expect("used"), limit: a[1].as_u64().expect("limit") })
        };
        Quota {
            roots: serde_json::from_value(v["roots"].clone()).expect("roots"),
            storage: res("STORAGE"),
            messages: res("MESSAGE"),
        }
    }

    pub fn create(&self, folder: &str) {
        self.op("create", json!({ "folder": folder }));
    }

    /// DELETE `folder` (not INBOX). Re-creating it gives a new UIDVALIDITY.
    pub fn delete(&self, folder: &str) {
        self.op("delete", json!({ "folder": folder }));
    }

    /// All folder names (LIST "" "*"), sorted. Dovecot's hierarchy separator
    /// here is '.'.
    pub fn list(&self) -> Vec<String> {
        serde_json::from_value(self.op("list", json!({}))).expect("list")
    }

    /// CAPABILITY after login.
    pub fn capabilities(&self) -> Vec<String> {
        serde_json::from_value(self.op("capability", json!({}))).expect("capabilities")
    }

    /// Just LOGIN + LOGOUT.
    pub fn try_login(&self) -> Result<(), String> {
        self.try_op("login", json!({})).map(|_| ())
    }
}

/// A certified envelope for `to`, as the sender's provider would deliver
/// it (signed with `pki`); `n` makes its Message-ID and identifier unique.
pub fn certified_envelope(pki: &pecgate::sim::pki::Pki, sender: &str, to: &str, subject: &str, n: u32) -> Vec<u8> {
    use pecgate::sim::build::{build, Notice, Provider, Submission};
    let msgid = format!("<orig-{n}@mittente.example.it>");
    let original = format!(
        "Message-ID: {msgid}\r\nDate: Thu, 26 Nov 2026 09:00:0{n} +0100\r\nFrom: <{sender}>\r\nTo: <{to}>\r\n\
         Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTesto del messaggio {n}.\r\n"
    );
    let sub = Submission {
        sender: sender.into(),
        recipients: vec![(to.into(), true)],
        original: original.into_bytes(),
        subject: subject.into(),
        msgid,
        identificativo: format!("opec-test-{n}@pec.mittente.example.it"),
        at: chrono::Utc::now(),
    };
    let provider =
        Provider { address: "posta-certificata@pec.mittente.example.it".into(), name: "Gestore di test".into() };
    build(pki, &provider, &sub, &Notice::Envelope, chrono::Utc::now()).expect("build envelope")
}

/// Metric names in the dashboard's PromQL.
pub fn dashboard_metric_names(d: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(d, &mut exprs);
    let mut names = std::collections::BTreeSet::new();
    for e in exprs {
        let b = e.as_bytes();
        let mut i = 0;
        while let Some(p) = e[i..].find("pecgate_") {
            let start = i + p;
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            names.insert(e[start..end].to_string());
            i = end;
        }
    }
    names
}

/// GET over HTTP/1.1 (Connection: close) from a loopback port, with Basic
/// auth if given: the whole response, status line included.
pub fn http_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    let auth = auth
        .map(|(u, p)| {
            format!("Authorization: Basic {}\r\n", openssl::base64::encode_block(format!("{u}:{p}").as_bytes()))
        })
        .unwrap_or_default();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

/// The value of the Prometheus sample `name` (with every `labels` part in
/// its line) in a scrape.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
