//! Limits enforced on the client's bytes as they are read, before the IMAP
//! parser buffers them: the length of a line, and the size of the literals
//! a client announces.
//!
//! imap-next buffers a whole command (literals included) up to its
//! `max_command_size` before it answers anything, and reads a
//! non-synchronising literal it will refuse to its end. Two attacks follow:
//! a stranger announcing `{104857600+}` before logging in makes the server
//! read 100 MB, and a 1 MB line without CRLF gets no answer at all. This
//! scanner sees each chunk the socket gives, follows the line/literal
//! structure (a line ending in `{n}` or `{n+}` is followed by `n` bytes of
//! literal data), and says stop the moment a limit is passed, so the
//! session can answer `* BAD` and close without reading further.
//!
//! It does not parse IMAP: a line is what ends at LF, a literal is what a
//! line announces at its end. That is all the grammar the limits need.

/// Longest line (bytes up to LF, literal data excluded). Dovecot's
/// `imap_max_line_length` default: 64 KiB.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal before authentication (RFC 7888 LITERAL-: a
/// non-synchronising literal of at most 4,096 bytes). A LOGIN needs far less.
pub const MAX_PREAUTH_LITERAL: u64 = 4096;

/// Why the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("line too long (more than {MAX_LINE} bytes without CRLF)")]
    Line,
    #[error("literal of {size} bytes is larger than the {limit} allowed here")]
    Literal { size: u64, limit: u64 },
}

/// Follows the line/literal structure of what the client sends.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current line so far (outside literals).
    line: usize,
    /// Bytes of literal data still to come.
    literal: u64,
    /// A literal just ended: the command goes on (at least its CRLF).
    after_literal: bool,
    /// The last bytes of the current line (a literal announcement is at
    /// its end: `{` up to 20 digits, `+` or `-`, `}` and CR).
    tail: Vec<u8>,
}

const TAIL: usize = 32;

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Account for `bytes`. `authenticated` picks the literal limit: before
    /// login [`MAX_PREAUTH_LITERAL`] for every literal; after it,
    /// non-synchronising literals up to `max_literal` (a synchronising one
    /// past it is refused by the parser, and the client then sends nothing).
    pub fn feed(&mut self, mut bytes: &[u8], authenticated: bool, max_literal: u64) -> Result<(), Exceeded> {
        while !bytes.is_empty() {
            if self.literal > 0 {
                let n = (bytes.len() as u64).min(self.literal) as usize;
                self.literal -= n as u64;
                self.after_literal = self.literal == 0;
                bytes = &bytes[n..];
                continue;
            }
            match bytes.iter().position(|b| *b == b'\n') {
                None => {
                    self.line += bytes.len();
                    self.after_literal = false;
                    self.keep_tail(bytes);
                    if self.line > MAX_LINE {
                        return Err(Exceeded::Line);
                    }
                    return Ok(());
                }
                Some(i) => {
                    self.line += i;
                    if self.line > MAX_LINE {
                        return Err(Exceeded::Line);
                    }
                    self.keep_tail(&bytes[..i]);
                    if let Some((size, sync)) = announced(&self.tail) {
                        let limit = if authenticated { max_literal } else { MAX_PREAUTH_LITERAL };
                        if size > limit {
                            if authenticated && sync {
                                // The parser refuses it; the client waits
                                // for the refusal and sends no data.
                            } else {
                                return Err(Exceeded::Literal { size, limit });
                            }
                        } else {
                            self.literal = size;
                        }
                    }
                    self.line = 0;
                    self.after_literal = false;
                    self.tail.clear();
                    bytes = &bytes[i + 1..];
                }
            }
        }
        Ok(())
    }

    /// Is a command under way (part of a line or of a literal read, or a
    /// literal's closing CRLF still to come)?
    pub fn mid_command(&self) -> bool {
        self.literal > 0 || self.line > 0 || self.after_literal
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(TAIL);
        self.tail.extend_from_slice(&bytes[bytes.len() - take..]);
        if self.tail.len() > TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
    }
}

/// The literal a line announces at its end: `{n}`, `{n+}` or `{n-}`
/// (optionally `~{n}`, literal8), before the CR. `(size, synchronising)`.
fn announced(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let mut digits = &inner[open + 1..];
    let mut sync = true;
    if let Some(d) = digits.strip_suffix(b"+").or_else(|| digits.strip_suffix(b"-")) {
        digits = d;
        sync = false;
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // More digits than u64 holds: as large as can be.
    let size = std::str::from_utf8(digits).ok()?.parse::<u64>().unwrap_or(u64::MAX);
    Some((size, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 50 * 1024 * 1024;

    #[test]
    fn short_lines_pass() {
        let mut s = Scanner::new();
        assert_eq!(s.feed(b"a LOGIN mario pw\r\nb NOOP\r\n", false, MAX), Ok(()));
    }

    #[test]
    fn a_line_past_the_limit_stops_at_once() {
        let mut s = Scanner::new();
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..4 {
            assert_eq!(s.feed(&chunk, true, MAX), Ok(()));
        }
        assert_eq!(s.feed(b"y", true, MAX), Err(Exceeded::Line));
    }

    #[test]
    fn a_long_line_with_its_end_in_the_same_chunk_is_caught() {
        let mut s = Scanner::new();
        let mut b = vec![b'x'; MAX_LINE + 10];
        b.extend_from_slice(b"\r\n");
        assert_eq!(s.feed(&b, true, MAX), Err(Exceeded::Line));
    }

    #[test]
    fn literal_data_is_not_a_line() {
        let mut s = Scanner::new();
        let mut b = b"a APPEND x {100000}\r\n".to_vec();
        b.extend(vec![b'z'; 100_000]);
        b.extend_from_slice(b"\r\nb NOOP\r\n");
        assert_eq!(s.feed(&b, true, MAX), Ok(()));
        assert_eq!(s.line, 0);
        assert_eq!(s.literal, 0);
    }

    #[test]
    fn literal_split_across_chunks() {
        let mut s = Scanner::new();
        assert_eq!(s.feed(b"a APPEND x {10", true, MAX), Ok(()));
        assert_eq!(s.feed(b"+}\r\n01234", true, MAX), Ok(()));
        assert_eq!(s.literal, 5);
        assert_eq!(s.feed(b"56789\r\n", true, MAX), Ok(()));
        assert_eq!(s.literal, 0);
    }

    #[test]
    fn preauth_big_literal_is_refused_before_its_data() {
        let mut s = Scanner::new();
        assert_eq!(
            s.feed(b"a LOGIN {104857600+}\r\n", false, MAX),
            Err(Exceeded::Literal { size: 104_857_600, limit: MAX_PREAUTH_LITERAL })
        );
        let mut s = Scanner::new();
        assert!(s.feed(b"b LOGIN {5000}\r\n", false, MAX).is_err());
    }

    #[test]
    fn preauth_small_literals_pass() {
        let mut s = Scanner::new();
        assert_eq!(s.feed(b"a LOGIN {5+}\r\nmario {11+}\r\npw-Secret-1\r\n", false, MAX), Ok(()));
    }

    #[test]
    fn after_login_nonsync_over_the_limit_is_refused_sync_is_left_to_the_parser() {
        let mut s = Scanner::new();
        assert!(s.feed(b"a APPEND x {60000000+}\r\n", true, MAX).is_err());
        let mut s = Scanner::new();
        assert_eq!(s.feed(b"a APPEND x {60000000}\r\n", true, MAX), Ok(()));
        assert_eq!(s.literal, 0, "a refused synchronising literal sends no data");
    }

    #[test]
    fn absurd_sizes_do_not_overflow() {
        let mut s = Scanner::new();
        assert!(s.feed(b"a LOGIN {99999999999999999999999999+}\r\n", true, MAX).is_err());
        assert_eq!(announced(b"{}"), None);
        assert_eq!(announced(b"{+}"), None);
        assert_eq!(announced(b"{12a}"), None);
        assert_eq!(announced(b"x ~{12}\r"), Some((12, true)));
    }
}
