//! A real RFC 3161 time-stamping authority on loopback: a throwaway CA,
//! a TSA certificate for time stamping (extended key usage
//! `timeStamping`, critical), `openssl ts -reply` behind `tsa_server.py`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, python};

pub struct Tsa {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Tsa {
    pub fn start() -> Tsa {
        let dir = tempfile::tempdir().expect("tsa dir");
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "[tsa_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, nonRepudiation\n\
             extendedKeyUsage = critical, timeStamping\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=Test Root CA for pecgate anchors",
            ],
        );
        openssl(
            d,
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=Test TSA"],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "tsa.pem",
                "-days",
                "3650",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "tsa_ext",
            ],
        );
        std::fs::write(d.join("tsaserial"), "01\n").unwrap();
        std::fs::write(
            d.join("tsa.cnf"),
            format!(
                "[tsa]\ndefault_tsa = tsa_config\n[tsa_config]\ndir = {}\nserial = $dir/tsaserial\ncrypto_device = builtin\n\
                 signer_cert = $dir/tsa.pem\ncerts = $dir/ca.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n\
                 default_policy = 1.3.6.1.4.1.99999.1\nother_policies = 1.3.6.1.4.1.99999.2\n\
                 digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\ntsa_name = yes\n\
                 ess_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                d.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tsa_server.py");
        let child = Command::new(python())
            .arg(&script)
            .arg(d)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the TSA responder");
        let t = Tsa { dir, port, child };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the TSA responder did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/tsa", self.port)
    }

    /// The CA the tokens chain to (for `[anchor] ca_file` and `openssl ts -verify -CAfile`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The TSA's own certificate (for `openssl ts -verify -untrusted`).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tsa.pem")
    }

    /// Make the TSA answer 503 (an outage) or serve again.
    pub fn set_failing(&self, fail: bool) {
        let f = self.dir.path().join("fail");
        if fail {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Tokens issued so far.
    pub fn served(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("served")).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// `[anchor]` for a gateway's configuration.
    pub fn anchor_toml(&self, every_records: u64, every: &str) -> String {
        format!(
            "[anchor]\nurl = \"{}\"\nca_file = \"{}\"\nevery_records = {every_records}\nevery = \"{every}\"\ntimeout = \"10s\"\n",
            self.url(),
            self.ca().display()
        )
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
