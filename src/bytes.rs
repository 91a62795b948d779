//! Byte-string edits shared by the protocol code: pure, no I/O.

use std::borrow::Cow;

/// `data` with `byte` inserted before each of the offsets `at` (ascending),
/// borrowed when there are none. What both canonical forms of a message
/// body need: a CR before each bare LF (S/MIME, `pec::signature`), a dot
/// before each dot that starts a line (SMTP DATA, `smtp::relay`); the
/// offsets are found by `memchr`, so a 275 KB body of base64 lines costs
/// a search, not a loop over its bytes.
pub fn insert_before(data: &[u8], at: impl Iterator<Item = usize>, byte: u8) -> Cow<'_, [u8]> {
    let mut at = at.peekable();
    if at.peek().is_none() {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut from = 0;
    for i in at {
        out.extend_from_slice(&data[from..i]);
        out.push(byte);
        from = i;
    }
    out.extend_from_slice(&data[from..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::insert_before;

    #[test]
    fn inserts_before_each_offset_and_borrows_when_none() {
        assert!(matches!(insert_before(b"abc", std::iter::empty(), b'x'), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*insert_before(b"abc", [0, 2].into_iter(), b'x'), b"xabxc");
        assert_eq!(&*insert_before(b"abc", [3].into_iter(), b'x'), b"abcx");
    }
}
