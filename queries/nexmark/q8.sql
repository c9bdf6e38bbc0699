-- Nexmark q8: people who opened an auction in the same 10 s window in which
-- they registered.
CREATE TABLE person (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'person', events = '10000000');
CREATE TABLE auction (
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', kind = 'auction', events = '10000000');
CREATE TABLE out WITH (connector = 'discard');

CREATE VIEW new_people AS
SELECT id, name, tumble(date_time, INTERVAL '10' SECOND) AS window
FROM person
GROUP BY id, name, tumble(date_time, INTERVAL '10' SECOND);

CREATE VIEW sellers AS
SELECT seller, tumble(date_time, INTERVAL '10' SECOND) AS window
FROM auction
GROUP BY seller, tumble(date_time, INTERVAL '10' SECOND);

INSERT INTO out
SELECT p.id, p.name, p.window['start'] AS window_start
FROM new_people p
JOIN sellers s ON p.id = s.seller AND p.window = s.window;
