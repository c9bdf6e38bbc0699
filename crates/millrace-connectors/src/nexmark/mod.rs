//! The Nexmark auction generator (see `NEXMARK.md`): people register, open
//! auctions and bid, as one global sequence of numbered events.
//!
//! Two exposures of the same sequence:
//! * **Per kind** ([`NexmarkSource::bids`], [`NexmarkSource::persons`],
//!   [`NexmarkSource::auctions`], or [`NexmarkSource::new`]): flat columns of
//!   one kind ([`NexmarkSource::schema_of`]); the other events of the sequence
//!   are skipped arithmetically, never built.
//! * **Combined** ([`NexmarkSource::all`], named `nexmark`): every event, in
//!   the standard layout ([`NexmarkSource::combined_schema`]): `event_type`
//!   (`Int32`: 0 person, 1 auction, 2 bid, the RisingWave/Arroyo convention;
//!   see [`NexmarkKind::event_type`]), the nullable struct columns `person`,
//!   `auction` and `bid` (fields as in [`NexmarkSource::schema_of`]), and
//!   `date_time`, the event's time repeated at top level as the event-time
//!   column.
//!
//! Guarantees:
//! * **The reference mix and ids.** Event `n` is a Person if `n % 50 == 0`, an
//!   Auction if `n % 50` is 1, 2 or 3, else a Bid. Person and auction ids are
//!   dense from 1000 in event order; the "last person / last auction" seen by
//!   event `n` is derived arithmetically from `n`, as the reference does.
//! * **Deterministic.** Every field of event `n` is a function of
//!   `(seed, n, config)` only: the same seed and config give the same rows
//!   whatever the parallelism, batch sizes or emission speed.
//! * **One sequence.** Every source built from the same config sees the same
//!   events: the struct of event `n` in the combined source equals, field for
//!   field, the row of event `n` in the per-kind source of its kind.
//! * **Combined rows.** Exactly one of `person`, `auction`, `bid` is non-null
//!   in each row, the one `event_type` names; the fields of the null structs
//!   are null too (children carry the parent's validity), so reading a child
//!   column without its parent cannot pick up placeholder values. Top-level
//!   `date_time` equals the non-null struct's `date_time`.
//! * **Split.** Instance `i` of `p` emits the events it exposes (its kind, or
//!   all) with `n % p == i`, in increasing `n` (so its event time never
//!   decreases); the instances together emit each event exactly once.
//! * **Bound.** `events: Some(e)` bounds the global sequence to `0..e`, whichever
//!   exposure reads it.
//! * **Event time** of event `n` is `base_time_ms + floor(n * 1000 /
//!   event_rate)`; with `emit_rate` set, event `n` is emitted no earlier than
//!   its due time `start + n * 1e9 / emit_rate` and carries that due time as
//!   its entered time (so a stalled pipeline cannot hide its delay).
//!   Unpaced, a batch's rows carry the time it was built.
//! * **Checkpoints.** A reader's position is its next event number
//!   (`crate::rng::generator_position`, one table named after the source);
//!   a fresh reader of the same instance moved there emits exactly the rows
//!   that followed, event times included. Paced, its schedule restarts at
//!   its first poll (no burst for the time the pipeline was down), so only
//!   the entered times differ from the uninterrupted run's.

mod columns;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::schema_with_entered;
use millrace_core::{Error, EventTime, Result, Snapshot, SourceFactory, SourcePoll, SourceReader};

use crate::rng::{
    Cursor, EventRng, Pacer, TextPool, check_rate, check_split, event_time_ms, generator_position,
    seek_generator,
};

use columns::{CombinedFields, auction_columns, bid_columns, combined_columns, person_columns};

/// per-kind sources built from the same config agree on ids and times.
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Total events of the global sequence (all kinds); `None` = unbounded.
    pub events: Option<u64>,
    /// Event-time rate, events/s: event `n` has
    /// `date_time = base_time_ms + floor(n * 1000 / event_rate)`.
    pub event_rate: f64,
    /// `None`: emit as fast as possible. `Some(r)`: open loop, event `n` is
    /// due at `start + n * 1e9 / r` ns.
    pub emit_rate: Option<f64>,
    /// Event time of event 0, ms since the Unix epoch.
    pub base_time_ms: i64,
    /// Watermark bound declared by [`SourceFactory::event_time`].
    pub max_out_of_orderness_ms: i64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 42,
            events: None,
            event_rate: 10_000.0,
            emit_rate: None,
            // 2026-01-01T00:00:00Z
            base_time_ms: 1_767_225_600_000,
            max_out_of_orderness_ms: 4000,
        }
    }
}

/// Which events of the sequence a per-kind source emits; in the combined
/// source, what `event_type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NexmarkKind {
    Bid,
    Person,
    Auction,
}

impl NexmarkKind {
    /// The three kinds, in `event_type` order.
    pub const ALL: [NexmarkKind; 3] = [NexmarkKind::Person, NexmarkKind::Auction, NexmarkKind::Bid];

    /// Kind of event number `n`.
    pub fn of_event(n: u64) -> NexmarkKind {
        match n % TOTAL_PROPORTION {
            0 => NexmarkKind::Person,
            1..=3 => NexmarkKind::Auction,
            _ => NexmarkKind::Bid,
        }
    }

    /// The combined source's `event_type` of this kind: 0 person, 1
    /// auction, 2 bid (the convention of RisingWave and Arroyo).
    pub fn event_type(self) -> i32 {
        match self {
            NexmarkKind::Person => 0,
            NexmarkKind::Auction => 1,
            NexmarkKind::Bid => 2,
        }
    }

    /// The kind an `event_type` value names, if any.
    pub fn from_event_type(event_type: i32) -> Option<NexmarkKind> {
        match event_type {
            0 => Some(NexmarkKind::Person),
            1 => Some(NexmarkKind::Auction),
            2 => Some(NexmarkKind::Bid),
            _ => None,
        }
    }

    /// Name of this kind's struct column in the combined source.
    pub fn column_name(self) -> &'static str {
        match self {
            NexmarkKind::Person => "person",
            NexmarkKind::Auction => "auction",
            NexmarkKind::Bid => "bid",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            NexmarkKind::Bid => "bids",
            NexmarkKind::Person => "persons",
            NexmarkKind::Auction => "auctions",
        }
    }
}

// ---- The reference generator's constants -------------------------------

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// Sellers and bidders are drawn from the most recent people...
const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// ...including a few not registered yet (the reference does this too).
const PERSON_ID_LEAD: u64 = 10;
/// Non-hot bids go to the newest auctions, up to a few not opened yet.
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_CHANNELS_RATIO: u64 = 2;
/// Hot ids are the last id rounded down to a multiple of this.
const HOT_ID_STRIDE: i64 = 100;
const CHANNELS_NUMBER: u64 = 10_000;
/// Events it takes to open `NUM_IN_FLIGHT_AUCTIONS` auctions (expiry horizon).
const EVENTS_FOR_IN_FLIGHT_AUCTIONS: u64 =
    NUM_IN_FLIGHT_AUCTIONS as u64 * TOTAL_PROPORTION / AUCTION_PROPORTION;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
const MIN_STRING_LENGTH: usize = 3;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Fixed URLs of the hot channels; no `channel_id` parameter, since queries
/// map these channels to fixed ids by name.
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/srch/ads/item.htm?query=1",
    "https://www.nexmark.com/fcbk/feed/post/item.htm?query=1",
    "https://www.nexmark.com/baidu/srch/ads/item.htm?query=1",
    "https://www.nexmark.com/apple/store/app/item.htm?query=1",
];

/// Random-stream domains, so the kinds and the channel table never share draws.
const DOMAIN_EVENTS: u64 = 0x4e45_584d;
const DOMAIN_CHANNELS: u64 = 0x4348_414e;

// ---- Ids and times derived from the event number ------------------------

/// 0-based id of the newest person at event `n` (the person of `n`'s epoch).
#[inline]
fn last_base0_person_id(n: u64) -> i64 {
    (n / TOTAL_PROPORTION * PERSON_PROPORTION) as i64
}

/// 0-based id of the newest auction at event `n`; -1 before the first.
#[inline]
fn last_base0_auction_id(n: u64) -> i64 {
    let epoch = (n / TOTAL_PROPORTION) as i64;
    let offset = n % TOTAL_PROPORTION;
    let a = AUCTION_PROPORTION as i64;
    if offset < PERSON_PROPORTION {
        // A person event: the newest auction is the previous epoch's last.
        epoch * a - 1
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * a + a - 1
    } else {
        epoch * a + (offset - PERSON_PROPORTION) as i64
    }
}

/// One of the recently active people (possibly one about to register).
#[inline]
fn next_base0_person_id(rng: &mut EventRng, n: u64) -> i64 {
    let num_people = last_base0_person_id(n) as u64 + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    (num_people - active + rng.below(active + PERSON_ID_LEAD)) as i64
}

/// One of the newest auctions (possibly one about to open).
#[inline]
fn next_base0_auction_id(rng: &mut EventRng, n: u64) -> i64 {
    let last = last_base0_auction_id(n).max(0);
    let min = (last - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.below((last - min + 1 + AUCTION_ID_LEAD) as u64) as i64
}

/// Log-uniform price: `round(10^(6u) * 100)`, 100..=10^8.
#[inline]
fn next_price(rng: &mut EventRng) -> i64 {
    // exp is about twice as fast as powf; `+ 0.5` then truncation rounds a
    // positive value without the libm call `f64::round` compiles to.
    ((rng.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0 + 0.5) as i64
}

/// Length of `extra` that pads a record of `current` bytes to about
/// `desired` bytes: the missing part ±20% (the reference's rule).
#[inline]
fn extra_len(rng: &mut EventRng, current: usize, desired: usize) -> usize {
    if current >= desired {
        return 0;
    }
    let missing = desired - current;
    let delta = (missing as f64 * 0.2).round() as usize;
    missing - delta + rng.below(2 * delta as u64) as usize
}

/// Random-length string of `MIN_STRING_LENGTH..max` characters.
#[inline]
fn next_string(rng: &mut EventRng, pool: &'static TextPool, max: usize) -> &'static str {
    let len = MIN_STRING_LENGTH + rng.below((max - MIN_STRING_LENGTH) as u64) as usize;
    pool.text(rng, len)
}

// ---- Events -------------------------------------------------------------

/// Settings every event needs, resolved once per factory.
#[derive(Debug, Clone, Copy)]
struct Params {
    key: u64,
    base_time_ms: i64,
    event_rate: f64,
}

impl Params {
    #[inline]
    fn time(&self, n: u64) -> i64 {
        event_time_ms(self.base_time_ms, self.event_rate, n)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Bid<'a> {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: &'a str,
    url: &'a str,
    date_time: i64,
    extra: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Person {
    id: i64,
    first_name: &'static str,
    last_name: &'static str,
    email_user: &'static str,
    email_domain: &'static str,
    credit_card: [u16; 4],
    city: &'static str,
    state: &'static str,
    date_time: i64,
    extra: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Auction {
    id: i64,
    item_name: &'static str,
    description: &'static str,
    initial_bid: i64,
    reserve: i64,
    date_time: i64,
    expires: i64,
    seller: i64,
    category: i64,
    extra: &'static str,
}

/// The 10,000 non-hot channels and their URLs, a function of the seed (the
/// reference caches one random URL per channel number; so do we).
struct ChannelTable {
    channels: Vec<(String, String)>,
}

impl ChannelTable {
    fn new(seed: u64) -> Self {
        let key = EventRng::key(seed, DOMAIN_CHANNELS);
        let pool = TextPool::get();
        let channels = (0..CHANNELS_NUMBER)
            .map(|i| {
                let mut rng = EventRng::new(key, i);
                let mut url = String::with_capacity(80);
                url.push_str("https://www.nexmark.com/");
                for dir in 0..3 {
                    if dir > 0 {
                        url.push('/');
                    }
                    let len = 3 + rng.below(3) as usize;
                    url.push_str(pool.letters(&mut rng, len));
                }
                url.push_str("/item.htm?query=1");
                if rng.below(10) > 0 {
                    // The reference's id: the bit-reversed channel number.
                    let id = (i as i32).reverse_bits().unsigned_abs();
                    let _ = write!(url, "&channel_id={id}");
                }
                (format!("channel-{i}"), url)
            })
            .collect();
        ChannelTable { channels }
    }
}

fn gen_bid<'a>(p: &Params, channels: &'a ChannelTable, n: u64) -> Bid<'a> {
    let mut rng = EventRng::new(p.key, n);
    let pool = TextPool::get();
    let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
        last_base0_auction_id(n) / HOT_ID_STRIDE * HOT_ID_STRIDE
    } else {
        next_base0_auction_id(&mut rng, n)
    } + FIRST_AUCTION_ID;
    let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
        last_base0_person_id(n) / HOT_ID_STRIDE * HOT_ID_STRIDE + 1
    } else {
        next_base0_person_id(&mut rng, n)
    } + FIRST_PERSON_ID;
    let price = next_price(&mut rng);
    let (channel, url) = if rng.below(HOT_CHANNELS_RATIO) > 0 {
        let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
        (HOT_CHANNELS[i], HOT_URLS[i])
    } else {
        let i = rng.below(CHANNELS_NUMBER) as usize;
        match channels.channels.get(i) {
            Some((c, u)) => (c.as_str(), u.as_str()),
            None => (HOT_CHANNELS[0], HOT_URLS[0]),
        }
    };
    // The reference counts the four 8-byte fields as the record's size.
    let len = extra_len(&mut rng, 32, AVG_BID_BYTES);
    Bid {
        auction,
        bidder,
        price,
        channel,
        url,
        date_time: p.time(n),
        extra: pool.text(&mut rng, len),
    }
}

fn gen_person(p: &Params, n: u64) -> Person {
    let mut rng = EventRng::new(p.key, n);
    let pool = TextPool::get();
    let first_name = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
    let last_name = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
    let user_len = MIN_STRING_LENGTH + rng.below(5) as usize;
    let email_user = pool.letters(&mut rng, user_len);
    let domain_len = MIN_STRING_LENGTH + rng.below(3) as usize;
    let email_domain = pool.letters(&mut rng, domain_len);
    let credit_card = [(); 4].map(|_| rng.below(10_000) as u16);
    let city = CITIES[rng.below(CITIES.len() as u64) as usize];
    let state = STATES[rng.below(STATES.len() as u64) as usize];
    let size = 8
        + first_name.len()
        + 1
        + last_name.len()
        + email_user.len()
        + 1
        + email_domain.len()
        + 4
        + 19
        + city.len()
        + state.len();
    let len = extra_len(&mut rng, size, AVG_PERSON_BYTES);
    Person {
        id: last_base0_person_id(n) + FIRST_PERSON_ID,
        first_name,
        last_name,
        email_user,
        email_domain,
        credit_card,
        city,
        state,
        date_time: p.time(n),
        extra: pool.text(&mut rng, len),
    }
}

fn gen_auction(p: &Params, n: u64) -> Auction {
    let mut rng = EventRng::new(p.key, n);
    let pool = TextPool::get();
    let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
        last_base0_person_id(n) / HOT_ID_STRIDE * HOT_ID_STRIDE
    } else {
        next_base0_person_id(&mut rng, n)
    } + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
    let initial_bid = next_price(&mut rng);
    let reserve = initial_bid + next_price(&mut rng);
    let date_time = p.time(n);
    // Auctions last up to twice the event time in which 100 auctions open.
    let horizon = p
        .time(n.saturating_add(EVENTS_FOR_IN_FLIGHT_AUCTIONS))
        .saturating_sub(date_time);
    let expires = date_time
        .saturating_add(1)
        .saturating_add(rng.below(horizon.saturating_mul(2).max(1) as u64) as i64);
    let item_name = next_string(&mut rng, pool, 20);
    let description = next_string(&mut rng, pool, 100);
    let size = 8 + item_name.len() + description.len() + 5 * 8;
    let len = extra_len(&mut rng, size, AVG_AUCTION_BYTES);
    Auction {
        id: last_base0_auction_id(n) + FIRST_AUCTION_ID,
        item_name,
        description,
        initial_bid,
        reserve,
        date_time,
        expires,
        seller,
        category,
        extra: pool.text(&mut rng, len),
    }
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )
}

// ---- Source -----------------------------------------------------------------

/// What a source exposes of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposure {
    Kind(NexmarkKind),
    All,
}

/// A Nexmark source ([`SourceFactory`]): one kind in flat columns, or every
/// event in the combined layout ([`NexmarkSource::all`]). Sources built from
/// the same config see the same global sequence.
pub struct NexmarkSource {
    exposure: Exposure,
    config: NexmarkConfig,
    /// Emission start shared by all readers of this factory (paced mode).
    start_ns: Arc<OnceLock<i64>>,
    /// Built on the first reader that emits bids; shared by all of them.
    channels: OnceLock<Arc<ChannelTable>>,
}

impl NexmarkSource {
    fn with_exposure(exposure: Exposure, config: NexmarkConfig) -> Self {
        NexmarkSource {
            exposure,
            config,
            start_ns: Arc::new(OnceLock::new()),
            channels: OnceLock::new(),
        }
    }

    /// The events of one kind, in that kind's flat columns.
    pub fn new(kind: NexmarkKind, config: NexmarkConfig) -> Self {
        Self::with_exposure(Exposure::Kind(kind), config)
    }

    pub fn bids(config: NexmarkConfig) -> Self {
        Self::new(NexmarkKind::Bid, config)
    }

    pub fn persons(config: NexmarkConfig) -> Self {
        Self::new(NexmarkKind::Person, config)
    }

    pub fn auctions(config: NexmarkConfig) -> Self {
        Self::new(NexmarkKind::Auction, config)
    }

    /// Every event, in the combined layout of [`Self::combined_schema`]
    /// (source name `nexmark`).
    pub fn all(config: NexmarkConfig) -> Self {
        Self::with_exposure(Exposure::All, config)
    }

    /// The user columns of `kind` (without the entered column).
    pub fn schema_of(kind: NexmarkKind) -> SchemaRef {
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let fields = match kind {
            NexmarkKind::Bid => vec![
                int("auction"),
                int("bidder"),
                int("price"),
                text("channel"),
                text("url"),
                ts_field("date_time"),
                text("extra"),
            ],
            NexmarkKind::Person => vec![
                int("id"),
                text("name"),
                text("email_address"),
                text("credit_card"),
                text("city"),
                text("state"),
                ts_field("date_time"),
                text("extra"),
            ],
            NexmarkKind::Auction => vec![
                int("id"),
                text("item_name"),
                text("description"),
                int("initial_bid"),
                int("reserve"),
                ts_field("date_time"),
                ts_field("expires"),
                int("seller"),
                int("category"),
                text("extra"),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// The user columns of the combined source (without the entered column):
    /// `event_type` Int32, the nullable structs `person`, `auction` and `bid`
    /// (fields of [`Self::schema_of`] each), and `date_time`.
    pub fn combined_schema() -> SchemaRef {
        let strukt = |kind: NexmarkKind| {
            Field::new(
                kind.column_name(),
                DataType::Struct(Self::schema_of(kind).fields().clone()),
                true,
            )
        };
        Arc::new(Schema::new(vec![
            Field::new("event_type", DataType::Int32, false),
            strukt(NexmarkKind::Person),
            strukt(NexmarkKind::Auction),
            strukt(NexmarkKind::Bid),
            ts_field("date_time"),
        ]))
    }

    /// The kind a per-kind source emits; `None` for the combined source.
    pub fn kind(&self) -> Option<NexmarkKind> {
        match self.exposure {
            Exposure::Kind(kind) => Some(kind),
            Exposure::All => None,
        }
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    fn check_config(&self) -> Result<()> {
        let name = self.name();
        check_rate(&name, "event_rate", self.config.event_rate)?;
        if let Some(r) = self.config.emit_rate {
            check_rate(&name, "emit_rate", r)?;
        }
        if self.config.max_out_of_orderness_ms < 0 {
            return Err(Error::plan(format!(
                "{name}: max_out_of_orderness_ms must not be negative, got {}",
                self.config.max_out_of_orderness_ms
            )));
        }
        Ok(())
    }
}

impl SourceFactory for NexmarkSource {
    fn name(&self) -> String {
        match self.exposure {
            Exposure::Kind(kind) => format!("nexmark-{}", kind.plural()),
            Exposure::All => "nexmark".to_string(),
        }
    }

    fn schema(&self) -> SchemaRef {
        match self.exposure {
            Exposure::Kind(kind) => Self::schema_of(kind),
            Exposure::All => Self::combined_schema(),
        }
    }

    fn event_time(&self) -> Option<EventTime> {
        Some(EventTime::new(
            "date_time",
            self.config.max_out_of_orderness_ms,
        ))
    }

    fn create(&self, instance: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        check_split(&self.name(), instance, parallelism)?;
        self.check_config()?;
        let exposure = self.exposure;
        let accept = (0..TOTAL_PROPORTION)
            .map(|o| match exposure {
                Exposure::Kind(kind) => NexmarkKind::of_event(o) == kind,
                Exposure::All => true,
            })
            .collect();
        let channels = match exposure {
            Exposure::Kind(NexmarkKind::Bid) | Exposure::All => {
                Some(Arc::clone(self.channels.get_or_init(|| {
                    Arc::new(ChannelTable::new(self.config.seed))
                })))
            }
            Exposure::Kind(_) => None,
        };
        let user_schema = self.schema();
        let fields = match exposure {
            Exposure::All => Some(CombinedFields::new()),
            Exposure::Kind(_) => None,
        };
        Ok(Box::new(NexmarkReader {
            name: self.name(),
            exposure,
            params: Params {
                key: EventRng::key(self.config.seed, DOMAIN_EVENTS),
                base_time_ms: self.config.base_time_ms,
                event_rate: self.config.event_rate,
            },
            schema: schema_with_entered(&user_schema),
            fields,
            cursor: Cursor::new(instance, parallelism, accept, self.config.events),
            pacer: Pacer::new(self.config.emit_rate, Arc::clone(&self.start_ns)),
            channels,
            ns: Vec::new(),
            entered: Vec::new(),
        }))
    }
}

/// Largest batch built at once, whatever `max_rows` asks: keeps string
/// offsets far from the 2 GiB limit of `Utf8` (auctions are ~600 bytes).
const MAX_BATCH_ROWS: usize = 1 << 20;

struct NexmarkReader {
    /// The source's name, which also names its position's table.
    name: String,
    exposure: Exposure,
    params: Params,
    /// User columns plus the entered column, built once.
    schema: SchemaRef,
    /// The struct columns' fields (combined source only), built once.
    fields: Option<CombinedFields>,
    cursor: Cursor,
    pacer: Pacer,
    channels: Option<Arc<ChannelTable>>,
    /// Scratch: event numbers and entered times of the batch being built.
    ns: Vec<u64>,
    entered: Vec<i64>,
}

impl NexmarkReader {
    fn missing(&self, what: &str) -> Error {
        Error::Other(format!(
            "nexmark reader ({:?}) created without its {what}",
            self.exposure
        ))
    }
}

impl SourceReader for NexmarkReader {
    fn poll_batch(&mut self, max_rows: usize) -> Result<SourcePoll> {
        let max_rows = max_rows.min(MAX_BATCH_ROWS);
        if let Some(poll) =
            self.pacer
                .take(&mut self.cursor, max_rows, &mut self.ns, &mut self.entered)
        {
            return Ok(poll);
        }
        let p = &self.params;
        let mut columns = match self.exposure {
            Exposure::Kind(NexmarkKind::Bid) => match &self.channels {
                Some(channels) => bid_columns(p, channels, &self.ns),
                None => return Err(self.missing("channel table")),
            },
            Exposure::Kind(NexmarkKind::Person) => person_columns(p, &self.ns),
            Exposure::Kind(NexmarkKind::Auction) => auction_columns(p, &self.ns),
            Exposure::All => match (&self.channels, &self.fields) {
                (Some(channels), Some(fields)) => combined_columns(p, channels, fields, &self.ns)?,
                (None, _) => return Err(self.missing("channel table")),
                (_, None) => return Err(self.missing("struct fields")),
            },
        };
        columns.push(Arc::new(Int64Array::from(std::mem::take(
            &mut self.entered,
        ))));
        Ok(SourcePoll::Batch(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }

    fn position(&self) -> Result<Option<Snapshot>> {
        generator_position(&self.name, &self.cursor).map(Some)
    }

    fn seek(&mut self, position: &Snapshot) -> Result<()> {
        seek_generator(&self.name, position, &mut self.cursor, &mut self.pacer)
    }
}
