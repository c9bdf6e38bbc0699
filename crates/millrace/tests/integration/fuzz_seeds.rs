//! The fuzz targets (`fuzz/`, `millrace::fuzzing`) on their committed seeds
//! and on a bounded, deterministic set of mutations of them: the stable
//! toolchain's share of the fuzzing, run by every `cargo test`. A crash a
//! fuzzer finds is added to `fuzz/seeds/<target>/` and so runs here from
//! then on.

use std::path::PathBuf;

use millrace::fuzzing;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64*: a fixed sequence, so a failure here repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes a hostile producer might write: structure-aware enough to get past
/// the first check (brackets, quotes, digits, separators, newlines).
const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\n",
    b"\r",
    b"-",
    b"1e400",
    b"NaN",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"0.5",
    b"null",
    b"true",
    b"\xff",
    b"\xe2\x82",
    b"'",
    b";",
    b"(",
    b")",
    b"SELECT",
    b"GROUP BY",
    b"INTERVAL '1' SECOND",
    b"tumble(",
    b"WATERMARK FOR",
    b"\"file\": 0",
    b"\"len\": 99999999999",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(at..at, piece.iter().copied());
            }
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            3 => data.truncate(at),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(64)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    data
}

fn run(target: &str, check: fn(&[u8]), mutations: usize) {
    let seeds = seeds(target);
    for seed in &seeds {
        check(seed);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..mutations {
        check(&mutate(&mut rng, &seeds));
    }
}

#[test]
fn json_lines_survives_its_seeds_and_their_mutations() {
    run("json_lines", fuzzing::json_lines, 10_000);
}

#[test]
fn csv_lines_survives_its_seeds_and_their_mutations() {
    run("csv_lines", fuzzing::csv_lines, 10_000);
}

#[test]
fn sql_plan_survives_its_seeds_and_their_mutations() {
    run("sql_plan", fuzzing::sql_plan, 1000);
}

#[test]
fn checkpoint_read_survives_its_seeds_and_their_mutations() {
    run("checkpoint_read", fuzzing::checkpoint_read, 5000);
}
