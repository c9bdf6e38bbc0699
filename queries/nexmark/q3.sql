-- Nexmark q3: people in Oregon, Idaho or California who sell in category 10:
-- name, city, state and auction id.
--
-- A join over the whole history would keep every person forever; here it is
-- an interval join. The generator picks an auction's seller among the last
-- 1,000 people registered (or one of the next 10 about to register): at most
-- 50,000 events back and 500 ahead, which at the default 10,000 events/s of
-- event time is 5 s and 0.05 s (50 s and 0.5 s at 1,000/s). The bound below
-- covers both, so the result equals the unbounded join's.
CREATE TABLE person (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'person', events = '10000000');
CREATE TABLE auction (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'auction', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT p.name, p.city, p.state, a.id
FROM auction a
JOIN person p
  ON a.seller = p.id
 AND a.date_time BETWEEN p.date_time - INTERVAL '10' SECOND AND p.date_time + INTERVAL '60' SECOND
WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA');
