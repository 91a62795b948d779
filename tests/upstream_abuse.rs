//! A hostile or broken provider: garbage, truncated and oversized responses.
//! The upstream client answers each with an error (logged, in status, retried
//! with back-off) and never panics; nothing is archived from it.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::gateway::{Gateway, FAST_UPSTREAM};

/// A fake provider: each connection gets the next script (cycling); a
/// script is a list of (bytes to send, whether to read a client line first).
fn fake_provider(scripts: Vec<Vec<(Vec<u8>, bool)>>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let script = scripts[i % scripts.len()].clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                for (bytes, read_first) in script {
                    if read_first {
                        let mut buf = [0u8; 4096];
                        if s.read(&mut buf).unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    // Large payloads go out in pieces; the client may hang up.
                    for chunk in bytes.chunks(1 << 20) {
                        if s.write_all(chunk).is_err() {
                            return;
                        }
                    }
                }
                // Then hang up.
            });
        }
    });
    (port, conns)
}

#[test]
fn garbage_truncated_and_oversized_responses_are_errors_not_panics() {
    let greeting = b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] ready\r\n".to_vec();
    let scripts = vec![
        // Not IMAP at all.
        vec![(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), false)],
        // Binary garbage.
        vec![((0..=255u8).cycle().take(10_000).collect(), false)],
        // A greeting cut off mid-line, then the connection closes.
        vec![(b"* OK [CAPAB".to_vec(), false)],
        // A literal announcement of 100 GB in the answer to CAPABILITY.
        vec![(greeting.clone(), false), (b"* CAPABILITY {107374182400}\r\n".to_vec(), true)],
        // A 200 MB line without end (over the client's response limit).
        vec![(greeting.clone(), false), (vec![b'A'; 200 << 20], true)],
        // A tagged answer for a tag never sent, then silence.
        vec![(greeting.clone(), false), (b"Z999 OK whatever\r\n* BYE\r\n".to_vec(), true)],
        // Valid greeting, then a malformed FETCH-like line.
        vec![(greeting, false), (b"* 1 FETCH (UID \"x\" BODY[] {5}\r\nab".to_vec(), true)],
    ];
    let n = scripts.len();
    let (port, conns) = fake_provider(scripts);
    let mut g = Gateway::new(&format!(
        "{}[[mailbox]]\nalias = \"hostile\"\naddress = \"x@pec.example.it\"\nusername = \"x@pec.example.it\"\npassword = \"pw-hostile-9\"\n\
         imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n",
        FAST_UPSTREAM.replace("max_backoff = \"2s\"", "max_backoff = \"300ms\"").replace("min_backoff = \"200ms\"", "min_backoff = \"50ms\"")
    ));
    g.start();
    // Every script is played at least twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while conns.load(Ordering::SeqCst) < 2 * n {
        assert!(std::time::Instant::now() < deadline, "only {} connections\n{}", conns.load(Ordering::SeqCst), g.log());
        assert!(g.is_running(), "pecgate died:\n{}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = g.mailbox_status("hostile").unwrap();
    assert_eq!(st["archived_total"], 0);
    assert!(st["consecutive_failures"].as_u64().unwrap() >= 2 * n as u64 - 1, "{st}");
    let reasons = st["errors_by_reason"].as_object().unwrap();
    assert!(reasons.contains_key("protocol") || reasons.contains_key("closed"), "{st}");
    assert!(g.is_running());
    assert_eq!(g.stop(), Some(0));
    let log = g.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("pw-hostile-9"), "the password never reaches the log");
}
