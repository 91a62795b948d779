//! Commands of extensions imap-codec does not parse, read from the bytes
//! imap-next refused: `SEARCH RETURN (...)` (ESEARCH, RFC 4731; PARTIAL,
//! RFC 9394; UPDATE, RFC 5267 §4), `SORT RETURN (...)` (ESORT, RFC 5267
//! §3), `CANCELUPDATE` (RFC 5267 §4.3), the extended LIST (LIST-EXTENDED,
//! RFC 5258; LIST-STATUS, RFC 5819) and APPEND of several messages
//! (MULTIAPPEND, RFC 3502) or of messages put together (CATENATE, RFC
//! 4469), and NOTIFY (RFC 5465).
//!
//! imap-next answers a command it cannot parse with the bytes it discarded
//! (the whole command, literals included). Before the session answers
//! `BAD [PARSE]`, it asks [`parse`] whether those bytes are one of these
//! forms; if so, the extension's part is taken out, the rest is an ordinary
//! command imap-codec parses, and the session runs it with the extension's
//! options. Pure: no I/O.

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_next::imap_types::command::Command;

/// What `SEARCH RETURN (...)` or `SORT RETURN (...)` asks for (RFC 4731
/// §3.1, RFC 5267 §3.1 and §4); no option at all means ALL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// `PARTIAL range`: only the results at those positions.
    pub partial: Option<Partial>,
    /// `UPDATE`: keep the result up to date with ADDTO and REMOVEFROM
    /// (CONTEXT=SEARCH, CONTEXT=SORT) until CANCELUPDATE or another
    /// folder is selected.
    pub update: bool,
}

/// A PARTIAL range (RFC 9394 §3.1, after RFC 5267 §4.4): positions in the
/// result list, 1-based, `low <= high` (`4:2` is `2:4`); `from_end`
/// counts from the last result (`-1:-100`: the last hundred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub low: u32,
    pub high: u32,
    pub from_end: bool,
}

impl Partial {
    /// `n:m` or `-n:-m`, both non-zero; `None` for anything else (`1`,
    /// `1:*`, `-1:2`), which is a BAD.
    fn parse(s: &[u8]) -> Option<Partial> {
        let s = std::str::from_utf8(s).ok()?;
        let (a, b) = s.split_once(':')?;
        let num = |x: &str| -> Option<(bool, u32)> {
            let (neg, digits) = match x.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, x),
            };
            if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u32 = digits.parse().ok()?;
            (n > 0).then_some((neg, n))
        };
        let ((na, a), (nb, b)) = (num(a)?, num(b)?);
        (na == nb).then_some(Partial { low: a.min(b), high: a.max(b), from_end: na })
    }

    /// The results at the range's positions, in the results' order.
    pub fn pick<'a>(&self, results: &'a [u32]) -> &'a [u32] {
        let n = results.len();
        let (low, high) = (self.low as usize, self.high as usize);
        if low > n {
            return &[];
        }
        let high = high.min(n);
        match self.from_end {
            false => &results[low - 1..high],
            // -1 is the last: -low:-high are n-high .. n-low.
            true => &results[n - high..=n - low],
        }
    }

    /// The range as the response repeats it: `2:4`, `-1:-100`.
    pub fn range(&self) -> String {
        match self.from_end {
            false => format!("{}:{}", self.low, self.high),
            true => format!("-{}:-{}", self.low, self.high),
        }
    }
}

/// A command with what its extension adds.
#[derive(Debug)]
pub enum Extended {
    /// `[UID] SEARCH RETURN (...) criteria`: `command` is the SEARCH
    /// without the RETURN clause.
    Search { command: Command<'static>, ret: SearchReturn },
    /// `[UID] SORT RETURN (...) (criteria) charset keys` (ESORT):
    /// `command` is the SORT without the RETURN clause.
    Sort { command: Command<'static>, ret: SearchReturn },
    /// `CANCELUPDATE "tag" ...` (RFC 5267 §4.3): the contexts to end.
    CancelUpdate { tag: String, tags: Vec<String> },
    /// `LIST (selection) reference (patterns) RETURN (options)`.
    List(ExtendedList),
    /// `APPEND mailbox [flags] [date] literal [flags] [date] literal ...`:
    /// one APPEND command per message.
    Append { tag: String, appends: Vec<Command<'static>> },
    /// `APPEND mailbox message ...` where a message is CATENATE's parts
    /// (RFC 4469): the session resolves the URLs, then appends as above.
    Catenate { tag: String, mailbox: Vec<u8>, messages: Vec<AppendMessage> },
    /// `NOTIFY SET ...` (`Some`) or `NOTIFY NONE` (`None`), or why it is
    /// refused (RFC 5465).
    Notify { tag: String, set: Result<Option<super::notify::Notify>, super::notify::Refusal> },
    /// A form recognised with something pecgate does not offer (the tag,
    /// and why): answered BAD with the reason rather than `[PARSE]`.
    Refused { tag: String, why: &'static str },
}

/// What an extended LIST asks for beyond the patterns (RFC 5258 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Return option `SUBSCRIBED` (implied by the selection option):
    /// subscribed names carry `\Subscribed`.
    pub subscribed: bool,
    /// Selection `SUBSCRIBED`: the subscribed names, existing or not
    /// (`\NonExistent`), instead of the folders.
    pub select_subscribed: bool,
    /// Selection `RECURSIVEMATCH` (with SUBSCRIBED): also a name the
    /// patterns match that has a subscribed inferior they do not, with
    /// `CHILDINFO ("SUBSCRIBED")`.
    pub recursive: bool,
    /// Selection `SPECIAL-USE` (RFC 6154): only folders with a special use.
    pub special_use_only: bool,
    /// Return `STATUS (...)` (RFC 5819): the items, as a STATUS command
    /// of imap-codec's would carry them.
    pub status: Option<Vec<imap_next::imap_types::status::StatusDataItemName>>,
}

/// One extended LIST: a LIST command per pattern (imap-codec's reference
/// and pattern types), with the options.
#[derive(Debug)]
pub struct ExtendedList {
    pub tag: String,
    pub lists: Vec<Command<'static>>,
    pub options: ListOptions,
}

/// The longest SEARCH or LIST read this way (a line or two; an APPEND is
/// as long as imap-next let it be: `APPENDLIMIT`).
const MAX: usize = 64 * 1024;

/// `bytes`: one whole command as the client sent it (CRLF included).
pub fn parse(bytes: &[u8]) -> Option<Extended> {
    let sp = bytes.iter().position(|b| *b == b' ')?;
    let (tag, mut rest) = (&bytes[..sp], &bytes[sp + 1..]);
    let tag_s = std::str::from_utf8(tag).ok()?.to_string();
    if let Some(r) = strip_word(rest, b"APPEND") {
        return multiappend(tag, tag_s, r);
    }
    if bytes.len() > MAX {
        return None;
    }
    let mut head = Vec::with_capacity(bytes.len());
    head.extend_from_slice(tag);
    head.push(b' ');
    if let Some(r) = strip_word(rest, b"UID") {
        head.extend_from_slice(b"UID ");
        rest = r;
    }
    if let Some(r) = strip_word(rest, b"LIST") {
        return list(tag, tag_s, r);
    }
    if head.len() == tag.len() + 1 {
        if let Some(r) = strip_word(rest, b"CANCELUPDATE") {
            return cancel_update(tag_s, r);
        }
        if let Some(r) = strip_word(rest, b"NOTIFY") {
            return notify(tag_s, r);
        }
    }
    let sort = match (strip_word(rest, b"SEARCH"), strip_word(rest, b"SORT")) {
        (Some(r), _) => {
            rest = r;
            head.extend_from_slice(b"SEARCH ");
            false
        }
        (None, Some(r)) => {
            rest = r;
            head.extend_from_slice(b"SORT ");
            true
        }
        (None, None) => return None,
    };
    let r = strip_word(rest, b"RETURN")?;
    let r = r.strip_prefix(b"(")?;
    let close = r.iter().position(|b| *b == b')')?;
    let ret = match return_options(&r[..close], sort) {
        Ok(ret) => ret,
        Err(why) => return Some(Extended::Refused { tag: tag_s, why }),
    };
    let after = r[close + 1..].strip_prefix(b" ")?;
    head.extend_from_slice(after);
    let command = match CommandCodec::default().decode_static(&head) {
        Ok(([], command)) => command,
        _ => return None,
    };
    Some(match sort {
        false => Extended::Search { command, ret },
        true => Extended::Sort { command, ret },
    })
}

/// The options inside `RETURN (...)`; `Err` is the BAD's text.
fn return_options(opts: &[u8], sort: bool) -> Result<SearchReturn, &'static str> {
    let mut ret = SearchReturn::default();
    let mut words = opts.split(|b| *b == b' ').filter(|w| !w.is_empty());
    while let Some(opt) = words.next() {
        match opt.to_ascii_uppercase().as_slice() {
            b"MIN" => ret.min = true,
            b"MAX" => ret.max = true,
            b"ALL" => ret.all = true,
            b"COUNT" => ret.count = true,
            b"UPDATE" => ret.update = true,
            b"PARTIAL" => {
                let range = words.next().ok_or("PARTIAL takes a range: PARTIAL 1:100 or PARTIAL -1:-100")?;
                let p = Partial::parse(range).ok_or("PARTIAL takes a range n:m or -n:-m of non-zero numbers")?;
                ret.partial = Some(p);
            }
            b"SAVE" => return Err("RETURN (SAVE) is not offered (no SEARCHRES)"),
            _ if sort => return Err("SORT RETURN takes MIN, MAX, ALL, COUNT, PARTIAL and UPDATE"),
            _ => return Err("SEARCH RETURN takes MIN, MAX, ALL, COUNT, PARTIAL and UPDATE"),
        }
    }
    if ret.partial.is_some() && ret.all {
        // RFC 9394 §3.1: PARTIAL is a window on ALL, not beside it.
        return Err("RETURN (PARTIAL) and (ALL) exclude each other");
    }
    if ret.partial.is_some() && ret.update {
        return Err("RETURN (UPDATE) with PARTIAL is not offered: ask for UPDATE alone or with ALL");
    }
    if !(ret.min || ret.max || ret.count || ret.update || ret.partial.is_some()) {
        ret.all = true;
    }
    Ok(ret)
}

/// `CANCELUPDATE SP tag-string *(SP tag-string)` CRLF (RFC 5267 §4.3): the
/// quoted tags.
fn cancel_update(tag_s: String, args: &[u8]) -> Option<Extended> {
    let mut rest = args.strip_suffix(b"\r\n")?;
    let mut tags = Vec::new();
    while !rest.is_empty() {
        let (t, r) = token(rest)?;
        let t = t.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")).unwrap_or(t);
        tags.push(String::from_utf8(t.to_vec()).ok()?);
        rest = match r.strip_prefix(b" ") {
            Some(r) => r,
            None if r.is_empty() => r,
            None => return None,
        };
    }
    (!tags.is_empty()).then_some(Extended::CancelUpdate { tag: tag_s, tags })
}

/// `NOTIFY NONE` or `NOTIFY SET ...` (RFC 5465 §3) CRLF.
fn notify(tag_s: String, args: &[u8]) -> Option<Extended> {
    let args = args.strip_suffix(b"\r\n")?;
    if args.eq_ignore_ascii_case(b"NONE") {
        return Some(Extended::Notify { tag: tag_s, set: Ok(None) });
    }
    let r = strip_word(args, b"SET")?;
    let set = super::notify::parse_set(r, token, &mailbox_name).map(Some);
    Some(Extended::Notify { tag: tag_s, set })
}

/// A mailbox name as IMAP writes it (atom, quoted, modified UTF-7), read
/// by imap-codec's STATUS parser.
fn mailbox_name(m: &[u8]) -> Option<String> {
    let line = [b"x STATUS ", m, b" (MESSAGES)\r\n"].concat();
    match CommandCodec::default().decode_static(&line) {
        Ok(([], Command { body: imap_next::imap_types::command::CommandBody::Status { mailbox, .. }, .. })) => {
            Some(super::respond::mailbox_name(&mailbox))
        }
        _ => None,
    }
}

/// `LIST` arguments: `[(selection) SP] reference SP (pattern | (patterns))
/// [SP RETURN SP (options)]` CRLF. `None` for a plain LIST (imap-codec's
/// own, which failed for another reason) or anything not understood.
fn list(tag: &[u8], tag_s: String, args: &[u8]) -> Option<Extended> {
    let args = args.strip_suffix(b"\r\n")?;
    let mut toks = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let (t, r) = token(rest)?;
        toks.push(t);
        rest = match r.strip_prefix(b" ") {
            Some(r) => r,
            None if r.is_empty() => r,
            None => return None,
        };
    }
    let mut options = ListOptions::default();
    let mut extended = false;
    let mut i = 0;
    if toks.first()?.starts_with(b"(") {
        let (mut recursive, mut base) = (false, false);
        for w in words(toks[0])? {
            match w.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => (options.subscribed, options.select_subscribed, base) = (true, true, true),
                b"SPECIAL-USE" => (options.special_use_only, base) = (true, true),
                b"RECURSIVEMATCH" => recursive = true,
                // Every folder is local: nothing to add.
                b"REMOTE" => {}
                _ => {
                    return Some(Extended::Refused {
                        tag: tag_s,
                        why: "LIST selection options: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE",
                    })
                }
            }
        }
        if recursive && !base {
            // RFC 5258 §3: RECURSIVEMATCH qualifies another option.
            return Some(Extended::Refused {
                tag: tag_s,
                why: "RECURSIVEMATCH needs SUBSCRIBED (or SPECIAL-USE) beside it",
            });
        }
        options.recursive = recursive;
        extended = true;
        i = 1;
    }
    let reference = *toks.get(i)?;
    let patterns = *toks.get(i + 1)?;
    match toks.get(i + 2..) {
        Some([]) | None => {}
        Some([ret, opts]) if ret.eq_ignore_ascii_case(b"RETURN") && opts.starts_with(b"(") => {
            extended = true;
            let inner = &opts[1..opts.len() - 1];
            let mut rest = inner;
            while !rest.is_empty() {
                let (w, r) = token(rest)?;
                rest = r.strip_prefix(b" ").unwrap_or(r);
                match w.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => options.subscribed = true,
                    // Given with every name anyway.
                    b"CHILDREN" | b"SPECIAL-USE" => {}
                    b"STATUS" => {
                        let (items, r) = token(rest)?;
                        rest = r.strip_prefix(b" ").unwrap_or(r);
                        options.status = Some(status_items(tag, items)?);
                    }
                    _ => {
                        return Some(Extended::Refused {
                            tag: tag_s,
                            why: "LIST return options: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS",
                        })
                    }
                }
            }
        }
        _ => return None,
    }
    let pats: Vec<&[u8]> = match patterns.starts_with(b"(") {
        true => {
            extended = true;
            let mut out = Vec::new();
            let mut rest = &patterns[1..patterns.len() - 1];
            while !rest.is_empty() {
                let (p, r) = token(rest)?;
                rest = r.strip_prefix(b" ").unwrap_or(r);
                out.push(p);
            }
            out
        }
        false => vec![patterns],
    };
    if !extended || pats.is_empty() {
        return None;
    }
    let mut lists = Vec::new();
    for p in pats {
        let line = [tag, b" LIST ", reference, b" ", p, b"\r\n"].concat();
        match CommandCodec::default().decode_static(&line) {
            Ok(([], command)) => lists.push(command),
            _ => return None,
        }
    }
    Some(Extended::List(ExtendedList { tag: tag_s, lists, options }))
}

/// `APPEND` arguments with two messages or more (RFC 3502), or with
/// CATENATE (RFC 4469): `mailbox SP message *(SP message)` CRLF, each
/// message `[flags SP] [date SP] (literal / "CATENATE" SP "(" part *(SP
/// part) ")")`, each literal `{n}`, `{n+}` or `~{n}` (BINARY) followed by
/// its bytes, each part `TEXT SP literal` or `URL SP astring`. Without
/// CATENATE each message becomes an APPEND that imap-codec parses; with
/// it, the parts are handed over to be put together ([`Extended::Catenate`]).
fn multiappend(tag: &[u8], tag_s: String, args: &[u8]) -> Option<Extended> {
    let (mailbox, rest) = token(args)?;
    let mut rest = rest.strip_prefix(b" ")?;
    let mut messages = Vec::new();
    loop {
        let mut pre = Vec::new();
        for open in [b'(', b'"'] {
            if rest.first() == Some(&open) {
                let (t, r) = token(rest)?;
                pre.extend_from_slice(t);
                pre.push(b' ');
                rest = r.strip_prefix(b" ")?;
            }
        }
        if let Some(r) = strip_word(rest, b"CATENATE") {
            let mut r = r.strip_prefix(b"(")?;
            let mut parts = Vec::new();
            loop {
                if let Some(after) = strip_word(r, b"TEXT") {
                    let (data, _, after) = literal(after)?;
                    parts.push(CatPart::Text(data.to_vec()));
                    r = after;
                } else if let Some(after) = strip_word(r, b"URL") {
                    let (url, after) = token(after)?;
                    let url = url.strip_prefix(b"\"").and_then(|u| u.strip_suffix(b"\"")).unwrap_or(url);
                    parts.push(CatPart::Url(String::from_utf8(url.to_vec()).ok()?));
                    r = after;
                } else {
                    return None;
                }
                match r.first()? {
                    b' ' => r = &r[1..],
                    b')' => {
                        rest = &r[1..];
                        break;
                    }
                    _ => return None,
                }
            }
            messages.push(AppendMessage { pre, binary: false, parts, catenate: true });
        } else {
            let (data, binary, r) = literal(rest)?;
            rest = r;
            messages.push(AppendMessage { pre, binary, parts: vec![CatPart::Text(data.to_vec())], catenate: false });
        }
        if rest == b"\r\n" {
            break;
        }
        rest = rest.strip_prefix(b" ")?;
    }
    if messages.iter().any(|m| m.catenate) {
        return Some(Extended::Catenate { tag: tag_s, mailbox: mailbox.to_vec(), messages });
    }
    let mut appends = Vec::new();
    for m in &messages {
        let [CatPart::Text(data)] = m.parts.as_slice() else { return None };
        appends.push(append_command(tag, mailbox, m, data)?);
    }
    // One message that did not parse is imap-codec's answer to give.
    (appends.len() > 1).then_some(Extended::Append { tag: tag_s, appends })
}

/// `{n}`, `{n+}` or `~{n}` CRLF and its n bytes at the start of `s`: (the
/// bytes, literal8?, what follows).
fn literal(s: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let binary = s.first() == Some(&b'~');
    let r = s.get(usize::from(binary)..)?.strip_prefix(b"{")?;
    let close = r.iter().position(|b| *b == b'}')?;
    let digits = r[..close].strip_suffix(b"+").unwrap_or(&r[..close]);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let r = r[close + 1..].strip_prefix(b"\r\n")?;
    let data = r.get(..n)?;
    Some((data, binary, &r[n..]))
}

/// One message of an APPEND: its flags and date as written (each
/// followed by a space), and its bytes (one TEXT part) or CATENATE's parts.
#[derive(Debug)]
pub struct AppendMessage {
    pub pre: Vec<u8>,
    pub binary: bool,
    pub parts: Vec<CatPart>,
    pub catenate: bool,
}

/// A CATENATE part (RFC 4469 §5): bytes, or an IMAP URL to a message or a
/// part of one the user may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    Url(String),
}

/// The single APPEND of `message`'s flags and date with `data`, as
/// imap-codec parses it; `None` if it does not.
pub fn append_command(tag: &[u8], mailbox: &[u8], message: &AppendMessage, data: &[u8]) -> Option<Command<'static>> {
    let literal = format!("{}{{{}+}}\r\n", if message.binary { "~" } else { "" }, data.len());
    let line = [tag, b" APPEND ", mailbox, b" ", &message.pre, literal.as_bytes(), data, b"\r\n"].concat();
    match CommandCodec::default().decode_static(&line) {
        Ok(([], command)) => Some(command),
        _ => None,
    }
}

/// The items of `STATUS (items)`, read by imap-codec's STATUS parser.
fn status_items(tag: &[u8], items: &[u8]) -> Option<Vec<imap_next::imap_types::status::StatusDataItemName>> {
    let line = [tag, b" STATUS INBOX ", items, b"\r\n"].concat();
    match CommandCodec::default().decode_static(&line) {
        Ok(([], Command { body: imap_next::imap_types::command::CommandBody::Status { item_names, .. }, .. })) => {
            Some(item_names.into_owned())
        }
        _ => None,
    }
}

/// The words of a parenthesised list of atoms: `(A B)` → A, B.
fn words(group: &[u8]) -> Option<Vec<&[u8]>> {
    let inner = group.strip_prefix(b"(")?.strip_suffix(b")")?;
    Some(inner.split(|b| *b == b' ').filter(|w| !w.is_empty()).collect())
}

/// The next token of `s`: a quoted string (escapes kept), a parenthesised
/// group (nested, quotes respected) or an atom up to a space; and what
/// follows it. `None` for a literal or an unterminated token.
pub(crate) fn token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    match s.first()? {
        b'"' => {
            let mut i = 1;
            while i < s.len() {
                match s[i] {
                    b'\\' => i += 2,
                    b'"' => return Some((&s[..=i], &s[i + 1..])),
                    _ => i += 1,
                }
            }
            None
        }
        b'(' => {
            let (mut depth, mut i, mut quoted) = (0usize, 0, false);
            while i < s.len() {
                match (s[i], quoted) {
                    (b'\\', true) => i += 1,
                    (b'"', _) => quoted = !quoted,
                    (b'(', false) => depth += 1,
                    (b')', false) => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((&s[..=i], &s[i + 1..]));
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        b'{' => None,
        _ => {
            let end = s.iter().position(|b| *b == b' ' || *b == b'(' || *b == b')').unwrap_or(s.len());
            (end > 0).then(|| (&s[..end], &s[end..]))
        }
    }
}

/// `s` after `word` (any case) and one space.
fn strip_word<'a>(s: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let n = word.len();
    (s.len() > n && s[..n].eq_ignore_ascii_case(word) && s[n] == b' ').then(|| &s[n + 1..])
}

#[cfg(test)]
mod tests {
    use imap_next::imap_types::command::CommandBody;

    use super::*;

    fn search(b: &[u8]) -> (bool, SearchReturn) {
        match parse(b) {
            Some(Extended::Search { command: Command { body: CommandBody::Search { uid, .. }, .. }, ret }) => {
                (uid, ret)
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn search_return_options() {
        let all = SearchReturn { all: true, ..Default::default() };
        assert_eq!(search(b"a SEARCH RETURN () UNSEEN\r\n"), (false, all));
        assert_eq!(search(b"a uid search return (min COUNT) 1:* FLAGGED\r\n").0, true);
        let (_, r) = search(b"a UID SEARCH RETURN (MIN MAX COUNT ALL) CHARSET UTF-8 SUBJECT \"x\"\r\n");
        assert!(r.min && r.max && r.count && r.all);
        assert!(matches!(parse(b"t SEARCH RETURN (SAVE) ALL\r\n"), Some(Extended::Refused { .. })));
        let (_, r) = search(b"t SEARCH RETURN (PARTIAL 4:2) ALL\r\n");
        assert_eq!((r.partial, r.all), (Some(Partial { low: 2, high: 4, from_end: false }), false));
        let (_, r) = search(b"t UID SEARCH RETURN (COUNT PARTIAL -1:-100) ALL\r\n");
        assert_eq!(r.partial, Some(Partial { low: 1, high: 100, from_end: true }));
        let (_, r) = search(b"t SEARCH RETURN (UPDATE) SEEN\r\n");
        assert!(r.update && !r.all, "UPDATE alone returns nothing at first");
        for b in [
            &b"t SEARCH RETURN (PARTIAL 1) ALL\r\n"[..],
            b"t SEARCH RETURN (PARTIAL 1:*) ALL\r\n",
            b"t SEARCH RETURN (PARTIAL *:1) ALL\r\n",
            b"t SEARCH RETURN (PARTIAL 0:3) ALL\r\n",
            b"t SEARCH RETURN (PARTIAL -1:3) ALL\r\n",
            b"t SEARCH RETURN (PARTIAL) ALL\r\n",
            b"t SEARCH RETURN (ALL PARTIAL 1:3) ALL\r\n",
            b"t SORT RETURN (NOSUCH) (ARRIVAL) US-ASCII ALL\r\n",
        ] {
            assert!(matches!(parse(b), Some(Extended::Refused { .. })), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn sort_return_and_cancelupdate() {
        match parse(b"t UID SORT RETURN (MIN MAX COUNT ALL) (REVERSE ARRIVAL) US-ASCII 1:5\r\n") {
            Some(Extended::Sort { command: Command { body: CommandBody::Sort { uid, .. }, .. }, ret }) => {
                assert!(uid && ret.min && ret.max && ret.count && ret.all)
            }
            other => panic!("{other:?}"),
        }
        match parse(b"t sort return (partial 1:6) (arrival) us-ascii all\r\n") {
            Some(Extended::Sort { ret, .. }) => assert_eq!(ret.partial.map(|p| p.high), Some(6)),
            other => panic!("{other:?}"),
        }
        match parse(b"c CANCELUPDATE \"a1\" \"b 2\"\r\n") {
            Some(Extended::CancelUpdate { tag, tags }) => {
                assert_eq!((tag.as_str(), tags), ("c", vec!["a1".into(), "b 2".into()]))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(b"c CANCELUPDATE\r\n").is_none());
        assert!(parse(b"c UID CANCELUPDATE \"a\"\r\n").is_none());
    }

    fn list(b: &[u8]) -> ExtendedList {
        match parse(b) {
            Some(Extended::List(l)) => l,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn extended_list() {
        let l = list(b"A01 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"prot/*\" RETURN (CHILDREN)\r\n");
        assert_eq!((l.tag.as_str(), l.lists.len(), l.options.subscribed), ("A01", 1, true));
        assert!(l.options.select_subscribed && l.options.recursive);
        let l = list(b"A02 LIST \"\" (\"prot/%\" \"legale/%\" INBOX) RETURN (STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(l.lists.len(), 3);
        assert_eq!(l.options.status.as_ref().map(Vec::len), Some(2));
        let l = list(b"A03 LIST (SPECIAL-USE) \"\" *\r\n");
        assert!(l.options.special_use_only && l.options.status.is_none());
        let l = list(b"A04 list \"\" \"a \\\"(b)\" return (subscribed special-use)\r\n");
        assert!(l.options.subscribed && !l.options.select_subscribed && !l.options.recursive, "a return option");
        assert!(matches!(parse(b"A05 LIST (NOSUCH) \"\" *\r\n"), Some(Extended::Refused { .. })));
        for alone in [&b"A15 LIST (RECURSIVEMATCH) \"\" \"\"\r\n"[..], b"A16 LIST (RECURSIVEMATCH REMOTE) \"\" *\r\n"] {
            assert!(matches!(parse(alone), Some(Extended::Refused { .. })), "{}", String::from_utf8_lossy(alone));
        }
        assert!(matches!(parse(b"A06 LIST \"\" * RETURN (MYRIGHTS)\r\n"), Some(Extended::Refused { .. })));
        for b in [
            &b"A07 LIST \"\" *\r\n"[..],
            b"A08 LIST \"\" * RETURN\r\n",
            b"A09 LIST (SUBSCRIBED \"\" *\r\n",
            b"A10 LIST \"\" (\"a\" {3}\r\n",
            b"A11 LIST \"\" * RETURN (STATUS (NOSUCH))\r\n",
            b"A12 LIST \"\" * RETURN (STATUS)\r\n",
            b"A13 LIST () \"\"\r\n",
            b"A14 LIST ()",
        ] {
            assert!(!matches!(parse(b), Some(Extended::List(_))), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn multiappend() {
        let appends = |b: &[u8]| match parse(b) {
            Some(Extended::Append { appends, .. }) => appends,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(b)),
        };
        let a = appends(b"A3 APPEND saved-messages (\\Seen) {5+}\r\nhello (\\Flagged) \"05-Dec-2026 10:00:00 +0100\" ~{3}\r\nb\x00c {2}\r\nhi\r\n");
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|c| matches!(c.body, CommandBody::Append { .. })));
        for b in [
            &b"A4 APPEND box {5+}\r\nhello\r\n"[..],
            b"A5 APPEND box {5+}\r\nhello {9}\r\nshort\r\n",
            b"A6 APPEND box {5+}\r\nhello {x}\r\nhello\r\n",
            b"A7 APPEND box {5+}\r\nhello {99999999999}\r\nhello\r\n",
            b"A8 APPEND box {5+}\r\nhello (\\Seen {5}\r\nhello\r\n",
            b"A9 APPEND box {5+}\r\nhello {5}\r\nhello",
            b"A10 APPEND {5+}\r\nhello {5}\r\nhello\r\n",
        ] {
            assert!(parse(b).is_none(), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn catenate() {
        let b = b"A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER\" TEXT {42}\r\n\r\n--------------030308070208000400050907\r\n URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=1.MIME\") CATENATE (TEXT {2}\r\nhi)\r\n";
        match parse(b) {
            Some(Extended::Catenate { tag, mailbox, messages }) => {
                assert_eq!((tag.as_str(), mailbox.as_slice(), messages.len()), ("A003", &b"Drafts"[..], 2));
                assert_eq!(messages[0].parts.len(), 3);
                assert_eq!(
                    messages[0].parts[0],
                    CatPart::Url("/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER".into())
                );
                assert!(matches!(&messages[0].parts[1], CatPart::Text(t) if t.len() == 42));
                assert_eq!(messages[1].parts, vec![CatPart::Text(b"hi".to_vec())]);
                assert!(messages[0].pre.starts_with(b"(\\Seen"));
            }
            other => panic!("{other:?}"),
        }
        for b in [
            &b"A APPEND box CATENATE (TEXT {2}\r\nhi\r\n"[..],
            b"A APPEND box CATENATE ()\r\n",
            b"A APPEND box CATENATE (FOO \"x\")\r\n",
            b"A APPEND box CATENATE (TEXT {5}\r\nhi)\r\n",
        ] {
            assert!(parse(b).is_none(), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn other_bytes_are_not_taken() {
        for b in [
            &b"a SEARCH UNSEEN\r\n"[..],
            b"a SEARCH RETURN (MIN UNSEEN\r\n",
            b"a SEARCH RETURN (MIN) NOSUCHKEY\r\n",
            b"a SEARCH RETURN (MIN)",
            b"SEARCH",
            b"",
            b"a FETCH RETURN (MIN) 1\r\n",
            b"\xff\xfe SEARCH RETURN () ALL\r\n",
        ] {
            assert!(parse(b).is_none(), "{}", String::from_utf8_lossy(b));
        }
        assert!(parse(&vec![b'a'; MAX + 1]).is_none());
    }
}
