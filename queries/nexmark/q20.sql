-- Nexmark q20: bids joined with their auction's details, category 10 only.
--
-- An interval join: the generator bids on one of the last 100 auctions opened
-- (or one of the next 10): about 1,700 events back and 170 ahead, 0.17 s and
-- 0.02 s at the default 10,000 events/s of event time (1.7 s and 0.2 s at
-- 1,000/s). The bound below covers both, so the result equals the unbounded
-- join's.
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE auction (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'auction', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, b.extra AS bid_extra,
       a.item_name, a.description, a.initial_bid, a.reserve, a.date_time AS auction_time, a.expires,
       a.seller, a.category, a.extra AS auction_extra
FROM bid b
JOIN auction a
  ON b.auction = a.id
 AND b.date_time BETWEEN a.date_time - INTERVAL '10' SECOND AND a.date_time + INTERVAL '60' SECOND
WHERE a.category = 10;
