//! Machinery shared by the data generators ([`crate::nexmark`], [`crate::iot`]):
//! per-event randomness, the event-time and due-time schedule, the split of the
//! event sequence between parallel instances, and the pool of random text.
//!
//! Guarantees:
//! * **Per-event randomness.** [`EventRng::new`]`(seed, n)` depends only on the
//!   seed and the event number, so any event can be generated on its own and
//!   the output does not depend on parallelism, batch sizes or timing.
//! * **Split.** A [`Cursor`] of instance `i` of `p` visits exactly the accepted
//!   event numbers `n` with `n % p == i`, in increasing order, below the bound.
//! * **Pacing.** Event `n` is due at `start + n * 1e9 / rate` ns on
//!   [`now_ns`]'s clock, where `start` is one instant shared by every reader of
//!   a factory. Nothing here sleeps.
//! * **Positions.** A generator reader's position is its cursor's next event
//!   number ([`generator_position`]); a fresh reader moved there
//!   ([`seek_generator`]) emits the same event numbers, hence the same rows.
//!   Only its schedule restarts: the next event is due at its first poll, so
//!   the time the pipeline was down is not caught up in a burst.

use std::sync::{Arc, OnceLock};

use millrace_core::state::{scalar, scalars};
use millrace_core::time::now_ns;
use millrace_core::{Error, Result, Snapshot, SourcePoll};

/// The SplitMix64 output function: a bijective 64-bit mixer.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A SplitMix64 generator. Small, fast and good enough for synthetic data;
/// not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub(crate) struct EventRng {
    state: u64,
}

impl EventRng {
    /// Key of a seed within a domain (so the generators' streams differ even
    /// under the same seed). Computed once per factory.
    pub(crate) fn key(seed: u64, domain: u64) -> u64 {
        mix64(mix64(seed ^ domain.wrapping_mul(GOLDEN)).wrapping_add(domain))
    }

    /// The generator of event `n` under `key`. The starting state is a
    /// bijective mix of `(key, n)`, so distinct events start at unrelated
    /// points of the SplitMix sequence; a plain `key + n * gamma` would make
    /// event `n`'s second draw equal event `n + 1`'s first.
    #[inline]
    pub(crate) fn new(key: u64, n: u64) -> Self {
        EventRng {
            state: mix64(key ^ n.wrapping_mul(GOLDEN)),
        }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, bound)`; 0 when `bound` is 0. Lemire's multiply-shift:
    /// no division, bias below 2^-64 × bound (irrelevant here).
    #[inline]
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Event time of event `n`: `base + floor(n * 1000 / rate)` ms. Monotone in
/// `n` (both floating-point steps are monotone), so every instance's event
/// time is non-decreasing. Saturates instead of overflowing.
#[inline]
pub(crate) fn event_time_ms(base_ms: i64, rate: f64, n: u64) -> i64 {
    // The quotient is non-negative, so truncation is the floor (and avoids a
    // libm call per row on targets without SSE4.1).
    base_ms.saturating_add((n as f64 * 1000.0 / rate) as i64)
}

/// Checks that a rate is a usable positive finite number.
pub(crate) fn check_rate(source: &str, what: &str, rate: f64) -> Result<()> {
    if rate.is_finite() && rate > 0.0 {
        Ok(())
    } else {
        Err(Error::plan(format!(
            "{source}: {what} must be a positive finite number of events per second, got {rate}"
        )))
    }
}

/// Checks `instance < parallelism`.
pub(crate) fn check_split(source: &str, instance: usize, parallelism: usize) -> Result<()> {
    if parallelism == 0 || instance >= parallelism {
        Err(Error::plan(format!(
            "{source}: instance {instance} of parallelism {parallelism} does not exist \
             (need 0 <= instance < parallelism)"
        )))
    } else {
        Ok(())
    }
}

/// Largest period of the split table; beyond it the cursor steps by the
/// parallelism and tests each candidate (only for absurd parallelism).
const MAX_TABLE_PERIOD: u64 = 1 << 16;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Walks the event numbers of one instance that are of the wanted kind.
///
/// The kinds repeat with period `modulus` (50 for Nexmark, 1 for IoT) and the
/// split with period `parallelism`, so the accepted numbers repeat with period
/// `lcm(modulus, parallelism)`; the offsets within one period are tabulated
/// once, which makes skipping other kinds free.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    instance: u64,
    parallelism: u64,
    period: u64,
    offsets: Vec<u64>,
    base: u64,
    idx: usize,
    limit: Option<u64>,
    /// `accept[n % modulus]`, checked on every candidate (always true in table
    /// mode; it keeps the fallback mode correct).
    accept: Vec<bool>,
    done: bool,
}

impl Cursor {
    pub(crate) fn new(
        instance: usize,
        parallelism: usize,
        accept: Vec<bool>,
        limit: Option<u64>,
    ) -> Self {
        let p = parallelism.max(1) as u64;
        let i = instance as u64;
        let m = accept.len().max(1) as u64;
        let lcm = (m / gcd(m, p)).saturating_mul(p);
        let accepts = |n: u64| accept.get((n % m) as usize).copied().unwrap_or(false);
        let (period, offsets) = if lcm <= MAX_TABLE_PERIOD {
            let offsets: Vec<u64> = (i..lcm)
                .step_by(p as usize)
                .filter(|&n| accepts(n))
                .collect();
            (lcm, offsets)
        } else {
            (p, vec![i])
        };
        let done = offsets.is_empty();
        Cursor {
            instance: i,
            parallelism: p,
            period,
            offsets,
            base: 0,
            idx: 0,
            limit,
            accept,
            done,
        }
    }

    fn accepts(&self, n: u64) -> bool {
        let m = self.accept.len().max(1) as u64;
        self.accept.get((n % m) as usize).copied().unwrap_or(false)
    }

    /// The next event number of this instance, without consuming it.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u64> {
        loop {
            if self.done {
                return None;
            }
            let Some(n) = self
                .offsets
                .get(self.idx)
                .and_then(|o| self.base.checked_add(*o))
            else {
                // Past u64::MAX events: the sequence ends.
                self.done = true;
                return None;
            };
            if self.limit.is_some_and(|l| n >= l) {
                self.done = true;
                return None;
            }
            if self.accepts(n) {
                return Some(n);
            }
            self.advance();
        }
    }

    /// Consumes the number `peek` returned.
    #[inline]
    pub(crate) fn advance(&mut self) {
        self.idx += 1;
        if self.idx == self.offsets.len() {
            self.idx = 0;
            match self.base.checked_add(self.period) {
                Some(b) => self.base = b,
                None => self.done = true,
            }
        }
    }

    /// The number the cursor stands on (`peek` returns it, or skips past it
    /// if it is of another kind); `None` once the sequence has ended. Unlike
    /// `peek` it reads without moving, so a position can be taken from `&self`.
    pub(crate) fn next_event(&self) -> Option<u64> {
        if self.done {
            return None;
        }
        let n = self
            .offsets
            .get(self.idx)
            .and_then(|o| self.base.checked_add(*o))?;
        self.limit.is_none_or(|l| n < l).then_some(n)
    }

    /// Puts the cursor where [`Cursor::next_event`] said `n`: on the first
    /// of its numbers at or after `n`. Refuses a number that is not this
    /// instance's, which only another instance's position can hold.
    pub(crate) fn seek(&mut self, n: u64) -> Result<(), String> {
        if n % self.parallelism != self.instance {
            return Err(format!(
                "event {n} belongs to instance {} of {}, not to instance {}",
                n % self.parallelism,
                self.parallelism,
                self.instance
            ));
        }
        let within = n % self.period;
        self.base = n - within;
        self.idx = self.offsets.partition_point(|&o| o < within);
        self.done = self.offsets.is_empty();
        if self.idx == self.offsets.len() {
            self.idx = 0;
            match self.base.checked_add(self.period) {
                Some(b) => self.base = b,
                None => self.done = true,
            }
        }
        Ok(())
    }

    /// Ends the sequence here: `peek` returns `None` from now on.
    pub(crate) fn finish(&mut self) {
        self.done = true;
    }
}

/// Emission schedule of one factory: as fast as possible, or open loop at a
/// fixed rate from one start instant shared by all its readers.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate: Option<f64>,
    /// When event `first` is due; set at the first poll.
    start: Arc<OnceLock<i64>>,
    /// The event due at `start`: 0, or where the reader was moved by a seek.
    first: u64,
}

impl Pacer {
    pub(crate) fn new(rate: Option<f64>, start: Arc<OnceLock<i64>>) -> Self {
        Pacer {
            rate,
            start,
            first: 0,
        }
    }

    /// Restarts the schedule of a reader moved to event `n`: `n` is due at
    /// the reader's next poll and the rest follow at the rate. The start is
    /// the reader's own from then on, since the factory's shared one may be
    /// long past (a restore in the same process), and keeping it would emit
    /// every event due while the pipeline was down in one burst.
    pub(crate) fn resume_at(&mut self, n: u64) {
        self.first = n;
        self.start = Arc::new(OnceLock::new());
    }

    /// Due time of event `n` (paced mode), to the nearest ns (rounding is
    /// monotone, so due times never decrease), saturating far in the future.
    #[inline]
    fn due(&self, start: i64, rate: f64, n: u64) -> i64 {
        let since_first = n.saturating_sub(self.first);
        start.saturating_add((since_first as f64 * 1e9 / rate).round() as i64)
    }

    /// Moves the next due event numbers (at most `max_rows`) from `cursor`
    /// into `ns`, with their entered times in `entered`. Returns `Some(poll)`
    /// when there is nothing to emit (`Pending` with the next due time, or
    /// `Exhausted`), `None` when `ns` holds rows.
    pub(crate) fn take(
        &self,
        cursor: &mut Cursor,
        max_rows: usize,
        ns: &mut Vec<u64>,
        entered: &mut Vec<i64>,
    ) -> Option<SourcePoll> {
        ns.clear();
        entered.clear();
        if cursor.peek().is_none() {
            return Some(SourcePoll::Exhausted);
        }
        if max_rows == 0 {
            return Some(SourcePoll::Pending { wake_at_ns: None });
        }
        match self.rate {
            None => {
                while ns.len() < max_rows {
                    let Some(n) = cursor.peek() else { break };
                    ns.push(n);
                    cursor.advance();
                }
                // One clock read per batch: the rows enter together.
                let now = now_ns();
                entered.resize(ns.len(), now);
            }
            Some(rate) => {
                let start = *self.start.get_or_init(now_ns);
                let now = now_ns();
                while ns.len() < max_rows {
                    let Some(n) = cursor.peek() else { break };
                    let due = self.due(start, rate, n);
                    if due > now {
                        if ns.is_empty() {
                            return Some(SourcePoll::Pending {
                                wake_at_ns: Some(due),
                            });
                        }
                        break;
                    }
                    ns.push(n);
                    entered.push(due);
                    cursor.advance();
                }
            }
        }
        None
    }
}

/// The position of a generator reader ([`SourceReader::position`]): one
/// table named after the source (`nexmark-bids`, `iot`), so a position of
/// another generator is refused by name, of one row of `Int64`s:
///
/// * `next_event`: the event number the reader emits next; null once
///   exhausted;
/// * `exhausted`: 1 once the reader has nothing more to emit, else 0;
/// * `instance`, `parallelism`: whose position it is.
///
/// Every value of event `n` is a function of `n`, so the next event number
/// is all a fresh reader needs to continue with the same rows.
///
/// At another parallelism generators keep the default rescale, which
/// refuses by name: instance `i` of `p` emits the numbers `≡ i (mod p)`
/// from its next one on, and the readers of another parallelism would each
/// have to skip the numbers every old reader had already emitted, up to a
/// next number of its own: more than one next number can say.
///
/// [`SourceReader::position`]: millrace_core::SourceReader::position
pub(crate) fn generator_position(source: &str, cursor: &Cursor) -> Result<Snapshot> {
    let to_i64 = |what: &str, v: u64| {
        i64::try_from(v).map_err(|_| {
            Error::Other(format!(
                "{source}: {what} {v} does not fit a checkpoint's Int64"
            ))
        })
    };
    let next = cursor.next_event();
    let next_event = next.map(|n| to_i64("event number", n)).transpose()?;
    Ok(Snapshot::none().with(
        source,
        scalars(&[
            ("next_event", next_event),
            ("exhausted", Some(i64::from(next.is_none()))),
            ("instance", Some(to_i64("instance", cursor.instance)?)),
            (
                "parallelism",
                Some(to_i64("parallelism", cursor.parallelism)?),
            ),
        ]),
    ))
}

/// Moves a fresh generator reader (its cursor and schedule) to a position
/// taken by [`generator_position`] from the same instance of the same source.
pub(crate) fn seek_generator(
    source: &str,
    position: &Snapshot,
    cursor: &mut Cursor,
    pacer: &mut Pacer,
) -> Result<()> {
    let refuse =
        |why: String| Error::Other(format!("{source}: cannot seek to the position: {why}"));
    let table = position.table(source).map_err(|e| refuse(e.to_string()))?;
    let value = |name: &str| scalar(table, name).map_err(|e| refuse(e.to_string()));
    let instance = value("instance")?;
    let parallelism = value("parallelism")?;
    let ours = (cursor.instance as i64, cursor.parallelism as i64);
    if (instance, parallelism) != (Some(ours.0), Some(ours.1)) {
        let show = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
        return Err(refuse(format!(
            "it is the position of instance {} of {}, this reader is instance {} of {}",
            show(instance),
            show(parallelism),
            ours.0,
            ours.1
        )));
    }
    match (value("exhausted")?, value("next_event")?) {
        (Some(1), _) => cursor.finish(),
        (Some(0), Some(n)) => {
            let n = u64::try_from(n).map_err(|_| refuse(format!("next_event {n} is negative")))?;
            cursor.seek(n).map_err(refuse)?;
            pacer.resume_at(n);
        }
        (exhausted, next_event) => {
            return Err(refuse(format!(
                "exhausted {exhausted:?} with next_event {next_event:?} is not a position"
            )));
        }
    }
    Ok(())
}

/// Span of valid starting offsets into the text pools.
const POOL_SPAN: usize = 1 << 18;
/// Longest slice the generators take (the largest `extra`, ~600 bytes).
pub(crate) const POOL_MAX_SLICE: usize = 1024;

/// Random ASCII text generated once per process from a fixed seed; strings
/// are slices of it at offsets drawn from each event's generator, so no row
/// allocates or formats. Constant across runs, so determinism holds.
pub(crate) struct TextPool {
    /// Lowercase letters with a space about every 13th character.
    text: String,
    /// Lowercase letters only (for e-mail addresses and URL directories).
    letters: String,
}

impl TextPool {
    pub(crate) fn get() -> &'static TextPool {
        static POOL: OnceLock<TextPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let mut rng = EventRng::new(EventRng::key(0x7e47_9001, 7), 0);
            let len = POOL_SPAN + POOL_MAX_SLICE;
            let mut text = String::with_capacity(len);
            let mut letters = String::with_capacity(len);
            for _ in 0..len {
                let letter = char::from(b'a' + rng.below(26) as u8);
                letters.push(letter);
                text.push(if rng.below(13) == 0 { ' ' } else { letter });
            }
            TextPool { text, letters }
        })
    }

    /// `len` characters (clamped to [`POOL_MAX_SLICE`]) of text with spaces.
    #[inline]
    pub(crate) fn text(&'static self, rng: &mut EventRng, len: usize) -> &'static str {
        Self::slice(&self.text, rng, len)
    }

    /// `len` characters (clamped) of lowercase letters.
    #[inline]
    pub(crate) fn letters(&'static self, rng: &mut EventRng, len: usize) -> &'static str {
        Self::slice(&self.letters, rng, len)
    }

    #[inline]
    fn slice(pool: &'static str, rng: &mut EventRng, len: usize) -> &'static str {
        let off = rng.below(POOL_SPAN as u64) as usize;
        // The pool is ASCII and long enough, so this never falls back.
        pool.get(off..off + len.min(POOL_MAX_SLICE)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(instance: usize, p: usize, accept: Vec<bool>, limit: u64) -> Vec<u64> {
        let mut c = Cursor::new(instance, p, accept, Some(limit));
        let mut out = Vec::new();
        while let Some(n) = c.peek() {
            out.push(n);
            c.advance();
        }
        out
    }

    #[test]
    fn cursor_visits_exactly_its_share() {
        let accept: Vec<bool> = (0..50).map(|o| o >= 4).collect();
        for p in [1usize, 2, 3, 7, 50, 64] {
            let mut all = Vec::new();
            for i in 0..p {
                let got = walk(i, p, accept.clone(), 2000);
                assert!(got.windows(2).all(|w| w[0] < w[1]), "increasing");
                assert!(got.iter().all(|n| *n as usize % p == i && n % 50 >= 4));
                all.extend(got);
            }
            all.sort_unstable();
            let want: Vec<u64> = (0..2000).filter(|n| n % 50 >= 4).collect();
            assert_eq!(all, want, "parallelism {p}");
        }
    }

    #[test]
    fn cursor_fallback_mode_matches_table_mode() {
        // Parallelism large enough that lcm(50, p) exceeds the table limit.
        let p = 70_001usize;
        let accept: Vec<bool> = (0..50).map(|o| o == 0).collect();
        let got = walk(50, p, accept, 10_000_000);
        let want: Vec<u64> = (0..10_000_000u64)
            .filter(|n| *n as usize % p == 50 && n % 50 == 0)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = EventRng::new(EventRng::key(1, 2), 3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = rng.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(rng.below(0), 0);
    }
}
