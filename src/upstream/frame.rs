//! Cutting the provider's byte stream into whole IMAP responses.
//!
//! Pure: bytes go in with [`Framer::push`]; [`Framer::complete`] says how
//! long the response at the head of the buffer is once all of it is there,
//! and the caller decodes that slice (imap-codec) and [`Framer::consume`]s
//! it. A response is lines, where a line ending in a literal announcement
//! (`{N}` or `{N+}` before CRLF, RFC 3501 §4.3, or before a bare LF: some
//! providers send them) is followed by N bytes of literal data and then
//! more of the line. This is what imap-codec's `Fragmentizer` finds too.
//!
//! Why not that `Fragmentizer` (issue 14): it moves every byte through a
//! `VecDeque` into its message buffer one at a time, 3.5 ns a byte, which
//! made it the largest cost of pulling 2 MB messages. Here the bytes are
//! copied once, into one contiguous buffer, and only line ends are looked
//! for: literal data is skipped by its announced length.
//!
//! Bounded: a response longer than the limit (its announced literals
//! included, checked as soon as announced) is an error, not a reason to
//! buffer or read on.

/// A response the provider sent is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("response longer than {max} bytes")]
    TooLong { max: usize },
}

/// Input buffer plus where the response at its head has been framed to.
#[derive(Debug)]
pub struct Framer {
    /// The response being framed (from index 0), then whatever came after.
    buf: Vec<u8>,
    /// `buf[..framed]` belongs to the current response and is framed.
    framed: usize,
    /// Literal bytes of the current response still to come after `framed`.
    literal: usize,
    /// Where to go on looking for the end of the current line (a line
    /// that comes in many reads is searched once, not once per read).
    line_searched: usize,
    max: usize,
}

/// Capacity kept between responses: a connection that received one large
/// message does not hold its size for the rest of its life.
const KEEP: usize = 256 * 1024;
/// Most reserved at once for an announced literal.
const RESERVE_AHEAD: usize = 64 * 1024 * 1024;

impl Framer {
    /// `max`: the longest response accepted, in bytes.
    pub fn new(max: usize) -> Framer {
        Framer { buf: Vec::new(), framed: 0, literal: 0, line_searched: 0, max }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffered bytes (the complete response is `&bytes()[..n]`).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The length of the response at the head of the buffer once it is
    /// complete, `None` while more bytes are needed.
    pub fn complete(&mut self) -> Result<Option<usize>, FrameError> {
        loop {
            if self.literal > 0 {
                let take = self.literal.min(self.buf.len() - self.framed);
                self.framed += take;
                self.literal -= take;
                if self.literal > 0 {
                    return Ok(None);
                }
                self.line_searched = self.framed;
            }
            let Some(i) = self.buf[self.line_searched..].iter().position(|&b| b == b'\n') else {
                self.line_searched = self.buf.len();
                if self.buf.len() > self.max {
                    return Err(FrameError::TooLong { max: self.max });
                }
                return Ok(None);
            };
            let line_start = self.framed;
            self.framed = self.line_searched + i + 1;
            self.line_searched = self.framed;
            if self.framed > self.max {
                return Err(FrameError::TooLong { max: self.max });
            }
            match announced(&self.buf[line_start..self.framed]) {
                None => return Ok(Some(self.framed)),
                Some(n) => {
                    let n = usize::try_from(n)
                        .ok()
                        .filter(|n| n.saturating_add(self.framed) <= self.max)
                        .ok_or(FrameError::TooLong { max: self.max })?;
                    self.literal = n;
                    // The whole literal is coming: one allocation, not a
                    // doubling series (up to a point: the provider's word
                    // alone does not get it 150 MB).
                    self.buf.reserve(n.saturating_sub(self.buf.len() - self.framed).min(RESERVE_AHEAD));
                }
            }
        }
    }

    /// Drop the first `n` bytes: the complete response just decoded.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n == self.framed && self.literal == 0, "consume a whole framed response");
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.framed = 0;
        self.literal = 0;
        self.line_searched = 0;
        if self.buf.capacity() > KEEP && self.buf.len() <= KEEP {
            self.buf.shrink_to(KEEP);
        }
    }
}

/// A `* N FETCH` response (complete, as framed) whose `BODY[]` is a
/// literal: the response with that literal replaced by an empty one (for
/// imap-codec to decode), the message number, and where the message's
/// bytes are in `frame`. `None` for anything else, which is decoded as
/// it is.
///
/// Why (issue 14): decoding a literal checks every byte of it for NUL
/// (imap-types' `Literal` validation), 17 % of the CPU of pulling 2 MB
/// messages, and then copies it; the message's bytes are taken from the
/// frame once instead. A message holding NUL bytes is then archived as it
/// came rather than failing its whole window as a malformed response.
pub fn split_fetch_body(frame: &[u8]) -> Option<(Vec<u8>, u32, std::ops::Range<usize>)> {
    // `* <seq> FETCH (`
    let rest = frame.strip_prefix(b"* ")?;
    let digits = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    if !rest[digits..].starts_with(b" FETCH (") {
        return None;
    }
    let mut pos = 0;
    loop {
        let end = pos + frame[pos..].iter().position(|&b| b == b'\n')? + 1;
        let line = &frame[pos..end];
        let n = usize::try_from(announced(line)?).ok()?;
        let open = pos + line.iter().rposition(|&b| b == b'{')?;
        let data = end..end.checked_add(n).filter(|&e| e <= frame.len())?;
        if frame[..open].ends_with(b"BODY[] ") {
            let mut small = Vec::with_capacity(frame.len() - n - (end - open) + 5);
            small.extend_from_slice(&frame[..open]);
            small.extend_from_slice(b"{0}\r\n");
            small.extend_from_slice(&frame[data.end..]);
            return Some((small, seq, data));
        }
        pos = data.end;
    }
}

/// The length a line (ending in LF) announces: `{N}` or `{N+}` right
/// before its CRLF or LF. `None` when the line announces nothing (or the
/// number does not fit in a u64: then the caller's limit refuses it).
fn announced(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let digits_start = inner.iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    if digits_start == 0 || inner[digits_start - 1] != b'{' || digits_start == inner.len() {
        return None;
    }
    // More than 20 digits cannot fit; saturate so the limit refuses it.
    Some(std::str::from_utf8(&inner[digits_start..]).ok()?.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every complete response, in order, from `chunks` pushed one at a
    /// time.
    fn frames(max: usize, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(n) = f.complete()? {
                out.push(f.bytes()[..n].to_vec());
                f.consume(n);
            }
        }
        Ok(out)
    }

    const FETCH: &[u8] = b"* 1 FETCH (UID 7 BODY[] {5}\r\nab\r\nc)\r\n";

    #[test]
    fn lines_and_literals() {
        let input = [b"* OK hi\r\n".as_slice(), FETCH, b"a1 OK done\r\n"].concat();
        let got = frames(1 << 20, &[&input]).unwrap();
        assert_eq!(got, vec![b"* OK hi\r\n".to_vec(), FETCH.to_vec(), b"a1 OK done\r\n".to_vec()]);
    }

    #[test]
    fn a_literal_may_hold_line_ends_and_braces() {
        let r = b"* 2 FETCH (BODY[] {8}\r\n{3}\r\n\n\n\n)\r\n";
        assert_eq!(frames(1 << 20, &[r]).unwrap(), vec![r.to_vec()]);
    }

    #[test]
    fn bare_lf_and_nonsync_and_empty_literals() {
        let r = b"* 3 FETCH (BODY[] {2+}\nxy BODY[1] {0}\r\n)\n";
        assert_eq!(frames(1 << 20, &[r]).unwrap(), vec![r.to_vec()]);
    }

    #[test]
    fn not_announcements() {
        for line in [&b"* OK {}\r\n"[..], b"* OK {+}\r\n", b"* OK {12x}\r\n", b"* OK 12}\r\n", b"* OK {1} \r\n"] {
            assert_eq!(announced(line), None, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(announced(b"* OK {12}\r\n"), Some(12));
        assert_eq!(announced(b"{12+}\n"), Some(12));
    }

    #[test]
    fn the_body_literal_is_taken_out_of_a_fetch_response() {
        let r = b"* 12 FETCH (UID 7 INTERNALDATE \"01-Jan-2026 10:00:00 +0000\" BODY[] {9}\r\nab\r\n\0{3}\r\n)\r\n";
        let (small, seq, data) = split_fetch_body(r).unwrap();
        assert_eq!(seq, 12);
        assert_eq!(&r[data], b"ab\r\n\0{3}\r");
        assert_eq!(
            small,
            b"* 12 FETCH (UID 7 INTERNALDATE \"01-Jan-2026 10:00:00 +0000\" BODY[] {0}\r\n\n)\r\n".to_vec()
        );
        // A literal before the body's (another item) is stepped over;
        // bare LF and non-synchronising announcements too.
        let r = b"* 3 FETCH (BODY[HEADER] {2}\nxy BODY[] {2+}\nzw)\n";
        let (small, seq, data) = split_fetch_body(r).unwrap();
        assert_eq!((seq, &r[data]), (3, &b"zw"[..]));
        assert_eq!(small, b"* 3 FETCH (BODY[HEADER] {2}\nxy BODY[] {0}\r\n)\n".to_vec());
    }

    #[test]
    fn responses_without_a_body_literal_are_left_alone() {
        for r in [
            &b"* OK hi\r\n"[..],
            b"* 1 FETCH (UID 7 FLAGS (\\Seen))\r\n",
            b"* 1 FETCH (BODY[HEADER] {2}\r\nab)\r\n",
            b"* 1 FETCH (BODY[] \"quoted\")\r\n",
            b"* 1 EXISTS\r\n",
            b"* x FETCH (BODY[] {2}\r\nab)\r\n",
            b"* 99999999999 FETCH (BODY[] {2}\r\nab)\r\n",
            b"a1 OK done\r\n",
        ] {
            assert_eq!(split_fetch_body(r), None, "{:?}", String::from_utf8_lossy(r));
        }
    }

    #[test]
    fn a_truncated_or_lying_body_literal_is_left_alone() {
        // Not a whole response (the framer never gives one, but the
        // function must not read past the end or panic).
        for cut in 0..FETCH.len() {
            let _ = split_fetch_body(&FETCH[..cut]);
        }
        assert_eq!(split_fetch_body(b"* 1 FETCH (BODY[] {99}\r\nab)\r\n"), None);
        assert_eq!(split_fetch_body(b"* 1 FETCH (BODY[] {18446744073709551615}\r\nab)\r\n"), None);
    }

    #[test]
    fn truncated_input_is_incomplete_not_an_error() {
        for cut in 0..FETCH.len() {
            assert_eq!(frames(1 << 20, &[&FETCH[..cut]]).unwrap(), Vec::<Vec<u8>>::new(), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_literal_is_refused_when_announced() {
        // 100 GB announced: refused at once, nothing more read.
        assert_eq!(
            frames(1 << 20, &[b"* 1 FETCH (BODY[] {107374182400}\r\n"]),
            Err(FrameError::TooLong { max: 1 << 20 })
        );
        // Past u64.
        assert!(frames(1 << 20, &[b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n"]).is_err());
        // Fits alone, not with its line.
        assert!(frames(40, &[b"* 1 FETCH (BODY[] {30}\r\n"]).is_err());
        assert!(frames(40, &[b"* 1 FETCH (BODY[] {3}\r\n"]).is_ok());
    }

    #[test]
    fn endless_line_is_refused() {
        let mut f = Framer::new(1000);
        let chunk = [b'x'; 100];
        for i in 0..10 {
            f.push(&chunk);
            assert_eq!(f.complete(), Ok(None), "{i}");
        }
        f.push(&chunk);
        assert_eq!(f.complete(), Err(FrameError::TooLong { max: 1000 }));
    }

    #[test]
    fn big_buffers_are_given_back() {
        let mut f = Framer::new(8 << 20);
        let mut r = b"* 1 FETCH (BODY[] {2000000}\r\n".to_vec();
        r.resize(r.len() + 2_000_000, b'a');
        r.extend_from_slice(b")\r\n");
        f.push(&r);
        let n = f.complete().unwrap().unwrap();
        assert_eq!(n, r.len());
        f.consume(n);
        assert!(f.buf.capacity() <= KEEP);
        assert_eq!(f.buffered(), 0);
    }

    proptest! {
        /// However the stream is cut into reads, the same responses come out.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let input = [b"* OK [CAPABILITY IMAP4rev1] hi\r\n".as_slice(), FETCH, b"* 9 EXISTS\n", FETCH, b"a1 OK {0}\r\n done\r\n"].concat();
            let whole = frames(1 << 20, &[&input]).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                chunks.push(&input[prev..c]);
                prev = c;
            }
            prop_assert_eq!(frames(1 << 20, &chunks).unwrap(), whole);
        }

        /// Arbitrary bytes after a FETCH's start: never a panic, and a
        /// body found lies within the response.
        #[test]
        fn split_arbitrary(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let frame = [b"* 1 FETCH (BODY[] ".as_slice(), &tail].concat();
            if let Some((small, seq, data)) = split_fetch_body(&frame) {
                prop_assert_eq!(seq, 1);
                prop_assert!(data.end <= frame.len());
                prop_assert!(small.len() < frame.len() + 5);
            }
        }

        /// Arbitrary bytes: frames or errors, never a panic, never a frame
        /// longer than the limit.
        #[test]
        fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..400), max in 1usize..300) {
            if let Ok(got) = frames(max, &[&input]) {
                prop_assert!(got.iter().all(|f| f.len() <= max));
            }
        }
    }
}
