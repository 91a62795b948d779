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

/// The client itself, in process, against a scripted provider: each broken
/// answer gives the error it should, at once (not after a timeout), and the
/// flows around it (literals, odd line ends, reads cut anywhere) work.
mod client {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::fetch::{MessageDataItem, MessageDataItemName};
    use imap_codec::imap_types::response::Data;
    use pecgate::config::TlsMode;
    use pecgate::upstream::client::{ClientError, ImapClient};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] ready\r\n";
    /// Longer than any case needs: hitting it means the client waited
    /// instead of failing.
    const STEP: Duration = Duration::from_secs(5);

    /// A provider on port 0 running `script` on its one connection.
    async fn provider<F, Fut>(script: F) -> u16
    where
        F: FnOnce(BufReader<TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            script(BufReader::new(s)).await;
        });
        port
    }

    async fn connect(port: u16) -> Result<ImapClient, ClientError> {
        let tls = pecgate::tls::client_config(None).unwrap();
        ImapClient::connect("127.0.0.1", port, TlsMode::None, tls, STEP).await
    }

    /// The tag of the next command line.
    async fn command(s: &mut BufReader<TcpStream>) -> (String, String) {
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        let tag = line.split(' ').next().unwrap().to_string();
        (tag, line)
    }

    /// Greet, read one command, answer it with `answer(tag)`, then hold
    /// the connection open (`hold`) or close it.
    async fn answering(answer: impl FnOnce(&str) -> Vec<u8> + Send + 'static, hold: bool) -> u16 {
        provider(move |mut s| async move {
            s.get_mut().write_all(GREETING).await.unwrap();
            let (tag, _) = command(&mut s).await;
            let _ = s.get_mut().write_all(&answer(&tag)).await;
            if hold {
                tokio::time::sleep(STEP * 3).await;
            }
        })
        .await
    }

    /// Run CAPABILITY against `port`, timing it.
    async fn capability(port: u16) -> (Result<(), ClientError>, Duration) {
        let mut c = connect(port).await.unwrap();
        let t = Instant::now();
        let r = c.capability().await;
        (r, t.elapsed())
    }

    #[tokio::test]
    async fn broken_greetings() {
        for (bytes, closed) in [
            (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], false),
            (&b"\x00\x01\x02\xff garbage\r\n"[..], false),
            (&b"* OK [CAPAB"[..], true),
            (&b"* BYE too many connections\r\n"[..], true),
        ] {
            let port = provider(move |mut s| async move {
                let _ = s.get_mut().write_all(bytes).await;
            })
            .await;
            match connect(port).await {
                Err(ClientError::Closed) if closed => {}
                Err(ClientError::Protocol(_)) if !closed => {}
                Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(bytes)),
                Ok(_) => panic!("{:?}: accepted", String::from_utf8_lossy(bytes)),
            }
        }
    }

    #[tokio::test]
    async fn oversized_answers_fail_at_once() {
        // 100 GB announced, the connection held open: refused on sight.
        let port = answering(|_| b"* CAPABILITY {107374182400}\r\n".to_vec(), true).await;
        let (r, took) = capability(port).await;
        assert!(matches!(&r, Err(ClientError::Protocol(m)) if m.contains("longer than")), "{r:?}");
        assert!(took < STEP, "{took:?}");
        // A line without end past the limit (150 MiB), held open.
        let port = answering(|_| vec![b'A'; 151 << 20], true).await;
        let (r, took) = capability(port).await;
        assert!(matches!(&r, Err(ClientError::Protocol(m)) if m.contains("longer than")), "{r:?}");
        assert!(took < STEP, "{took:?}");
    }

    #[tokio::test]
    async fn malformed_truncated_and_refused_answers() {
        type Check = fn(&Result<(), ClientError>) -> bool;
        let cases: Vec<(&'static str, bool, Check)> = vec![
            // Complete but not IMAP: malformed.
            (
                "* 1 FETCH (UID \"x\")\r\n",
                true,
                |r| matches!(r, Err(ClientError::Protocol(m)) if m.contains("malformed")),
            ),
            ("* CAPABILITY IMAP4rev1 {3}\r\nabc\r\n", true, |r| matches!(r, Err(ClientError::Protocol(_)))),
            // Cut inside a literal, then closed.
            ("* 1 FETCH (UID 1 BODY[] {5}\r\nab", false, |r| matches!(r, Err(ClientError::Closed))),
            // Cut inside a literal, then silence: the step timeout.
            ("* 1 FETCH (UID 1 BODY[] {5}\r\nab", true, |r| matches!(r, Err(ClientError::Timeout(_)))),
            // A tag never sent, then BYE.
            ("Z999 OK whatever\r\n* BYE closing\r\n", true, |r| matches!(r, Err(ClientError::Closed))),
            ("{tag} NO [UNAVAILABLE] later\r\n", true, |r| matches!(r, Err(ClientError::Refused { .. }))),
            ("{tag} BAD what\r\n", true, |r| matches!(r, Err(ClientError::Refused { .. }))),
        ];
        for (answer, hold, check) in cases {
            let port = answering(move |tag| answer.replace("{tag}", tag).into_bytes(), hold).await;
            let mut c = connect(port).await.unwrap();
            c.timeout = Duration::from_millis(500);
            let r = c.capability().await;
            assert!(check(&r), "{answer:?}: {r:?}");
        }
    }

    #[tokio::test]
    async fn bare_lf_and_one_byte_writes_and_a_large_literal() {
        // NUL bytes too: a message holding them is archived as it came.
        let body: Vec<u8> = (0..3_000_000u32).map(|i| b"ab\0\r\n{1}\n"[i as usize % 9]).collect();
        let sent = body.clone();
        let port = provider(move |mut s| async move {
            let w = s.get_mut();
            for b in b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\n" {
                w.write_all(&[*b]).await.unwrap();
            }
            let (tag, _) = command(&mut s).await;
            let mut r = format!("* 1 FETCH (UID 42 BODY[] {{{}}}\r\n", sent.len()).into_bytes();
            r.extend_from_slice(&sent);
            r.extend_from_slice(format!(")\n{tag} OK done\r\n").as_bytes());
            let w = s.get_mut();
            let (head, tail) = r.split_at(40);
            for b in head {
                w.write_all(&[*b]).await.unwrap();
            }
            w.write_all(tail).await.unwrap();
            tokio::time::sleep(STEP).await;
        })
        .await;
        let mut c = connect(port).await.unwrap();
        assert!(c.has("IDLE"));
        let items =
            vec![MessageDataItemName::Uid, MessageDataItemName::BodyExt { section: None, partial: None, peek: true }];
        let data = c.run("UID FETCH", CommandBody::fetch("42", items, true).unwrap()).await.unwrap();
        let [Data::Fetch { seq, items }] = &data[..] else { panic!("{} responses", data.len()) };
        let decoded = items.as_ref().iter().find_map(|i| match i {
            MessageDataItem::BodyExt { data, .. } => data.0.as_ref().map(|s| s.as_ref().to_vec()),
            _ => None,
        });
        // The message is taken out of its response before decoding: its
        // BODY[] decodes empty.
        assert_eq!(decoded.as_deref(), Some(&b""[..]));
        let got = c.take_body(seq.get());
        assert!(got.as_deref() == Some(&body[..]), "the literal arrives whole and unchanged");
    }

    /// A password that needs a literal: sent only after the provider's
    /// continuation request; a NO instead means the literal is never sent.
    #[tokio::test]
    async fn synchronizing_literal_login() {
        let port = provider(|mut s| async move {
            s.get_mut().write_all(GREETING).await.unwrap();
            let (tag, line) = command(&mut s).await;
            let n: usize = line.trim_end().rsplit('{').next().unwrap().trim_end_matches('}').parse().unwrap();
            // Nothing more comes before the continuation.
            let mut early = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(200), s.read(&mut early)).await.is_err(),
                "literal sent early"
            );
            s.get_mut().write_all(b"+ go on\r\n").await.unwrap();
            let mut lit = vec![0u8; n + 2];
            s.read_exact(&mut lit).await.unwrap();
            assert_eq!(&lit[..n], "pässwörd".as_bytes());
            assert_eq!(&lit[n..], b"\r\n");
            s.get_mut().write_all(format!("{tag} OK logged in\r\n").as_bytes()).await.unwrap();
            tokio::time::sleep(STEP).await;
        })
        .await;
        let mut c = connect(port).await.unwrap();
        c.login("user", "pässwörd").await.unwrap();

        let port = provider(|mut s| async move {
            s.get_mut().write_all(GREETING).await.unwrap();
            let (tag, _) = command(&mut s).await;
            s.get_mut().write_all(format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n").as_bytes()).await.unwrap();
            let mut more = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_millis(500), s.read(&mut more)).await;
            assert!(!matches!(r, Ok(Ok(n)) if n > 0), "literal sent after a NO");
        })
        .await;
        let mut c = connect(port).await.unwrap();
        let r = c.login("user", "pässwörd").await;
        assert!(matches!(r, Err(ClientError::LoginRefused(_))), "{r:?}");
    }
}
