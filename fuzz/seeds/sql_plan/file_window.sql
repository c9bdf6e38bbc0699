CREATE TABLE src (ts TIMESTAMP(3), k BIGINT, v DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH (connector = 'file', path = 'in.jsonl', on_error = 'skip', max_future = '1 hour');
CREATE TABLE out WITH (connector = 'console');
INSERT INTO out SELECT k, tumble(ts, INTERVAL '10' SECOND) AS window, count(*) AS n, max(v) AS top
FROM src GROUP BY k, tumble(ts, INTERVAL '10' SECOND);
