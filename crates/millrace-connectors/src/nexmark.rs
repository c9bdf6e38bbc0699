//! The Nexmark auction generator (see `NEXMARK.md`): people register, open
//! auctions and bid, as one global sequence of numbered events.
//!
//! Guarantees:
//! * **The reference mix and ids.** Event `n` is a Person if `n % 50 == 0`, an
//!   Auction if `n % 50` is 1, 2 or 3, else a Bid. Person and auction ids are
//!   dense from 1000 in event order; the "last person / last auction" seen by
//!   event `n` is derived arithmetically from `n`, as the reference does.
//! * **Deterministic.** Every field of event `n` is a function of
//!   `(seed, n, config)` only: the same seed and config give the same rows
//!   whatever the parallelism, batch sizes or emission speed.
//! * **Split.** Instance `i` of `p` emits the events of its kind with
//!   `n % p == i`, in increasing `n` (so its event time never decreases); the
//!   instances together emit each event exactly once.
//! * **Event time** of event `n` is `base_time_ms + floor(n * 1000 /
//!   event_rate)`; with `emit_rate` set, event `n` is emitted no earlier than
//!   its due time `start + n * 1e9 / emit_rate` and carries that due time as
//!   its entered time (so a stalled pipeline cannot hide its delay).
//!
//! Per-kind sources generate only their own kind: the other events of the
//! sequence are skipped arithmetically, never built.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_core::batch::schema_with_entered;
use millrace_core::{Error, EventTime, Result, SourceFactory, SourcePoll, SourceReader};

use crate::rng::{Cursor, EventRng, Pacer, TextPool, check_rate, check_split, event_time_ms};

/// Parameters of the generated sequence. All kinds share one sequence, so
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

/// Which events of the sequence a source emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NexmarkKind {
    Bid,
    Person,
    Auction,
}

impl NexmarkKind {
    /// Kind of event number `n`.
    pub fn of_event(n: u64) -> NexmarkKind {
        match n % TOTAL_PROPORTION {
            0 => NexmarkKind::Person,
            1..=3 => NexmarkKind::Auction,
            _ => NexmarkKind::Bid,
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

// ---- Batches --------------------------------------------------------------

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )
}

fn ts_array(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values))
}

fn bid_columns(p: &Params, channels: &ChannelTable, ns: &[u64]) -> Vec<ArrayRef> {
    let rows = ns.len();
    let mut auction = Vec::with_capacity(rows);
    let mut bidder = Vec::with_capacity(rows);
    let mut price = Vec::with_capacity(rows);
    let mut date_time = Vec::with_capacity(rows);
    // Capacities are upper bounds (channel names <= 13 bytes, URLs <= 81,
    // extra < 83), so the builders never reallocate and copy; pages that
    // stay unused cost no memory.
    let mut channel = StringBuilder::with_capacity(rows, rows * 13);
    let mut url = StringBuilder::with_capacity(rows, rows * 81);
    let mut extra = StringBuilder::with_capacity(rows, rows * 83);
    for &n in ns {
        let b = gen_bid(p, channels, n);
        auction.push(b.auction);
        bidder.push(b.bidder);
        price.push(b.price);
        date_time.push(b.date_time);
        channel.append_value(b.channel);
        url.append_value(b.url);
        extra.append_value(b.extra);
    }
    vec![
        Arc::new(Int64Array::from(auction)),
        Arc::new(Int64Array::from(bidder)),
        Arc::new(Int64Array::from(price)),
        Arc::new(channel.finish()),
        Arc::new(url.finish()),
        ts_array(date_time),
        Arc::new(extra.finish()),
    ]
}

fn person_columns(p: &Params, ns: &[u64]) -> Vec<ArrayRef> {
    let rows = ns.len();
    let mut id = Vec::with_capacity(rows);
    let mut date_time = Vec::with_capacity(rows);
    // Upper bounds of each value's length: no reallocation while building.
    let mut name = StringBuilder::with_capacity(rows, rows * 14);
    let mut email = StringBuilder::with_capacity(rows, rows * 17);
    let mut card = StringBuilder::with_capacity(rows, rows * 19);
    let mut city = StringBuilder::with_capacity(rows, rows * 13);
    let mut state = StringBuilder::with_capacity(rows, rows * 2);
    let mut extra = StringBuilder::with_capacity(rows, rows * 180);
    for &n in ns {
        let r = gen_person(p, n);
        id.push(r.id);
        date_time.push(r.date_time);
        // Writing into a string builder cannot fail; the value is finished
        // by the empty append.
        let _ = write!(name, "{} {}", r.first_name, r.last_name);
        name.append_value("");
        let _ = write!(email, "{}@{}.com", r.email_user, r.email_domain);
        email.append_value("");
        let [a, b, c, d] = r.credit_card;
        let _ = write!(card, "{a:04} {b:04} {c:04} {d:04}");
        card.append_value("");
        city.append_value(r.city);
        state.append_value(r.state);
        extra.append_value(r.extra);
    }
    vec![
        Arc::new(Int64Array::from(id)),
        Arc::new(name.finish()),
        Arc::new(email.finish()),
        Arc::new(card.finish()),
        Arc::new(city.finish()),
        Arc::new(state.finish()),
        ts_array(date_time),
        Arc::new(extra.finish()),
    ]
}

fn auction_columns(p: &Params, ns: &[u64]) -> Vec<ArrayRef> {
    let rows = ns.len();
    let mut id = Vec::with_capacity(rows);
    let mut initial_bid = Vec::with_capacity(rows);
    let mut reserve = Vec::with_capacity(rows);
    let mut date_time = Vec::with_capacity(rows);
    let mut expires = Vec::with_capacity(rows);
    let mut seller = Vec::with_capacity(rows);
    let mut category = Vec::with_capacity(rows);
    // Upper bounds of each value's length: no reallocation while building.
    let mut item_name = StringBuilder::with_capacity(rows, rows * 20);
    let mut description = StringBuilder::with_capacity(rows, rows * 100);
    let mut extra = StringBuilder::with_capacity(rows, rows * 540);
    for &n in ns {
        let a = gen_auction(p, n);
        id.push(a.id);
        initial_bid.push(a.initial_bid);
        reserve.push(a.reserve);
        date_time.push(a.date_time);
        expires.push(a.expires);
        seller.push(a.seller);
        category.push(a.category);
        item_name.append_value(a.item_name);
        description.append_value(a.description);
        extra.append_value(a.extra);
    }
    vec![
        Arc::new(Int64Array::from(id)),
        Arc::new(item_name.finish()),
        Arc::new(description.finish()),
        Arc::new(Int64Array::from(initial_bid)),
        Arc::new(Int64Array::from(reserve)),
        ts_array(date_time),
        ts_array(expires),
        Arc::new(Int64Array::from(seller)),
        Arc::new(Int64Array::from(category)),
        Arc::new(extra.finish()),
    ]
}

// ---- Source -----------------------------------------------------------------

/// A per-kind Nexmark source ([`SourceFactory`]). Sources of different kinds
/// built from the same config see the same global sequence.
pub struct NexmarkSource {
    kind: NexmarkKind,
    config: NexmarkConfig,
    /// Emission start shared by all readers of this factory (paced mode).
    start_ns: Arc<OnceLock<i64>>,
    /// Built on the first bid reader; shared by all of them.
    channels: OnceLock<Arc<ChannelTable>>,
}

impl NexmarkSource {
    pub fn new(kind: NexmarkKind, config: NexmarkConfig) -> Self {
        NexmarkSource {
            kind,
            config,
            start_ns: Arc::new(OnceLock::new()),
            channels: OnceLock::new(),
        }
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

    pub fn kind(&self) -> NexmarkKind {
        self.kind
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
        format!("nexmark-{}", self.kind.plural())
    }

    fn schema(&self) -> SchemaRef {
        Self::schema_of(self.kind)
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
        let kind = self.kind;
        let accept = (0..TOTAL_PROPORTION)
            .map(|o| NexmarkKind::of_event(o) == kind)
            .collect();
        let channels = match kind {
            NexmarkKind::Bid => {
                Some(Arc::clone(self.channels.get_or_init(|| {
                    Arc::new(ChannelTable::new(self.config.seed))
                })))
            }
            _ => None,
        };
        Ok(Box::new(NexmarkReader {
            kind,
            params: Params {
                key: EventRng::key(self.config.seed, DOMAIN_EVENTS),
                base_time_ms: self.config.base_time_ms,
                event_rate: self.config.event_rate,
            },
            schema: schema_with_entered(&Self::schema_of(kind)),
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
    kind: NexmarkKind,
    params: Params,
    /// User columns plus the entered column, built once.
    schema: SchemaRef,
    cursor: Cursor,
    pacer: Pacer,
    channels: Option<Arc<ChannelTable>>,
    /// Scratch: event numbers and entered times of the batch being built.
    ns: Vec<u64>,
    entered: Vec<i64>,
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
        let mut columns = match (self.kind, &self.channels) {
            (NexmarkKind::Bid, Some(channels)) => bid_columns(&self.params, channels, &self.ns),
            (NexmarkKind::Person, _) => person_columns(&self.params, &self.ns),
            (NexmarkKind::Auction, _) => auction_columns(&self.params, &self.ns),
            (NexmarkKind::Bid, None) => {
                return Err(Error::Other(
                    "nexmark-bids: reader created without its channel table".into(),
                ));
            }
        };
        columns.push(Arc::new(Int64Array::from(std::mem::take(
            &mut self.entered,
        ))));
        Ok(SourcePoll::Batch(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use arrow::util::display::array_value_to_string;
    use millrace_core::ENTERED_COLUMN;
    use millrace_core::batch::strip_entered;

    use super::*;

    fn cfg(events: u64) -> NexmarkConfig {
        NexmarkConfig {
            events: Some(events),
            ..NexmarkConfig::default()
        }
    }

    /// Every batch of one reader, polled with `max_rows` until exhausted.
    fn drain(
        factory: &NexmarkSource,
        instance: usize,
        p: usize,
        max_rows: usize,
    ) -> Vec<RecordBatch> {
        let mut reader = factory.create(instance, p).unwrap();
        let mut out = Vec::new();
        loop {
            match reader.poll_batch(max_rows).unwrap() {
                SourcePoll::Batch(b) => {
                    assert!(b.num_rows() > 0 && b.num_rows() <= max_rows);
                    out.push(b);
                }
                SourcePoll::Exhausted => return out,
                SourcePoll::Pending { .. } => panic!("unpaced reader returned Pending"),
            }
        }
    }

    /// Rows as strings (without the entered column), for exact comparison.
    fn rows(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            let b = strip_entered(b);
            for r in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap())
                    .collect();
                out.push(cells.join("|"));
            }
        }
        out
    }

    fn count(batches: &[RecordBatch]) -> usize {
        batches.iter().map(|b| b.num_rows()).sum()
    }

    fn i64s(batches: &[RecordBatch], col: &str) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name(col).unwrap();
                match c.data_type() {
                    DataType::Int64 => c.as_primitive::<Int64Type>().values().to_vec(),
                    _ => c
                        .as_primitive::<TimestampMillisecondType>()
                        .values()
                        .to_vec(),
                }
            })
            .collect()
    }

    /// Event number of the k-th bid (k from 0).
    fn bid_n(k: u64) -> u64 {
        k / 46 * 50 + 4 + k % 46
    }

    /// Event number of the k-th auction (k from 0).
    fn auction_n(k: u64) -> u64 {
        k / 3 * 50 + 1 + k % 3
    }

    #[test]
    fn batches_have_schema_and_entered_column_last() {
        for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
            let f = NexmarkSource::new(kind, cfg(500));
            let batches = drain(&f, 0, 1, 64);
            let b = &batches[0];
            let schema = b.schema();
            let last = schema.fields().last().unwrap();
            assert_eq!(last.name(), ENTERED_COLUMN);
            assert_eq!(last.data_type(), &DataType::Int64);
            assert_eq!(strip_entered(b).schema(), NexmarkSource::schema_of(kind));
            assert!(b.columns().iter().all(|c| c.null_count() == 0));
        }
    }

    #[test]
    fn same_seed_same_rows_whatever_the_batch_size() {
        let a = rows(&drain(&NexmarkSource::bids(cfg(3000)), 0, 1, 1000));
        let b = rows(&drain(&NexmarkSource::bids(cfg(3000)), 0, 1, 7));
        assert_eq!(a.len(), 2760);
        assert_eq!(a, b);
        let a = rows(&drain(&NexmarkSource::auctions(cfg(3000)), 0, 1, 13));
        let b = rows(&drain(&NexmarkSource::auctions(cfg(3000)), 0, 1, 500));
        assert_eq!(a, b);
    }

    #[test]
    fn different_seed_different_rows() {
        let other = NexmarkConfig {
            seed: 43,
            ..cfg(1000)
        };
        for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
            let a = rows(&drain(&NexmarkSource::new(kind, cfg(1000)), 0, 1, 100));
            let b = rows(&drain(&NexmarkSource::new(kind, other.clone()), 0, 1, 100));
            assert_eq!(a.len(), b.len());
            let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
            assert!(
                same < a.len() / 10,
                "{kind:?}: {same} of {} rows equal",
                a.len()
            );
        }
    }

    #[test]
    fn instances_together_equal_the_single_sequence() {
        for kind in [NexmarkKind::Bid, NexmarkKind::Person, NexmarkKind::Auction] {
            let f = NexmarkSource::new(kind, cfg(5000));
            let mut single = rows(&drain(&f, 0, 1, 256));
            single.sort();
            for p in [2usize, 3] {
                let mut union = Vec::new();
                for i in 0..p {
                    let batches = drain(&f, i, p, 100);
                    // Each instance's event time never decreases.
                    let times = i64s(&batches, "date_time");
                    assert!(times.windows(2).all(|w| w[0] <= w[1]));
                    union.extend(rows(&batches));
                }
                union.sort();
                assert_eq!(union, single, "{kind:?} at parallelism {p}");
            }
        }
    }

    #[test]
    fn mix_is_2_6_92_per_50_events() {
        let n = 50 * 37;
        let persons = count(&drain(&NexmarkSource::persons(cfg(n)), 0, 1, 100));
        let auctions = count(&drain(&NexmarkSource::auctions(cfg(n)), 0, 1, 100));
        let bids = count(&drain(&NexmarkSource::bids(cfg(n)), 0, 1, 100));
        assert_eq!((persons, auctions, bids), (37, 111, 1702));
        // A bound inside an epoch cuts the kinds at the right places.
        let n = 50 * 37 + 3;
        let persons = count(&drain(&NexmarkSource::persons(cfg(n)), 0, 1, 100));
        let auctions = count(&drain(&NexmarkSource::auctions(cfg(n)), 0, 1, 100));
        let bids = count(&drain(&NexmarkSource::bids(cfg(n)), 0, 1, 100));
        assert_eq!((persons, auctions, bids), (38, 113, 1702));
    }

    #[test]
    fn ids_are_dense_from_1000() {
        let persons = i64s(&drain(&NexmarkSource::persons(cfg(10_000)), 0, 1, 64), "id");
        let want: Vec<i64> = (1000..1200).collect();
        assert_eq!(persons, want);
        let auctions = i64s(
            &drain(&NexmarkSource::auctions(cfg(10_000)), 0, 1, 64),
            "id",
        );
        let want: Vec<i64> = (1000..1600).collect();
        assert_eq!(auctions, want);
    }

    #[test]
    fn auction_fields_follow_the_rules() {
        let batches = drain(&NexmarkSource::auctions(cfg(50_000)), 0, 1, 500);
        let cats = i64s(&batches, "category");
        assert!(cats.iter().all(|c| (10..=14).contains(c)));
        let distinct: HashSet<i64> = cats.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
        let initial = i64s(&batches, "initial_bid");
        let reserve = i64s(&batches, "reserve");
        assert!(initial.iter().all(|p| (100..=100_000_000).contains(p)));
        assert!(initial.iter().zip(&reserve).all(|(i, r)| r > i));
        // Expiry: after the auction opens, within twice the time of 100 auctions
        // (1666 events = 166.6 ms at 10k events/s, so at most 1 + 2 * 167 ms).
        let opened = i64s(&batches, "date_time");
        let expires = i64s(&batches, "expires");
        assert!(
            opened
                .iter()
                .zip(&expires)
                .all(|(o, e)| *e > *o && *e <= *o + 1 + 2 * 167)
        );
        // Sellers exist or are about to register (at most 10 ahead).
        for (k, seller) in i64s(&batches, "seller").iter().enumerate() {
            let last_person = 1000 + last_base0_person_id(auction_n(k as u64));
            assert!(*seller >= 1000 && *seller <= last_person + 10);
        }
        for b in &batches {
            let names = b.column_by_name("item_name").unwrap().as_string::<i32>();
            let descs = b.column_by_name("description").unwrap().as_string::<i32>();
            for r in 0..b.num_rows() {
                assert!((3..20).contains(&names.value(r).len()));
                assert!((3..100).contains(&descs.value(r).len()));
            }
        }
    }

    #[test]
    fn bid_prices_are_log_uniform_in_range() {
        let batches = drain(&NexmarkSource::bids(cfg(100_000)), 0, 1, 4096);
        let prices = i64s(&batches, "price");
        assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
        // Log-uniform: each decade 10^2..10^8 gets about 1/6 of the bids.
        let mut decades = [0usize; 6];
        for p in &prices {
            let d = ((*p as f64).log10().floor() as usize).clamp(2, 7) - 2;
            decades[d] += 1;
        }
        for d in decades {
            let share = d as f64 / prices.len() as f64;
            assert!((0.14..0.19).contains(&share), "decade share {share}");
        }
    }

    #[test]
    fn event_time_follows_the_formula() {
        let config = NexmarkConfig {
            event_rate: 3000.0,
            base_time_ms: 5,
            ..cfg(20_000)
        };
        let times = i64s(
            &drain(&NexmarkSource::bids(config.clone()), 0, 1, 999),
            "date_time",
        );
        for (k, t) in times.iter().enumerate() {
            let n = bid_n(k as u64) as i64;
            assert_eq!(*t, 5 + n * 1000 / 3000, "bid {k}");
        }
        let times = i64s(
            &drain(&NexmarkSource::persons(config), 0, 1, 999),
            "date_time",
        );
        for (k, t) in times.iter().enumerate() {
            assert_eq!(*t, 5 + (k as i64 * 50) / 3, "person {k}");
        }
    }

    #[test]
    fn events_bound_is_exact() {
        let f = NexmarkSource::bids(cfg(1004));
        let mut reader = f.create(0, 1).unwrap();
        let SourcePoll::Batch(b) = reader.poll_batch(10_000).unwrap() else {
            panic!("expected a batch");
        };
        // Events 0..1004: 20 full epochs (920 bids) and none of event 1000..1003.
        assert_eq!(b.num_rows(), 920);
        assert!(matches!(
            reader.poll_batch(10).unwrap(),
            SourcePoll::Exhausted
        ));
        assert!(matches!(
            reader.poll_batch(10).unwrap(),
            SourcePoll::Exhausted
        ));
        let f = NexmarkSource::bids(cfg(1005));
        assert_eq!(count(&drain(&f, 0, 1, 100)), 921);
        assert_eq!(count(&drain(&NexmarkSource::bids(cfg(0)), 0, 1, 100)), 0);
    }

    #[test]
    fn hot_ids_have_their_share() {
        let batches = drain(&NexmarkSource::bids(cfg(200_000)), 0, 1, 4096);
        let auctions = i64s(&batches, "auction");
        let bidders = i64s(&batches, "bidder");
        let (mut hot_auction, mut hot_bidder) = (0usize, 0usize);
        for (k, (a, b)) in auctions.iter().zip(&bidders).enumerate() {
            let n = bid_n(k as u64);
            if *a == 1000 + last_base0_auction_id(n) / 100 * 100 {
                hot_auction += 1;
            }
            if *b == 1000 + last_base0_person_id(n) / 100 * 100 + 1 {
                hot_bidder += 1;
            }
            // Non-hot auctions are among the newest (last - 100 .. last + 10).
            let last = 1000 + last_base0_auction_id(n);
            assert!(*a >= 1000 && *a <= last + 10);
        }
        let total = auctions.len() as f64;
        let a = hot_auction as f64 / total;
        let b = hot_bidder as f64 / total;
        assert!((0.49..0.53).contains(&a), "hot auction share {a}");
        assert!((0.74..0.77).contains(&b), "hot bidder share {b}");

        let sellers = drain(&NexmarkSource::auctions(cfg(200_000)), 0, 1, 4096);
        let hot = i64s(&sellers, "seller")
            .iter()
            .enumerate()
            .filter(|(k, s)| **s == 1000 + last_base0_person_id(auction_n(*k as u64)) / 100 * 100)
            .count();
        let s = hot as f64 / sellers.iter().map(|b| b.num_rows()).sum::<usize>() as f64;
        assert!((0.74..0.77).contains(&s), "hot seller share {s}");
    }

    #[test]
    fn channels_and_urls_follow_the_rules() {
        let batches = drain(&NexmarkSource::bids(cfg(50_000)), 0, 1, 4096);
        let mut hot = 0usize;
        let mut with_id = 0usize;
        let mut other = 0usize;
        for b in &batches {
            let ch = b.column_by_name("channel").unwrap().as_string::<i32>();
            let url = b.column_by_name("url").unwrap().as_string::<i32>();
            let extra = b.column_by_name("extra").unwrap().as_string::<i32>();
            for r in 0..b.num_rows() {
                let (c, u) = (ch.value(r), url.value(r));
                assert!(u.starts_with("https://www.nexmark.com/"));
                assert_eq!(u.split('/').count(), 7, "{u}");
                if let Some(i) = HOT_CHANNELS.iter().position(|h| *h == c) {
                    assert_eq!(u, HOT_URLS[i]);
                    hot += 1;
                } else {
                    let i: u64 = c.strip_prefix("channel-").unwrap().parse().unwrap();
                    assert!(i < CHANNELS_NUMBER);
                    other += 1;
                    if u.contains("&channel_id=") {
                        with_id += 1;
                    }
                }
                // Bids pad to ~100 bytes: 68 bytes of extra ±20%.
                assert!((54..83).contains(&extra.value(r).len()));
            }
        }
        let share = hot as f64 / (hot + other) as f64;
        assert!((0.48..0.52).contains(&share), "hot channel share {share}");
        let share = with_id as f64 / other as f64;
        assert!((0.85..0.95).contains(&share), "channel_id share {share}");
    }

    #[test]
    fn persons_follow_the_rules() {
        let batches = drain(&NexmarkSource::persons(cfg(100_000)), 0, 1, 512);
        let mut states = HashSet::new();
        for b in &batches {
            let name = b.column_by_name("name").unwrap().as_string::<i32>();
            let email = b
                .column_by_name("email_address")
                .unwrap()
                .as_string::<i32>();
            let card = b.column_by_name("credit_card").unwrap().as_string::<i32>();
            let city = b.column_by_name("city").unwrap().as_string::<i32>();
            let state = b.column_by_name("state").unwrap().as_string::<i32>();
            let extra = b.column_by_name("extra").unwrap().as_string::<i32>();
            for r in 0..b.num_rows() {
                let (first, last) = name.value(r).split_once(' ').unwrap();
                assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
                let e = email.value(r);
                assert!(e.ends_with(".com") && e.contains('@'), "{e}");
                let c = card.value(r);
                assert_eq!(c.len(), 19);
                assert!(
                    c.split(' ')
                        .all(|g| g.len() == 4 && g.bytes().all(|d| d.is_ascii_digit()))
                );
                assert!(CITIES.contains(&city.value(r)));
                assert!(STATES.contains(&state.value(r)));
                states.insert(state.value(r).to_string());
                // The whole record comes to about 200 bytes.
                let size = 8
                    + name.value(r).len()
                    + e.len()
                    + c.len()
                    + city.value(r).len()
                    + state.value(r).len()
                    + extra.value(r).len();
                assert!((150..=250).contains(&size), "person of {size} bytes");
            }
        }
        assert_eq!(states.len(), 6);
    }

    #[test]
    fn paced_reader_waits_for_due_time() {
        // 1e-3 events/s: event n is due n * 1e12 ns after the start.
        let config = NexmarkConfig {
            emit_rate: Some(1e-3),
            ..NexmarkConfig::default()
        };
        let bids = NexmarkSource::bids(config.clone());
        let mut reader = bids.create(0, 1).unwrap();
        let poll = reader.poll_batch(100).unwrap();
        let start = *bids.start_ns.get().unwrap();
        // The first bid is event 4, due 4000 s after the start.
        match poll {
            SourcePoll::Pending { wake_at_ns } => {
                assert_eq!(wake_at_ns, Some(start + 4_000_000_000_000));
            }
            other => panic!("expected Pending, got {other:?}"),
        }

        let persons = NexmarkSource::persons(config);
        let mut r0 = persons.create(0, 2).unwrap();
        let mut r1 = persons.create(1, 2).unwrap();
        // Event 0 is due at the start: it comes out, stamped with its due time.
        let SourcePoll::Batch(b) = r0.poll_batch(100).unwrap() else {
            panic!("event 0 is due at once");
        };
        let start = *persons.start_ns.get().unwrap();
        assert_eq!(b.num_rows(), 1);
        let entered = millrace_core::entered_column(&b).unwrap();
        assert_eq!(entered.value(0), start);
        match r0.poll_batch(100).unwrap() {
            SourcePoll::Pending { wake_at_ns } => {
                assert_eq!(wake_at_ns, Some(start + 50_000_000_000_000));
            }
            other => panic!("expected Pending, got {other:?}"),
        }
        // Persons are the even events 0, 50, 100...: instance 1 of 2 has none
        // and shares the same start.
        assert!(matches!(r1.poll_batch(100).unwrap(), SourcePoll::Exhausted));
    }

    #[test]
    fn unpaced_entered_is_the_build_time() {
        let before = millrace_core::time::now_ns();
        let batches = drain(&NexmarkSource::bids(cfg(200)), 0, 1, 1000);
        let after = millrace_core::time::now_ns();
        let entered = millrace_core::entered_column(&batches[0]).unwrap();
        let first = entered.value(0);
        assert!(first >= before && first <= after);
        assert!(entered.values().iter().all(|v| *v == first));
    }

    #[test]
    fn bad_configs_are_errors() {
        let f = NexmarkSource::bids(NexmarkConfig::default());
        assert!(f.create(0, 0).is_err());
        assert!(f.create(2, 2).is_err());
        for (rate, emit) in [
            (0.0, None),
            (f64::NAN, None),
            (1.0, Some(-1.0)),
            (1.0, Some(f64::INFINITY)),
        ] {
            let f = NexmarkSource::bids(NexmarkConfig {
                event_rate: rate,
                emit_rate: emit,
                ..NexmarkConfig::default()
            });
            assert!(f.create(0, 1).is_err(), "rate {rate} emit {emit:?}");
        }
    }

    #[test]
    fn event_time_declaration() {
        let f = NexmarkSource::auctions(NexmarkConfig {
            max_out_of_orderness_ms: 1234,
            ..NexmarkConfig::default()
        });
        assert_eq!(f.event_time(), Some(EventTime::new("date_time", 1234)));
        assert_eq!(f.name(), "nexmark-auctions");
    }
}
