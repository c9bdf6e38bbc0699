-- Keyed window state, measured by `millrace bench`: 100,000 devices, each
-- reporting once per second of event time, in 10 s tumbling windows with
-- three aggregates. The window operator reports its peak state (the key
-- table, the keys, the accumulators) in the run summary.
CREATE TABLE readings WITH (connector = 'iot', devices = '100000', events = '4000000', event_rate = '100000');
CREATE TABLE out WITH (connector = 'discard');

INSERT INTO out
SELECT device_id, tumble(ts, INTERVAL '10' SECOND) AS window,
       count(*) AS n, avg(temperature) AS temperature, max(temperature) AS hottest
FROM readings
GROUP BY device_id, tumble(ts, INTERVAL '10' SECOND);
