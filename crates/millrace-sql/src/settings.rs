//! `SET name = value`: pipeline options in a pipeline file.

use std::time::Duration;

use millrace_runtime::PipelineConfig;

use crate::error::{SqlError, SqlResult};
use crate::interval::duration_text_ms;

const KNOWN: &str = "parallelism, workers, batch_size, latency_target, latency_warmup, source_alignment, pin_workers, barrier_every_rows";

/// Applies one setting to `config`.
pub fn apply(config: &mut PipelineConfig, name: &str, value: &str) -> SqlResult<()> {
    let bad = |why: &str| SqlError::new(format!("SET {name} = '{value}': {why}"));
    let count = || -> SqlResult<usize> {
        value
            .replace('_', "")
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("expected a whole number of at least 1"))
    };
    match name.to_lowercase().as_str() {
        "parallelism" => config.parallelism = count()?,
        "workers" => config.workers = count()?,
        "batch_size" => config.batch_size = count()?,
        "barrier_every_rows" => config.barrier_every_rows = Some(count()? as u64),
        "latency_target" => {
            config.latency_target = match value.to_lowercase().as_str() {
                "none" | "off" => None,
                text => {
                    let ms = parse_duration_setting(text).map_err(|e| bad(&e))?;
                    Some(ms)
                }
            }
        }
        "latency_warmup" => {
            config.latency_warmup = match value.to_lowercase().as_str() {
                "none" | "off" | "0" => Duration::ZERO,
                text => parse_duration_setting(text).map_err(|e| bad(&e))?,
            }
        }
        "source_alignment" => {
            config.source_alignment = match value.to_lowercase().as_str() {
                "none" | "off" => None,
                text => Some(parse_duration_setting(text).map_err(|e| bad(&e))?),
            }
        }
        "pin_workers" => {
            config.pin_workers = match value.to_lowercase().as_str() {
                "true" | "on" | "1" => true,
                "false" | "off" | "0" => false,
                _ => return Err(bad("expected true or false")),
            }
        }
        other => {
            return Err(SqlError::new(format!(
                "SET {other}: unknown setting (known: {KNOWN})"
            )));
        }
    }
    Ok(())
}

/// Durations of settings, which may be below a millisecond (`500us`).
fn parse_duration_setting(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(us) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
        let us: f64 = us
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not a duration"))?;
        if us > 0.0 && us.is_finite() {
            return Ok(Duration::from_nanos((us * 1000.0) as u64));
        }
        return Err(format!("'{text}' must be positive"));
    }
    let ms = duration_text_ms(text, None)?;
    if ms <= 0 {
        return Err(format!("'{text}' must be positive"));
    }
    Ok(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_and_reject_by_name() {
        let mut c = PipelineConfig::default();
        apply(&mut c, "parallelism", "2").unwrap();
        apply(&mut c, "latency_target", "1ms").unwrap();
        apply(&mut c, "pin_workers", "false").unwrap();
        assert_eq!(c.parallelism, 2);
        assert_eq!(c.latency_target, Some(Duration::from_millis(1)));
        assert!(!c.pin_workers);
        apply(&mut c, "latency_warmup", "500ms").unwrap();
        assert_eq!(c.latency_warmup, Duration::from_millis(500));
        apply(&mut c, "source_alignment", "2s").unwrap();
        assert_eq!(c.source_alignment, Some(Duration::from_secs(2)));
        apply(&mut c, "source_alignment", "none").unwrap();
        assert_eq!(c.source_alignment, None);
        apply(&mut c, "latency_target", "500us").unwrap();
        assert_eq!(c.latency_target, Some(Duration::from_micros(500)));
        let e = apply(&mut c, "paralelism", "2").unwrap_err().to_string();
        assert!(e.contains("known: parallelism"), "{e}");
        assert!(apply(&mut c, "parallelism", "0").is_err());
    }
}
