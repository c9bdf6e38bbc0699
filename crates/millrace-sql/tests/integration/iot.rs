//! The `iot` connector through SQL: readings arrive out of order (up to the
//! generator's max delay, which is also its watermark bound), so no row is
//! late and the windowed result equals a batch computation over the same
//! readings.

use crate::common::{assert_same_rows, batch_sql, late_rows, read_all, run_sql};
use millrace_connectors::iot::{IotConfig, IotSource};

#[test]
fn windowed_device_stats_equal_batch_sql() {
    let sql = "SET parallelism = 2;
        CREATE TABLE readings WITH (connector = 'iot', devices = '50', events = '30000', event_rate = '1000');
        CREATE TABLE out WITH (connector = 'console');
        INSERT INTO out
        SELECT device_id, tumble(ts, INTERVAL '5' SECOND)['start'] AS window_start,
               count(*) AS n, max(temperature) AS hottest, avg(voltage) AS voltage
        FROM readings WHERE humidity > 20
        GROUP BY device_id, tumble(ts, INTERVAL '5' SECOND);";
    let (streaming, summary) = run_sql(sql, &[]);
    assert_eq!(late_rows(&summary), 0);
    let readings = read_all(&IotSource::new(IotConfig {
        devices: 50,
        events: Some(30_000),
        event_rate: 1000.0,
        ..IotConfig::default()
    }));
    let expected = batch_sql(
        &[("readings", readings)],
        "SELECT device_id, date_bin(INTERVAL '5 seconds', ts, TIMESTAMP '1970-01-01T00:00:00'),
                count(*), max(temperature), avg(voltage)
         FROM readings WHERE humidity > 20 GROUP BY 1, 2",
    );
    assert!(expected.iter().map(|b| b.num_rows()).sum::<usize>() > 100);
    assert_same_rows(&streaming, &expected, "iot");
}
