SET checkpoint_interval = '100ms';
CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '-1');
INSERT INTO nowhere SELECT * FROM bid WHERE price > 'x' GROUP BY hop(date_time, INTERVAL '0' SECOND, INTERVAL '1' SECOND);
