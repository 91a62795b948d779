//! The package's XML: a small indenting writer (text and attributes
//! escaped by quick-xml, characters XML 1.0 forbids replaced), and the
//! reading of `index.xml`'s files back for `export verify`.

use quick_xml::events::Event;

/// Text as XML 1.0 may hold it: control characters other than tab, line
/// feed and carriage return (a subject may carry them) become U+FFFD.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}');
    if s.chars().any(bad) {
        s.chars().map(|c| if bad(c) { '\u{FFFD}' } else { c }).collect::<String>().into()
    } else {
        s.into()
    }
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(clean(s)).into_owned()
}

/// An XML document written element by element, indented by two spaces.
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    pub fn new() -> Xml {
        Xml { out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"), open: Vec::new() }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push_str(&"  ".repeat(self.open.len()));
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}=\"{}\"", esc(v)));
        }
    }

    /// `<name attrs>`, closed by [`Xml::close`].
    pub fn open(&mut self, name: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push_str(">\n");
        self.open.push(name);
        self
    }

    /// `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self.out.push_str(&esc(text));
        self.out.push_str(&format!("</{name}>\n"));
        self
    }

    /// A leaf only when there is a value.
    pub fn opt(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text.filter(|t| !t.trim().is_empty()) {
            self.leaf(name, &[], t);
        }
        self
    }

    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.push_str(&"  ".repeat(self.open.len()));
            self.out.push_str(&format!("</{name}>\n"));
        }
        self
    }

    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// One `File` of `index.xml`: its path and its `Hash` with the hash
/// function named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    pub path: String,
    pub function: String,
    pub hash: String,
}

/// The files `index.xml` lists, in order. Errors say what is wrong with
/// the document (never a panic: the file comes from outside).
pub fn indexed_files(xml: &[u8]) -> Result<Vec<IndexedFile>, String> {
    let text = std::str::from_utf8(xml).map_err(|_| "index.xml is not UTF-8".to_string())?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut out = Vec::new();
    let mut root = false;
    let mut cur: Option<IndexedFile> = None;
    // The element whose text is being read (Path or Hash inside a File).
    let mut field: Option<&'static str> = None;
    let mut depth = 0usize;
    loop {
        let ev = r.read_event().map_err(|e| format!("index.xml at byte {}: {e}", r.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                match name.as_ref() {
                    "PIndex" => root = true,
                    "File" => {
                        cur = Some(IndexedFile { path: String::new(), function: String::new(), hash: String::new() })
                    }
                    "Path" if cur.is_some() => field = Some("path"),
                    "Hash" if cur.is_some() => {
                        field = Some("hash");
                        for a in e.attributes().flatten() {
                            if a.key.local_name().as_ref() == "function" {
                                let v = a
                                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                    .map_err(|e| format!("index.xml: {e}"))?;
                                if let Some(f) = cur.as_mut() {
                                    f.function = v.into_owned();
                                }
                            }
                        }
                    }
                    _ => field = None,
                }
            }
            Event::Text(t) => {
                if let (Some(f), Some(which)) = (cur.as_mut(), field) {
                    let s = t.xml10_content();
                    match which {
                        "path" => f.path.push_str(&s),
                        _ => f.hash.push_str(&s),
                    }
                }
            }
            Event::GeneralRef(g) => {
                if let (Some(f), Some(which)) = (cur.as_mut(), field) {
                    let c = match g.resolve_char_ref().map_err(|e| format!("index.xml: {e}"))? {
                        Some(c) => c.to_string(),
                        None => match &*g {
                            "amp" => "&".into(),
                            "lt" => "<".into(),
                            "gt" => ">".into(),
                            "quot" => "\"".into(),
                            "apos" => "'".into(),
                            other => return Err(format!("index.xml: unknown entity &{other};")),
                        },
                    };
                    match which {
                        "path" => f.path.push_str(&c),
                        _ => f.hash.push_str(&c),
                    }
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                field = None;
                if e.local_name().as_ref() == "File" {
                    let f = cur.take().ok_or("index.xml: </File> without <File>")?;
                    out.push(IndexedFile {
                        path: f.path.trim().to_string(),
                        function: f.function,
                        hash: f.hash.trim().to_string(),
                    });
                }
            }
            Event::DocType(_) => return Err("index.xml has a DOCTYPE: refused".into()),
            Event::Eof if depth > 0 => return Err("index.xml is cut short (elements left open)".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    if !root {
        return Err("index.xml has no PIndex".into());
    }
    Ok(out)
}

/// What a `metadata.xml` says of its message: `NomeDelDocumento` (its
/// path in the package) and `IdDoc/ImprontaCrittografica` (its SHA-256).
pub fn metadata_binding(xml: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(xml).map_err(|_| "not UTF-8".to_string())?;
    let mut r = quick_xml::Reader::from_str(text);
    let (mut name, mut hash) = (String::new(), String::new());
    let mut field: Option<bool> = None; // Some(true): the name, Some(false): the hash
    let mut depth = 0usize;
    loop {
        match r.read_event().map_err(|e| format!("at byte {}: {e}", r.buffer_position()))? {
            Event::Start(e) => {
                depth += 1;
                field = match e.local_name().as_ref() {
                    "NomeDelDocumento" if depth == 2 => Some(true),
                    "ImprontaCrittografica" if depth == 3 => Some(false),
                    _ => None,
                };
            }
            Event::Text(t) => match field {
                Some(true) => name.push_str(&t.xml10_content()),
                Some(false) => hash.push_str(&t.xml10_content()),
                None => {}
            },
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                field = None;
            }
            Event::DocType(_) => return Err("a DOCTYPE: refused".into()),
            Event::Eof if depth > 0 => return Err("cut short".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    if name.trim().is_empty() || hash.trim().is_empty() {
        return Err("no NomeDelDocumento or ImprontaCrittografica".into());
    }
    Ok((name.trim().to_string(), hash.trim().to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_binding_reads_name_and_hash() {
        let m = b"<?xml version=\"1.0\"?><DocumentoInformatico><IdDoc><ImprontaCrittografica Algoritmo=\"SHA-256\">AB</ImprontaCrittografica></IdDoc><NomeDelDocumento>documents/000001/message.eml</NomeDelDocumento><PEC><Ricevute><NomeDelDocumento>x</NomeDelDocumento></Ricevute></PEC></DocumentoInformatico>";
        assert_eq!(metadata_binding(m).unwrap(), ("documents/000001/message.eml".to_string(), "ab".to_string()));
        for bad in [&b""[..], b"<DocumentoInformatico><IdDoc>", b"<a/>", b"\xff"] {
            assert!(metadata_binding(bad).is_err());
        }
    }

    #[test]
    fn escapes_and_reads_back() {
        let mut x = Xml::new();
        x.open("PIndex", &[("xmlns", "http://www.uni.com/U3011/sincro-v2/")]);
        x.leaf("Oggetto", &[], "a < b & \"c\" \u{1}");
        x.open("File", &[])
            .leaf("Path", &[], "documents/1/a&b.eml")
            .leaf("Hash", &[("function", "SHA-256")], "ab")
            .close();
        let s = x.finish();
        assert!(s.contains("a &lt; b &amp; &quot;c&quot; \u{FFFD}"), "{s}");
        let files = indexed_files(s.as_bytes()).unwrap();
        assert_eq!(
            files,
            vec![IndexedFile { path: "documents/1/a&b.eml".into(), function: "SHA-256".into(), hash: "ab".into() }]
        );
        for bad in [
            &b""[..],
            b"<PIndex><File>",
            b"\xff\xfe",
            b"<!DOCTYPE x [<!ENTITY a 'b'>]><PIndex/>",
            b"<PIndex><File><Path>&zz;</Path></File></PIndex>",
        ] {
            assert!(indexed_files(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
