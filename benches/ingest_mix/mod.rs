//! The message sizes of the ingest benches (`benches/ingest.rs`,
//! `benches/cluster_ingest.rs`): one generator, so that both load the same
//! mix from the same seed.

/// Issue 2: mostly 2–40 KB, every tenth 200 KB, every hundredth 2 MB.
#[allow(dead_code)]
pub fn size_small(i: usize) -> usize {
    // The same mix as the offload test: mostly small, some large.
    match i % 100 {
        0 => 2 * 1024 * 1024,
        n if n % 10 == 0 => 200 * 1024,
        n => 2 * 1024 + (n * 997 % 40) * 1024,
    }
}

/// Issue 14: `n` sizes, log-uniform in [2 KiB, 2 MiB], from a fixed seed
/// (the first `k` of `n` are the same whatever `n`).
pub fn sizes_loguniform(n: usize) -> Vec<usize> {
    let mut state: u64 = 0x5EED_1405_0000_0001;
    let (lo, hi) = ((2.0f64 * 1024.0).ln(), (2.0f64 * 1024.0 * 1024.0).ln());
    (0..n)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            (lo + u * (hi - lo)).exp() as usize
        })
        .collect()
}
