-- Nexmark q5: hot items. Per 10 s window sliding every 2 s, the auction(s)
-- with the most bids.
CREATE TABLE bid (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'bid', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

CREATE VIEW counts AS
SELECT auction, hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS window, count(*) AS num
FROM bid
GROUP BY auction, hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND);

INSERT INTO out
SELECT c.auction, c.num, c.window['start'] AS window_start, c.window['end'] AS window_end
FROM counts c
JOIN (SELECT window, max(num) AS max_num FROM counts GROUP BY window) m
  ON c.window = m.window AND c.num = m.max_num;
