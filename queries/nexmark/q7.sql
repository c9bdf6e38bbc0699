-- Nexmark q7: the highest bid of each 10 s tumbling window, with its details.
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

CREATE VIEW max_price AS
SELECT tumble(date_time, INTERVAL '10' SECOND) AS window, max(price) AS price
FROM bid
GROUP BY tumble(date_time, INTERVAL '10' SECOND);

INSERT INTO out
SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
FROM bid b
JOIN max_price m
  ON tumble(b.date_time, INTERVAL '10' SECOND) = m.window AND b.price = m.price;
