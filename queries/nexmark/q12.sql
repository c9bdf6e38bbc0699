-- Nexmark q12: bids per bidder in 10 s windows of processing time.
-- proc_time = 'true' stamps each row with the wall clock when it is read
-- (column proc_time), and windows over it follow the clock.
CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '10000000', proc_time = 'true');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT bidder, count(*) AS bid_count,
       tumble(proc_time, INTERVAL '10' SECOND)['start'] AS window_start,
       tumble(proc_time, INTERVAL '10' SECOND)['end'] AS window_end
FROM bid
GROUP BY bidder, tumble(proc_time, INTERVAL '10' SECOND);
