//! A real OpenLDAP server (Debian's `slapd`) for tests: a throwaway
//! `slapd.conf` (mdb; the core, cosine and inetorgperson schemas; ACLs that
//! let only bound users search), entries loaded with `slapadd`, LDAPS and
//! plain LDAP (for StartTLS) on loopback ports, a CA and a server
//! certificate made with the `openssl` CLI. Entries are changed while it
//! runs as its root DN over plain LDAP on loopback (ldap3).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const SUFFIX: &str = "dc=comune,dc=test";
pub const ROOT_DN: &str = "cn=admin,dc=comune,dc=test";
const ROOT_PW: &str = "root-secret";
pub const SVC_DN: &str = "cn=svc-pecgate,ou=Servizi,dc=comune,dc=test";
pub const SVC_PW: &str = "svc-secret";
pub const PEOPLE: &str = "ou=Persone,dc=comune,dc=test";

/// The DN of person `uid`.
pub fn person(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

/// The DN of group `cn`.
pub fn group(cn: &str) -> String {
    format!("cn={cn},ou=Gruppi,{SUFFIX}")
}

/// A person: uid, password, and whether the account is disabled
/// (`employeeType: disabled`, which the tests' user filter leaves out, as
/// AD's filter leaves out `userAccountControl` bit 2).
pub struct Person<'a> {
    pub uid: &'a str,
    pub password: &'a str,
    pub disabled: bool,
}

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub ldaps_port: u16,
    pub ldap_port: u16,
    child: Option<Child>,
    conf: PathBuf,
}

fn slapd_bin() -> PathBuf {
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"] {
        let p = Path::new(d).join("slapd");
        if p.exists() {
            return p;
        }
    }
    panic!("slapd not found (Debian package slapd; scripts/test installs it)");
}

/// `openssl req` options for a new P-256 key, unencrypted.
const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed
/// (`server.pem`, `server.key`) in `dir`.
pub fn make_ca_and_server_cert(dir: &Path) {
    let mut a = vec!["req", "-x509"];
    a.extend(EC);
    a.extend(["-days", "2", "-subj", "/CN=pecgate test directory CA", "-keyout", "ca.key", "-out", "ca.pem"]);
    a.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &a);
    signed_certificate(
        dir,
        "127.0.0.1",
        "server",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    );
}

/// A client certificate for `cn` (`{name}.pem`, `{name}.key`) signed by
/// the CA in `dir` (as [`make_ca_and_server_cert`] makes it).
pub fn client_certificate(dir: &Path, cn: &str, name: &str) -> (PathBuf, PathBuf) {
    signed_certificate(
        dir,
        cn,
        name,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
}

/// An EC key and a certificate for `/CN={cn}` with extensions `ext`
/// (`{name}.pem`, `{name}.key`), signed by `dir`'s `ca.pem` and `ca.key`.
fn signed_certificate(dir: &Path, cn: &str, name: &str, ext: &str) -> (PathBuf, PathBuf) {
    let (key, csr, ext_file, pem) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"), format!("{name}.pem"));
    let subj = format!("/CN={cn}");
    let mut r = vec!["req"];
    r.extend(EC);
    r.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
    openssl(dir, &r);
    std::fs::write(dir.join(&ext_file), ext).expect("write ext");
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", &ext_file, "-out", &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
}

impl Slapd {
    /// Start slapd with the service account, `people` in `ou=Persone` and
    /// `groups` (cn, member uids) in `ou=Gruppi`.
    pub fn start(people: &[Person], groups: &[(&str, &[&str])]) -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        make_ca_and_server_cert(d);
        std::fs::create_dir(d.join("db")).expect("db dir");
        let conf = d.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 pidfile {dir}/slapd.pid\n\
                 allow bind_anon_dn\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 TLSCACertificateFile {dir}/ca.pem\n\
                 TLSCertificateFile {dir}/server.pem\n\
                 TLSCertificateKeyFile {dir}/server.key\n\
                 database mdb\n\
                 maxsize 104857600\n\
                 suffix \"{SUFFIX}\"\n\
                 rootdn \"{ROOT_DN}\"\n\
                 rootpw {ROOT_PW}\n\
                 directory {dir}/db\n\
                 index objectClass eq\n\
                 index uid eq\n\
                 index member eq\n\
                 access to attrs=userPassword by self write by anonymous auth by * none\n\
                 access to * by users read by * none\n",
                dir = d.display()
            ),
        )
        .expect("write slapd.conf");
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Comune di Test\ndc: comune\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: Persone\n\n\
             dn: ou=Gruppi,{SUFFIX}\nobjectClass: organizationalUnit\nou: Gruppi\n\n\
             dn: ou=Servizi,{SUFFIX}\nobjectClass: organizationalUnit\nou: Servizi\n\n\
             dn: {SVC_DN}\nobjectClass: person\ncn: svc-pecgate\nsn: servizio\nuserPassword: {SVC_PW}\n\n"
        );
        for p in people {
            ldif += &format!(
                "dn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {}\nsn: {}\nmail: {}@comune.test\nuserPassword: {}\n{}\n",
                person(p.uid),
                p.uid,
                p.uid,
                p.uid,
                p.uid,
                p.password,
                if p.disabled { "employeeType: disabled\n" } else { "" }
            );
        }
        for (cn, members) in groups {
            ldif += &format!("dn: {}\nobjectClass: groupOfNames\ncn: {cn}\n", group(cn));
            // groupOfNames needs a member: the service account stands in.
            if members.is_empty() {
                ldif += &format!("member: {SVC_DN}\n");
            }
            for m in *members {
                ldif += &format!("member: {}\n", person(m));
            }
            ldif += "\n";
        }
        std::fs::write(d.join("data.ldif"), ldif).expect("write ldif");
        let out = Command::new(slapd_bin().with_file_name("slapadd"))
            .args(["-f"])
            .arg(&conf)
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .expect("run slapadd");
        assert!(out.status.success(), "slapadd: {}", String::from_utf8_lossy(&out.stderr));
        let mut s = Slapd { ldaps_port: free_port(), ldap_port: free_port(), child: None, conf, dir };
        s.start_again();
        s
    }

    /// (Re)start slapd on the same ports and data.
    pub fn start_again(&mut self) {
        let urls = format!("ldaps://127.0.0.1:{}/ ldap://127.0.0.1:{}/", self.ldaps_port, self.ldap_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("slapd.log"))
            .expect("slapd log");
        let child = Command::new(slapd_bin())
            .arg("-f")
            .arg(&self.conf)
            .args(["-h", &urls, "-d", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.ldaps_port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("slapd exited ({st}): {}", self.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "slapd did not listen in 20 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop slapd (SIGTERM, then SIGKILL) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// A runtime and a connection to slapd over plain LDAP on loopback.
    fn connect(&self) -> (tokio::runtime::Runtime, ldap3::Ldap) {
        let url = self.ldap_url();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let ldap = rt.block_on(async {
            let (conn, ldap) = ldap3::LdapConnAsync::new(&url).await.expect("connect to slapd");
            tokio::spawn(async move {
                let _ = conn.drive().await;
            });
            ldap
        });
        (rt, ldap)
    }

    /// The result code of a simple bind as `dn` with `password` (0:
    /// success). With `allow bind_anon_dn`, a DN with an empty password
    /// is an unauthenticated bind, which succeeds.
    pub fn bind_rc(&self, dn: &str, password: &str) -> u32 {
        let (rt, mut ldap) = self.connect();
        rt.block_on(async {
            let rc = ldap.simple_bind(dn, password).await.expect("bind").rc;
            let _ = ldap.unbind().await;
            rc
        })
    }

    /// Change the directory as its administrator would: `op` on the
    /// attribute `attr` of `dn` (`"add"`, `"delete"` or `"replace"`).
    pub fn modify(&self, dn: &str, op: &str, attr: &str, values: &[&str]) {
        let (rt, mut ldap) = self.connect();
        rt.block_on(async {
            ldap.simple_bind(ROOT_DN, ROOT_PW).await.expect("bind").success().expect("root bind");
            let vals: std::collections::HashSet<&str> = values.iter().copied().collect();
            let m = match op {
                "add" => ldap3::Mod::Add(attr, vals),
                "delete" => ldap3::Mod::Delete(attr, vals),
                "replace" => ldap3::Mod::Replace(attr, vals),
                other => panic!("unknown modify op {other}"),
            };
            ldap.modify(dn, vec![m]).await.expect("modify").success().expect("modify succeeded");
            let _ = ldap.unbind().await;
        });
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
