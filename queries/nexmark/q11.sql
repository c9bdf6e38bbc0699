-- Nexmark q11: bids per bidder per session (a session ends after 10 s
-- without a bid from that bidder).
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT bidder, count(*) AS bid_count,
       session(date_time, INTERVAL '10' SECOND)['start'] AS window_start,
       session(date_time, INTERVAL '10' SECOND)['end'] AS window_end
FROM bid
GROUP BY bidder, session(date_time, INTERVAL '10' SECOND);
