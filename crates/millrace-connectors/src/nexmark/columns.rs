//! Arrow columns from generated events.
//!
//! Each kind has a column builder that takes an event (`push`) or a null
//! slot (`push_null`). Per-kind sources push only events, so their columns
//! carry no null buffers.
//!
//! The combined source makes one pass over the batch's event numbers,
//! generating each event once, pushing it into its kind's builder and a null
//! slot into the other two; so each kind's builder has one slot per row of
//! the batch, the struct's validity is "the row is of this kind", and every
//! child gets that same validity (primitive children share the buffer; string
//! builders record their own nulls). Null slots are written a run at a time
//! (the kinds come in runs: 1 person, 3 auctions, 46 bids per 50 events).
//!
//! Chosen over building compact per-kind arrays and scattering them with
//! `interleave`/`take` because it copies no string twice (bids' ~130 bytes
//! per row dominate the batch), makes one pass, and shares the builders with
//! the per-kind sources. Struct children must be as long as the struct, so
//! either way a null slot costs an 8-byte zero or a 4-byte offset per child:
//! about 110 bytes per row for the person and auction structs of bid rows
//! (a combined batch holds ~336 bytes per event, against ~214 for the same
//! events from the three per-kind sources).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, StringBuilder, StructArray, TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::Fields;
use millrace_core::Result;

use super::{
    Auction, Bid, ChannelTable, NexmarkKind, NexmarkSource, Params, Person, gen_auction, gen_bid,
    gen_person,
};

fn ints(values: Vec<i64>, nulls: &Option<NullBuffer>) -> ArrayRef {
    Arc::new(Int64Array::new(values.into(), nulls.clone()))
}

/// `k` more zeros: the values of null slots.
#[inline]
fn pad(values: &mut Vec<i64>, k: usize) {
    values.resize(values.len() + k, 0);
}

fn stamps(values: Vec<i64>, nulls: &Option<NullBuffer>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::new(values.into(), nulls.clone()))
}

/// Columns of [`NexmarkSource::schema_of`]`(Bid)`, in order.
struct BidColumns {
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    date_time: Vec<i64>,
    channel: StringBuilder,
    url: StringBuilder,
    extra: StringBuilder,
    /// Null slots not written yet (see [`BidColumns::push_null`]).
    pending_nulls: usize,
}

impl BidColumns {
    /// Room for `slots` rows of which at most `bids` hold a bid.
    fn with_capacity(slots: usize, bids: usize) -> Self {
        // Byte capacities are upper bounds (channel names <= 13 bytes, URLs
        // <= 81, extra < 83), so the builders never reallocate and copy;
        // pages that stay unused cost no memory.
        BidColumns {
            auction: Vec::with_capacity(slots),
            bidder: Vec::with_capacity(slots),
            price: Vec::with_capacity(slots),
            date_time: Vec::with_capacity(slots),
            channel: StringBuilder::with_capacity(slots, bids * 13),
            url: StringBuilder::with_capacity(slots, bids * 81),
            extra: StringBuilder::with_capacity(slots, bids * 83),
            pending_nulls: 0,
        }
    }

    #[inline]
    fn push(&mut self, b: &Bid<'_>) {
        self.flush_nulls();
        self.auction.push(b.auction);
        self.bidder.push(b.bidder);
        self.price.push(b.price);
        self.date_time.push(b.date_time);
        self.channel.append_value(b.channel);
        self.url.append_value(b.url);
        self.extra.append_value(b.extra);
    }

    #[inline]
    fn push_null(&mut self) {
        // Written at the next push or at finish, as one run: `append_nulls`
        // and `resize` cost far less per slot than a call per slot.
        self.pending_nulls += 1;
    }

    /// Writes the pending null slots (a run at a time: kinds come in runs).
    #[inline]
    fn flush_nulls(&mut self) {
        let k = std::mem::take(&mut self.pending_nulls);
        if k == 0 {
            return;
        }
        pad(&mut self.auction, k);
        pad(&mut self.bidder, k);
        pad(&mut self.price, k);
        pad(&mut self.date_time, k);
        self.channel.append_nulls(k);
        self.url.append_nulls(k);
        self.extra.append_nulls(k);
    }

    /// `nulls` must mark exactly the slots filled by `push_null`.
    fn finish(mut self, nulls: &Option<NullBuffer>) -> Vec<ArrayRef> {
        self.flush_nulls();
        vec![
            ints(self.auction, nulls),
            ints(self.bidder, nulls),
            ints(self.price, nulls),
            Arc::new(self.channel.finish()),
            Arc::new(self.url.finish()),
            stamps(self.date_time, nulls),
            Arc::new(self.extra.finish()),
        ]
    }
}

/// Columns of [`NexmarkSource::schema_of`]`(Person)`, in order.
struct PersonColumns {
    id: Vec<i64>,
    date_time: Vec<i64>,
    name: StringBuilder,
    email: StringBuilder,
    card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    extra: StringBuilder,
    /// Null slots not written yet (see [`BidColumns::push_null`]).
    pending_nulls: usize,
}

impl PersonColumns {
    /// Room for `slots` rows of which at most `persons` hold a person.
    fn with_capacity(slots: usize, persons: usize) -> Self {
        // Upper bounds of each value's length: no reallocation while building.
        PersonColumns {
            id: Vec::with_capacity(slots),
            date_time: Vec::with_capacity(slots),
            name: StringBuilder::with_capacity(slots, persons * 14),
            email: StringBuilder::with_capacity(slots, persons * 17),
            card: StringBuilder::with_capacity(slots, persons * 19),
            city: StringBuilder::with_capacity(slots, persons * 13),
            state: StringBuilder::with_capacity(slots, persons * 2),
            extra: StringBuilder::with_capacity(slots, persons * 180),
            pending_nulls: 0,
        }
    }

    #[inline]
    fn push(&mut self, r: &Person) {
        self.flush_nulls();
        self.id.push(r.id);
        self.date_time.push(r.date_time);
        // Writing into a string builder cannot fail; the value is finished
        // by the empty append.
        let _ = write!(self.name, "{} {}", r.first_name, r.last_name);
        self.name.append_value("");
        let _ = write!(self.email, "{}@{}.com", r.email_user, r.email_domain);
        self.email.append_value("");
        let [a, b, c, d] = r.credit_card;
        let _ = write!(self.card, "{a:04} {b:04} {c:04} {d:04}");
        self.card.append_value("");
        self.city.append_value(r.city);
        self.state.append_value(r.state);
        self.extra.append_value(r.extra);
    }

    #[inline]
    fn push_null(&mut self) {
        self.pending_nulls += 1;
    }

    /// Writes the pending null slots (a run at a time: kinds come in runs).
    #[inline]
    fn flush_nulls(&mut self) {
        let k = std::mem::take(&mut self.pending_nulls);
        if k == 0 {
            return;
        }
        pad(&mut self.id, k);
        pad(&mut self.date_time, k);
        self.name.append_nulls(k);
        self.email.append_nulls(k);
        self.card.append_nulls(k);
        self.city.append_nulls(k);
        self.state.append_nulls(k);
        self.extra.append_nulls(k);
    }

    /// `nulls` must mark exactly the slots filled by `push_null`.
    fn finish(mut self, nulls: &Option<NullBuffer>) -> Vec<ArrayRef> {
        self.flush_nulls();
        vec![
            ints(self.id, nulls),
            Arc::new(self.name.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.card.finish()),
            Arc::new(self.city.finish()),
            Arc::new(self.state.finish()),
            stamps(self.date_time, nulls),
            Arc::new(self.extra.finish()),
        ]
    }
}

/// Columns of [`NexmarkSource::schema_of`]`(Auction)`, in order.
struct AuctionColumns {
    id: Vec<i64>,
    initial_bid: Vec<i64>,
    reserve: Vec<i64>,
    date_time: Vec<i64>,
    expires: Vec<i64>,
    seller: Vec<i64>,
    category: Vec<i64>,
    item_name: StringBuilder,
    description: StringBuilder,
    extra: StringBuilder,
    /// Null slots not written yet (see [`BidColumns::push_null`]).
    pending_nulls: usize,
}

impl AuctionColumns {
    /// Room for `slots` rows of which at most `auctions` hold an auction.
    fn with_capacity(slots: usize, auctions: usize) -> Self {
        // Upper bounds of each value's length: no reallocation while building.
        AuctionColumns {
            id: Vec::with_capacity(slots),
            initial_bid: Vec::with_capacity(slots),
            reserve: Vec::with_capacity(slots),
            date_time: Vec::with_capacity(slots),
            expires: Vec::with_capacity(slots),
            seller: Vec::with_capacity(slots),
            category: Vec::with_capacity(slots),
            item_name: StringBuilder::with_capacity(slots, auctions * 20),
            description: StringBuilder::with_capacity(slots, auctions * 100),
            extra: StringBuilder::with_capacity(slots, auctions * 540),
            pending_nulls: 0,
        }
    }

    #[inline]
    fn push(&mut self, a: &Auction) {
        self.flush_nulls();
        self.id.push(a.id);
        self.initial_bid.push(a.initial_bid);
        self.reserve.push(a.reserve);
        self.date_time.push(a.date_time);
        self.expires.push(a.expires);
        self.seller.push(a.seller);
        self.category.push(a.category);
        self.item_name.append_value(a.item_name);
        self.description.append_value(a.description);
        self.extra.append_value(a.extra);
    }

    #[inline]
    fn push_null(&mut self) {
        self.pending_nulls += 1;
    }

    /// Writes the pending null slots (a run at a time: kinds come in runs).
    #[inline]
    fn flush_nulls(&mut self) {
        let k = std::mem::take(&mut self.pending_nulls);
        if k == 0 {
            return;
        }
        pad(&mut self.id, k);
        pad(&mut self.initial_bid, k);
        pad(&mut self.reserve, k);
        pad(&mut self.date_time, k);
        pad(&mut self.expires, k);
        pad(&mut self.seller, k);
        pad(&mut self.category, k);
        self.item_name.append_nulls(k);
        self.description.append_nulls(k);
        self.extra.append_nulls(k);
    }

    /// `nulls` must mark exactly the slots filled by `push_null`.
    fn finish(mut self, nulls: &Option<NullBuffer>) -> Vec<ArrayRef> {
        self.flush_nulls();
        vec![
            ints(self.id, nulls),
            Arc::new(self.item_name.finish()),
            Arc::new(self.description.finish()),
            ints(self.initial_bid, nulls),
            ints(self.reserve, nulls),
            stamps(self.date_time, nulls),
            stamps(self.expires, nulls),
            ints(self.seller, nulls),
            ints(self.category, nulls),
            Arc::new(self.extra.finish()),
        ]
    }
}

/// The per-kind user columns of the events `ns`.
pub(super) fn bid_columns(p: &Params, channels: &ChannelTable, ns: &[u64]) -> Vec<ArrayRef> {
    let mut columns = BidColumns::with_capacity(ns.len(), ns.len());
    for &n in ns {
        columns.push(&gen_bid(p, channels, n));
    }
    columns.finish(&None)
}

pub(super) fn person_columns(p: &Params, ns: &[u64]) -> Vec<ArrayRef> {
    let mut columns = PersonColumns::with_capacity(ns.len(), ns.len());
    for &n in ns {
        columns.push(&gen_person(p, n));
    }
    columns.finish(&None)
}

pub(super) fn auction_columns(p: &Params, ns: &[u64]) -> Vec<ArrayRef> {
    let mut columns = AuctionColumns::with_capacity(ns.len(), ns.len());
    for &n in ns {
        columns.push(&gen_auction(p, n));
    }
    columns.finish(&None)
}

/// Fields of the combined source's struct columns, resolved once per reader.
pub(super) struct CombinedFields {
    person: Fields,
    auction: Fields,
    bid: Fields,
}

impl CombinedFields {
    pub(super) fn new() -> Self {
        let fields = |kind| NexmarkSource::schema_of(kind).fields().clone();
        CombinedFields {
            person: fields(NexmarkKind::Person),
            auction: fields(NexmarkKind::Auction),
            bid: fields(NexmarkKind::Bid),
        }
    }
}

/// The user columns of [`NexmarkSource::combined_schema`] for the events
/// `ns` (of any kinds), in one pass.
pub(super) fn combined_columns(
    p: &Params,
    channels: &ChannelTable,
    fields: &CombinedFields,
    ns: &[u64],
) -> Result<Vec<ArrayRef>> {
    let rows = ns.len();
    // Exact per-kind counts size the string buffers (a cheap pass).
    let mut counts = [0usize; 3];
    for &n in ns {
        counts[NexmarkKind::of_event(n).event_type() as usize] += 1;
    }
    let [persons, auctions, bids] = counts;
    let mut person = PersonColumns::with_capacity(rows, persons);
    let mut auction = AuctionColumns::with_capacity(rows, auctions);
    let mut bid = BidColumns::with_capacity(rows, bids);
    let mut event_type = Vec::with_capacity(rows);
    let mut date_time = Vec::with_capacity(rows);
    for &n in ns {
        let kind = NexmarkKind::of_event(n);
        let time = match kind {
            NexmarkKind::Person => {
                let r = gen_person(p, n);
                person.push(&r);
                auction.push_null();
                bid.push_null();
                r.date_time
            }
            NexmarkKind::Auction => {
                let a = gen_auction(p, n);
                person.push_null();
                auction.push(&a);
                bid.push_null();
                a.date_time
            }
            NexmarkKind::Bid => {
                let b = gen_bid(p, channels, n);
                person.push_null();
                auction.push_null();
                bid.push(&b);
                b.date_time
            }
        };
        event_type.push(kind.event_type());
        date_time.push(time);
    }
    // Validity of one kind's struct: the rows of that kind (no buffer when
    // every row is of it, as the string builders do).
    let valid = |kind: NexmarkKind| {
        let t = kind.event_type();
        let nulls = NullBuffer::new(BooleanBuffer::collect_bool(rows, |i| event_type[i] == t));
        Some(nulls).filter(|n| n.null_count() > 0)
    };
    let strukt = |fields: &Fields, columns: Vec<ArrayRef>, nulls: Option<NullBuffer>| {
        StructArray::try_new(fields.clone(), columns, nulls).map(|s| Arc::new(s) as ArrayRef)
    };
    let nulls = valid(NexmarkKind::Person);
    let person = strukt(&fields.person, person.finish(&nulls), nulls)?;
    let nulls = valid(NexmarkKind::Auction);
    let auction = strukt(&fields.auction, auction.finish(&nulls), nulls)?;
    let nulls = valid(NexmarkKind::Bid);
    let bid = strukt(&fields.bid, bid.finish(&nulls), nulls)?;
    Ok(vec![
        Arc::new(Int32Array::from(event_type)),
        person,
        auction,
        bid,
        stamps(date_time, &None),
    ])
}
