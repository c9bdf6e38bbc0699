//! `SET name = value`: pipeline options in a pipeline file.

use std::path::PathBuf;
use std::time::Duration;

use millrace_runtime::checkpoint::{CheckpointConfig, RestartStrategy};
use millrace_runtime::{ExchangeBatchingMode, PipelineConfig};

use crate::error::{SqlError, SqlResult};
use crate::interval::duration_text_ms;

const KNOWN: &str = "parallelism, workers, batch_size, latency_target, exchange_batching, latency_warmup, latency_breakdown, source_alignment, pin_workers, barrier_every_rows, two_phase_aggregation, checkpoint_interval, checkpoint_dir, checkpoint_retain, checkpoint_timeout, checkpoint_min_pause, checkpoint_max_concurrent, restart_strategy, restart_attempts, restart_delay, restart_max_delay, http, alert.<name>, alert_webhook";

/// Everything `SET` can change: the runtime's configuration and the
/// planner's choices.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: PipelineConfig,
    /// Aggregates without keys over tumbling or hopping windows run in two
    /// phases: partial where the rows are, final at one instance
    /// (`millrace_sql_ops::window_agg::AggPhase`). On by default.
    pub two_phase_aggregation: bool,
    /// The `checkpoint_*` and `restart_*` settings; they take effect when
    /// `checkpoint_interval` turns checkpoints on (the directory is filled
    /// in when planning ends: `PlanOptions`).
    pub checkpoint: CheckpointConfig,
    /// `checkpoint_interval` is set (and not `off`).
    pub checkpointing: bool,
    /// `checkpoint_dir`, when set.
    pub checkpoint_dir: Option<PathBuf>,
    /// The checkpoint and restart settings given, to refuse them when
    /// checkpoints stay off.
    pub checkpoint_settings: Vec<String>,
    restart: RestartSettings,
    /// `http`: where the program running the pipeline serves its live
    /// endpoint; unset, the program decides (`millrace run`: on).
    pub http: Option<HttpSetting>,
    /// `alert.<name>` rules as written (checked and evaluated by the
    /// program that serves the live endpoint), and `alert_webhook`.
    pub alerts: Vec<(String, String)>,
    pub alert_webhook: Option<String>,
}

/// `SET http = 'HOST:PORT'` or `'off'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpSetting {
    Off,
    At(String),
}

/// `restart_strategy` and its parameters, combined once planning ends.
#[derive(Clone, Debug)]
struct RestartSettings {
    strategy: String,
    attempts: u32,
    delay: Duration,
    max_delay: Duration,
}

impl Settings {
    /// The checkpoint configuration the settings make, `None` when
    /// checkpoints are off; an error names a setting that has no effect.
    pub fn checkpoint_config(&self) -> SqlResult<Option<CheckpointConfig>> {
        if !self.checkpointing {
            return match self.checkpoint_settings.first() {
                Some(name) => Err(SqlError::new(format!(
                    "SET {name}: checkpoints are off (turn them on with SET checkpoint_interval = '1s')"
                ))),
                None => Ok(None),
            };
        }
        let r = &self.restart;
        let mut c = self.checkpoint.clone();
        c.restart = match r.strategy.as_str() {
            "none" | "off" => RestartStrategy::None,
            "fixed-delay" | "fixed_delay" => RestartStrategy::FixedDelay {
                attempts: r.attempts,
                delay: r.delay,
            },
            _ => RestartStrategy::Exponential {
                attempts: r.attempts,
                delay: r.delay,
                max_delay: r.max_delay,
            },
        };
        Ok(Some(c))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config: PipelineConfig::default(),
            two_phase_aggregation: true,
            checkpoint: CheckpointConfig::new(Duration::from_secs(1), PathBuf::new()),
            checkpointing: false,
            checkpoint_dir: None,
            checkpoint_settings: Vec::new(),
            // Connector failures often pass (a broker restarts, a disk is
            // freed): a few restarts, further and further apart.
            restart: RestartSettings {
                strategy: "exponential".into(),
                attempts: 5,
                delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(30),
            },
            http: None,
            alerts: Vec::new(),
            alert_webhook: None,
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
        "latency_breakdown" => {
            config.latency_breakdown = match value.to_lowercase().as_str() {
                "none" | "off" => None,
                text => match parse_duration_setting(text).map_err(|e| bad(&e))? {
                    d if d.is_zero() => return Err(bad("expected an interval above zero, or off")),
                    d => Some(d),
                },
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
        "alert_webhook" => {
            if !value.starts_with("http://") {
                return Err(bad("expected an http:// URL"));
            }
            settings.alert_webhook = Some(value.to_string());
        }
        alert if alert.starts_with("alert.") && alert.len() > "alert.".len() => {
            let rule = alert["alert.".len()..].to_string();
            settings.alerts.retain(|(name, _)| *name != rule);
            settings.alerts.push((rule, value.to_string()));
        }
        "http" => {
            settings.http = Some(match value.to_lowercase().as_str() {
                "off" | "none" | "false" => HttpSetting::Off,
                _ if value.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok()
                }) =>
                {
                    HttpSetting::At(value.to_string())
                }
                _ => return Err(bad("expected HOST:PORT (e.g. 127.0.0.1:9464) or off")),
            })
        }
        "checkpoint_interval" => match value.to_lowercase().as_str() {
            "off" | "none" | "false" => settings.checkpointing = false,
            text => {
                settings.checkpoint.interval = parse_duration_setting(text).map_err(|e| bad(&e))?;
                settings.checkpointing = true;
            }
        },
        checkpoint_setting @ ("checkpoint_dir"
        | "checkpoint_retain"
        | "checkpoint_timeout"
        | "checkpoint_min_pause"
        | "checkpoint_max_concurrent"
        | "restart_strategy"
        | "restart_attempts"
        | "restart_delay"
        | "restart_max_delay") => {
            let c = &mut settings.checkpoint;
            let r = &mut settings.restart;
            let duration = || parse_duration_setting(value).map_err(|e| bad(&e));
            match checkpoint_setting {
                "checkpoint_dir" => settings.checkpoint_dir = Some(PathBuf::from(value)),
                "checkpoint_retain" => c.retain = count()?,
                "checkpoint_max_concurrent" => c.max_in_flight = count()?,
                "checkpoint_timeout" => c.timeout = duration()?,
                "checkpoint_min_pause" => {
                    c.min_pause = match value.to_lowercase().as_str() {
                        "0" | "none" | "off" => Duration::ZERO,
                        _ => duration()?,
                    }
                }
                "restart_strategy" => {
                    let strategy = value.to_lowercase();
                    if !["none", "off", "fixed-delay", "fixed_delay", "exponential"]
                        .contains(&strategy.as_str())
                    {
                        return Err(bad("expected none, fixed-delay or exponential"));
                    }
                    r.strategy = strategy;
                }
                "restart_attempts" => {
                    r.attempts = value
                        .parse()
                        .map_err(|_| bad("expected a whole number of restarts"))?
                }
                "restart_delay" => {
                    r.delay = match value.to_lowercase().as_str() {
                        "0" | "none" => Duration::ZERO,
                        _ => duration()?,
                    }
                }
                _ => r.max_delay = duration()?,
            }
            settings
                .checkpoint_settings
                .push(checkpoint_setting.to_string());
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
        apply(c, "latency_breakdown", "10ms").unwrap();
        assert_eq!(c.config.latency_breakdown, Some(Duration::from_millis(10)));
        apply(c, "latency_breakdown", "off").unwrap();
        assert_eq!(c.config.latency_breakdown, None);
        assert!(apply(c, "latency_breakdown", "0ms").is_err());
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
        apply(c, "checkpoint_retain", "2").unwrap();
        let e = c.checkpoint_config().unwrap_err().to_string();
        assert!(e.contains("checkpoint_retain") && e.contains("off"), "{e}");
        apply(c, "checkpoint_interval", "100ms").unwrap();
        apply(c, "checkpoint_timeout", "5s").unwrap();
        apply(c, "restart_strategy", "fixed-delay").unwrap();
        apply(c, "restart_attempts", "2").unwrap();
        apply(c, "restart_delay", "10ms").unwrap();
        assert!(apply(c, "restart_strategy", "sometimes").is_err());
        let chk = c.checkpoint_config().unwrap().unwrap();
        assert_eq!(chk.interval, Duration::from_millis(100));
        assert_eq!((chk.retain, chk.timeout), (2, Duration::from_secs(5)));
        assert_eq!(
            chk.restart,
            RestartStrategy::FixedDelay {
                attempts: 2,
                delay: Duration::from_millis(10)
            }
        );
        apply(c, "checkpoint_interval", "off").unwrap();
        assert!(c.checkpoint_config().is_err());
    }
}
