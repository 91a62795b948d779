//! Throughput of `classify` (which includes the daticert parse) over a mix
//! of the shared samples, and of `Daticert::parse` alone. The target is at
//! least 20,000 messages per second on one core: a provider mailbox sync of
//! a few hundred thousand messages should classify in seconds.

#[path = "../tests/pec_common/mod.rs"]
mod pec_common;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pec_common::{sample, SAMPLES};
use pecgate::pec::{classify, Daticert};

fn load() -> Vec<Vec<u8>> {
    SAMPLES.iter().map(|name| sample(name)).collect()
}

fn bench(c: &mut Criterion) {
    let messages = load();
    let daticerts: Vec<Vec<u8>> = messages
        .iter()
        .filter_map(|m| pecgate::pec::unwrap_envelope(m).ok().and_then(|u| u.daticert))
        .collect();

    let mut group = c.benchmark_group("pec");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("classify_mix_of_8", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(classify(black_box(m)));
            }
        })
    });
    group.throughput(Throughput::Elements(daticerts.len() as u64));
    group.bench_function("daticert_parse_mix", |b| {
        b.iter(|| {
            for d in &daticerts {
                let _ = black_box(Daticert::parse(black_box(d)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
