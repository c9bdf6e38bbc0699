-- Nexmark q1: bids with the price converted to euros.
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid;
