//! The messages of the full-text benchmarks (`fulltext`, `fulltext_load`,
//! and through `FULLTEXT_MAILDIR` Dovecot's): ≈ 20 KB of Italian
//! administrative prose each, from a fixed vocabulary of ≈ 2,000 word
//! forms, Zipf-like, so common words are common and rare ones rare; one
//! message in a thousand says "raccomandata urgente". The same seed gives
//! the same messages.

const STEMS: [&str; 40] = [
    "comun",
    "protocoll",
    "determin",
    "delibera",
    "pagament",
    "fattur",
    "contratt",
    "fornitur",
    "notific",
    "verbal",
    "sanzion",
    "ricors",
    "istanz",
    "certificat",
    "residenz",
    "tribut",
    "scadenz",
    "sollecit",
    "rimbors",
    "appalt",
    "progett",
    "lavor",
    "ufficio",
    "responsabil",
    "procediment",
    "document",
    "allegat",
    "dirigent",
    "sindac",
    "giunt",
    "consigl",
    "assessor",
    "bilanc",
    "contribut",
    "domand",
    "richiest",
    "autorizzazion",
    "permess",
    "ordinanz",
    "avvis",
];
const ENDINGS: [&str; 6] = ["o", "i", "a", "e", "azione", "amento"];

/// The generator's seed.
pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

pub struct Rng(pub u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Zipf-like over 0..n.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

fn word(r: &mut Rng, vocabulary: usize) -> String {
    let k = r.zipf(vocabulary);
    let (stem, ending) = (STEMS[k % STEMS.len()], ENDINGS[(k / STEMS.len()) % ENDINGS.len()]);
    let n = k / (STEMS.len() * ENDINGS.len());
    if n == 0 {
        format!("{stem}{ending}")
    } else {
        format!("{stem}{ending}{n}")
    }
}

/// Message `i` (they must be made in order from one [`Rng`]).
pub fn message(i: usize, r: &mut Rng) -> Vec<u8> {
    let mut body = String::with_capacity(21_000);
    while body.len() < 20_000 {
        for _ in 0..12 {
            body.push_str(&word(r, 2000));
            body.push(' ');
        }
        body.push_str(if i % 1000 == 7 && body.len() < 200 {
            "raccomandata urgente.\r\n"
        } else {
            "di la il per.\r\n"
        });
    }
    format!(
        "From: Ufficio {i} <ufficio{i}@pec.comune.example.it>\r\nTo: protocollo@pec.comune.example.it\r\n\
         Subject: Pratica n. {i} - {}\r\nMessage-ID: <{i}@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        word(r, 2000)
    )
    .into_bytes()
}
