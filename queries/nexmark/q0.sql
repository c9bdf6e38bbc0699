-- Nexmark q0: pass every bid through (source + sink overhead).
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT auction, bidder, price, channel, url, date_time, extra FROM bid;
