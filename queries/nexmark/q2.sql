-- Nexmark q2: bids on every 123rd auction.
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT auction, price FROM bid WHERE auction % 123 = 0;
