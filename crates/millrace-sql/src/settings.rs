//! `SET name = value`: pipeline options in a pipeline file.

use std::path::PathBuf;
use std::time::Duration;

use millrace_runtime::checkpoint::CheckpointConfig;
use millrace_runtime::{ExchangeBatchingMode, PipelineConfig};

use crate::error::{SqlError, SqlResult};
use crate::interval::duration_text_ms;

const KNOWN: &str = "parallelism, workers, batch_size, latency_target, exchange_batching, latency_warmup, source_alignment, pin_workers, barrier_every_rows, two_phase_aggregation, checkpoint_interval, checkpoint_dir, checkpoint_retain, checkpoint_timeout, checkpoint_min_pause, checkpoint_max_concurrent";

/// Everything `SET` can change: the runtime's configuration and the
/// planner's choices.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: PipelineConfig,
    /// Aggregates without keys over tumbling or hopping windows run in two
    /// phases: partial where the rows are, final at one instance
    /// (`millrace_sql_ops::window_agg::AggPhase`). On by default.
    pub two_phase_aggregation: bool,
    /// `checkpoint_interval` and the other `checkpoint_*` settings; the
    /// directory is filled in when planning ends (`PlanOptions`).
    pub checkpoint: Option<CheckpointConfig>,
    /// `checkpoint_dir`, when set.
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config: PipelineConfig::default(),
            two_phase_aggregation: true,
            checkpoint: None,
            checkpoint_dir: None,
        }
    }
}

/// Applies one setting.
pub fn apply(settings: &mut Settings, name: &str, value: &str) -> SqlResult<()> {
    let bad = |why: &str| SqlError::new(format!("SET {name} = '{value}': {why}"));
    let flag = || -> SqlResult<bool> {
        match value.to_lowercase().as_str() {
            "true" | "on" | "1" => Ok(true),
            "false" | "off" | "0" => Ok(false),
            _ => Err(bad("expected true or false")),
        }
    };
    let config = &mut settings.config;
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
        "pin_workers" => config.pin_workers = flag()?,
        "exchange_batching" => {
            config.exchange_batching = match value.to_lowercase().as_str() {
                "adaptive" | "on" | "true" => ExchangeBatchingMode::Adaptive,
                "always" => ExchangeBatchingMode::Always,
                "off" | "false" | "none" => ExchangeBatchingMode::Off,
                _ => return Err(bad("expected adaptive, always or off")),
            }
        }
        "two_phase_aggregation" => settings.two_phase_aggregation = flag()?,
        "checkpoint_interval" => {
            settings.checkpoint = match value.to_lowercase().as_str() {
                "off" | "none" | "false" => None,
                text => {
                    let interval = parse_duration_setting(text).map_err(|e| bad(&e))?;
                    let mut c = settings
                        .checkpoint
                        .take()
                        .unwrap_or_else(|| CheckpointConfig::new(interval, PathBuf::new()));
                    c.interval = interval;
                    Some(c)
                }
            }
        }
        "checkpoint_dir" => settings.checkpoint_dir = Some(PathBuf::from(value)),
        "checkpoint_retain"
        | "checkpoint_timeout"
        | "checkpoint_min_pause"
        | "checkpoint_max_concurrent" => {
            let Some(c) = settings.checkpoint.as_mut() else {
                return Err(bad("set checkpoint_interval first: checkpoints are off"));
            };
            match name.to_lowercase().as_str() {
                "checkpoint_retain" => c.retain = count()?,
                "checkpoint_max_concurrent" => c.max_in_flight = count()?,
                "checkpoint_timeout" => {
                    c.timeout = parse_duration_setting(value).map_err(|e| bad(&e))?
                }
                _ => {
                    c.min_pause = match value.to_lowercase().as_str() {
                        "0" | "none" | "off" => Duration::ZERO,
                        text => parse_duration_setting(text).map_err(|e| bad(&e))?,
                    }
                }
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
        let mut s = Settings::default();
        let c = &mut s;
        apply(c, "parallelism", "2").unwrap();
        apply(c, "latency_target", "1ms").unwrap();
        apply(c, "pin_workers", "false").unwrap();
        assert_eq!(c.config.parallelism, 2);
        assert_eq!(c.config.latency_target, Some(Duration::from_millis(1)));
        assert!(!c.config.pin_workers);
        apply(c, "latency_warmup", "500ms").unwrap();
        assert_eq!(c.config.latency_warmup, Duration::from_millis(500));
        apply(c, "source_alignment", "2s").unwrap();
        assert_eq!(c.config.source_alignment, Some(Duration::from_secs(2)));
        apply(c, "source_alignment", "none").unwrap();
        assert_eq!(c.config.source_alignment, None);
        apply(c, "latency_target", "500us").unwrap();
        assert_eq!(c.config.latency_target, Some(Duration::from_micros(500)));
        let e = apply(c, "paralelism", "2").unwrap_err().to_string();
        assert!(e.contains("known: parallelism"), "{e}");
        assert!(apply(c, "parallelism", "0").is_err());
        assert!(c.two_phase_aggregation);
        apply(c, "two_phase_aggregation", "off").unwrap();
        assert!(!c.two_phase_aggregation);
        assert!(apply(c, "two_phase_aggregation", "maybe").is_err());
        assert_eq!(c.config.exchange_batching, ExchangeBatchingMode::Adaptive);
        apply(c, "exchange_batching", "always").unwrap();
        assert_eq!(c.config.exchange_batching, ExchangeBatchingMode::Always);
        apply(c, "exchange_batching", "off").unwrap();
        assert_eq!(c.config.exchange_batching, ExchangeBatchingMode::Off);
        assert!(apply(c, "exchange_batching", "sometimes").is_err());
        let e = apply(c, "checkpoint_retain", "2").unwrap_err().to_string();
        assert!(e.contains("checkpoint_interval first"), "{e}");
        apply(c, "checkpoint_interval", "100ms").unwrap();
        apply(c, "checkpoint_retain", "2").unwrap();
        apply(c, "checkpoint_timeout", "5s").unwrap();
        let chk = c.checkpoint.as_ref().unwrap();
        assert_eq!(chk.interval, Duration::from_millis(100));
        assert_eq!((chk.retain, chk.timeout), (2, Duration::from_secs(5)));
        apply(c, "checkpoint_interval", "off").unwrap();
        assert!(c.checkpoint.is_none());
    }
}
