//! `CREATE TABLE … WITH (connector = …)`: tables as sources and sinks.
//!
//! A table is a source when a query reads it and a sink when an INSERT
//! writes it; the connector says which it can be. Options are validated when
//! the table is declared, so a typo fails before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use millrace_connectors::file::{FileSource, OnError};
use millrace_connectors::iot::{IotConfig, IotSource};
use millrace_connectors::nexmark::{NexmarkConfig, NexmarkKind, NexmarkSource};
use millrace_connectors::proctime::{PROC_TIME, ProcessingTime};
use millrace_connectors::sinks::{ConsoleSink, DiscardSink, JsonLinesSink};
use millrace_core::time::is_event_time_type;
use millrace_core::{EventTime, SinkFactory, SourceFactory};

use crate::error::{SqlError, SqlResult};
use crate::interval::duration_text_ms;
use crate::script::{TableDecl, WatermarkDecl};

/// A declared table, resolved to a connector.
pub struct Table {
    pub name: String,
    /// Columns queries see (declared, or the connector's own when none are declared).
    pub schema: SchemaRef,
    pub connector: Connector,
    pub watermark: Option<WatermarkDecl>,
    /// The table that receives this table's late rows (`late_rows` option):
    /// the rows the windowed operator reading it leaves out as late.
    pub late_rows: Option<String>,
    /// The `WITH` options as written (for explain).
    pub options: Vec<(String, String)>,
}

/// What a table can do: be read (a source; the table's columns are picked
/// from the source's by name), be written (a sink), or both (files).
#[derive(Default)]
pub struct Connector {
    pub source: Option<Arc<dyn SourceFactory>>,
    pub sink: Option<Arc<dyn SinkFactory>>,
}

impl Connector {
    fn source(s: impl SourceFactory + 'static) -> Self {
        Self {
            source: Some(Arc::new(s)),
            sink: None,
        }
    }
    fn sink(s: impl SinkFactory + 'static) -> Self {
        Self {
            source: None,
            sink: Some(Arc::new(s)),
        }
    }
}

impl Table {
    /// The event time and watermark bound of reads: the declared WATERMARK,
    /// else the connector's own (generators declare theirs).
    pub fn event_time(&self) -> Option<EventTime> {
        match &self.watermark {
            Some(w) => {
                let declared = EventTime::new(&w.column, w.max_out_of_orderness_ms);
                // The connector's idle timeout (`idle_timeout` option), when
                // it was told the same column.
                let idle = self
                    .connector
                    .source
                    .as_ref()
                    .and_then(|s| s.event_time())
                    .filter(|e| e.column == w.column)
                    .map(|e| e.idle_timeout);
                Some(match idle {
                    Some(idle) => declared.with_idle_timeout(idle),
                    None => declared,
                })
            }
            None => self.connector.source.as_ref().and_then(|s| s.event_time()),
        }
    }

    /// How the source's watermark is derived, for explain.
    pub fn watermark_strategy(&self) -> String {
        match self.event_time() {
            Some(e) => format!(
                "watermark = max({col}) - {bound} ms{idle}",
                col = e.column,
                bound = e.max_out_of_orderness_ms,
                idle = e
                    .idle_timeout
                    .map(|d| format!(", idle after {} ms", d.as_millis()))
                    .unwrap_or_default()
            ),
            None => "no event time (windows on this table are refused)".into(),
        }
    }
}

/// Options not consumed by a connector are an error: they are typos.
struct Options {
    table: String,
    line: u64,
    values: BTreeMap<String, String>,
    /// Every option the connector looked for, given or not: what an
    /// unknown option's error lists.
    asked: BTreeSet<String>,
}

impl Options {
    fn new(decl: &TableDecl, line: u64) -> SqlResult<Self> {
        let mut values = BTreeMap::new();
        for (k, v) in &decl.options {
            if values.insert(k.clone(), v.clone()).is_some() {
                return Err(SqlError::at(
                    line,
                    format!("table {}: option '{k}' given twice", decl.name),
                ));
            }
        }
        Ok(Self {
            table: decl.name.clone(),
            line,
            values,
            asked: BTreeSet::new(),
        })
    }

    fn err(&self, msg: String) -> SqlError {
        SqlError::at(self.line, format!("table {}: {msg}", self.table))
    }

    fn take(&mut self, key: &str) -> Option<String> {
        if !key.starts_with("kafka.") {
            self.asked.insert(key.to_string());
        }
        self.values.remove(key)
    }

    fn require(&mut self, key: &str, example: &str) -> SqlResult<String> {
        let value = self.take(key);
        value.ok_or_else(|| {
            self.err(format!(
                "option '{key}' is required (e.g. {key} = '{example}')"
            ))
        })
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> SqlResult<Option<T>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .replace('_', "")
                .parse()
                .map(Some)
                .map_err(|_| self.err(format!("option '{key}' = '{v}' is not a number"))),
        }
    }

    fn duration_ms(&mut self, key: &str) -> SqlResult<Option<i64>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => duration_text_ms(&v, None)
                .map(Some)
                .map_err(|e| self.err(format!("option '{key}': {e}"))),
        }
    }

    /// Fails on an option nobody took, listing those that were looked
    /// for (`connector` named: the options of this use of it, which may
    /// depend on others, such as `on_error`).
    fn finish(self, connector: &str) -> SqlResult<()> {
        let Some(k) = self.values.keys().next() else {
            return Ok(());
        };
        let known: Vec<&str> = (self.asked.iter())
            .map(String::as_str)
            .filter(|k| *k != "connector")
            .collect();
        Err(self.err(format!(
            "unknown option '{k}'; the {connector} connector here takes: {}",
            known.join(", ")
        )))
    }
}

/// Resolves a declaration. `declared` is the schema of the declared columns
/// (empty when none were declared).
pub fn resolve(decl: &TableDecl, declared: SchemaRef, line: u64) -> SqlResult<Table> {
    let mut opts = Options::new(decl, line)?;
    let connector = opts.require("connector", "nexmark")?;
    let late_rows = opts.take("late_rows");
    let proc_time = match opts.take("proc_time").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(opts.err(format!("proc_time = '{other}' (use true or false)"))),
    };
    if matches!(
        connector.to_lowercase().as_str(),
        "console" | "discard" | "blackhole"
    ) {
        match opts.take("delivery").as_deref() {
            None | Some("at_least_once") => {}
            Some(other) => {
                return Err(opts.err(format!(
                    "delivery = '{other}': the {connector} connector is at-least-once by nature \
                     (it shows rows as they come); use a file sink for exactly-once output"
                )));
            }
        }
    }
    let kind = connector.to_lowercase();
    let (mut connector, mut schema) = match kind.as_str() {
        "nexmark" => nexmark(&mut opts, &declared)?,
        "iot" => iot(&mut opts, &declared)?,
        "file" => file(&mut opts, decl, &declared)?,
        "kafka" => kafka(&mut opts, decl, &declared)?,
        "console" => {
            let mut sink = ConsoleSink::new();
            if let Some(n) = opts.number::<usize>("max_rows")? {
                sink = sink.with_max_rows(n);
            }
            (Connector::sink(sink), declared)
        }
        "discard" | "blackhole" => (Connector::sink(DiscardSink::new()), declared),
        other => {
            return Err(opts.err(format!(
                "unknown connector '{other}' (known: nexmark, iot, file, kafka, console, discard)"
            )));
        }
    };
    opts.finish(&kind)?;
    if proc_time {
        // Rows also carry the wall-clock time they were read, as `proc_time`,
        // which becomes the event time unless a WATERMARK says otherwise.
        let Some(source) = connector.source.take() else {
            return Err(SqlError::at(
                line,
                format!(
                    "table {}: proc_time applies to tables that are read",
                    decl.name
                ),
            ));
        };
        let wrapped = ProcessingTime::new(source)
            .map_err(|e| SqlError::at(line, format!("table {}: {e}", decl.name)))?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(
            wrapped
                .schema()
                .field_with_name(PROC_TIME)
                .map_err(|e| SqlError::new(e.to_string()))?
                .clone(),
        );
        schema = Arc::new(Schema::new(fields));
        connector.source = Some(Arc::new(wrapped));
    }
    if decl.watermark.is_some() {
        if connector.source.is_none() {
            return Err(SqlError::at(
                line,
                format!(
                    "table {}: WATERMARK only applies to tables that are read",
                    decl.name
                ),
            ));
        }
        check_watermark(decl, &schema, line)?;
    }
    if late_rows.is_some() && connector.source.is_none() {
        return Err(SqlError::at(
            line,
            format!(
                "table {}: late_rows applies to tables that are read",
                decl.name
            ),
        ));
    }
    Ok(Table {
        name: decl.name.clone(),
        schema,
        connector,
        watermark: decl.watermark.clone(),
        late_rows,
        options: decl.options.clone(),
    })
}

/// The table's columns: the declared ones (which must exist in the
/// connector's schema) or all of the connector's.
fn pick_columns(opts: &Options, own: &SchemaRef, declared: &SchemaRef) -> SqlResult<SchemaRef> {
    if declared.fields().is_empty() {
        return Ok(own.clone());
    }
    for f in declared.fields() {
        let Ok(have) = own.field_with_name(f.name()) else {
            let names: Vec<&str> = own.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(opts.err(format!(
                "column '{}' is not produced by this connector (it has: {})",
                f.name(),
                names.join(", ")
            )));
        };
        if !arrow::compute::can_cast_types(have.data_type(), f.data_type()) {
            return Err(opts.err(format!(
                "column '{}' is {} in this connector and cannot be read as {}",
                f.name(),
                have.data_type(),
                f.data_type()
            )));
        }
    }
    Ok(declared.clone())
}

/// A declared watermark must name a time column of the table.
fn check_watermark(decl: &TableDecl, schema: &Schema, line: u64) -> SqlResult<()> {
    let Some(w) = &decl.watermark else {
        return Ok(());
    };
    let err = |msg: String| {
        SqlError::at(
            line,
            format!("table {}: WATERMARK FOR {}: {msg}", decl.name, w.column),
        )
    };
    let Ok(field) = schema.field_with_name(&w.column) else {
        return Err(err("no such column".into()));
    };
    if !is_event_time_type(field.data_type()) {
        return Err(err(format!(
            "the column is {}, not a TIMESTAMP or BIGINT of milliseconds",
            field.data_type()
        )));
    }
    Ok(())
}

fn nexmark(opts: &mut Options, declared: &SchemaRef) -> SqlResult<(Connector, SchemaRef)> {
    let kind = opts.take("kind").unwrap_or_else(|| "all".into());
    let kind = match kind.to_lowercase().as_str() {
        "bid" | "bids" => Some(NexmarkKind::Bid),
        "person" | "persons" | "people" => Some(NexmarkKind::Person),
        "auction" | "auctions" => Some(NexmarkKind::Auction),
        "all" | "events" => None,
        other => {
            return Err(opts.err(format!(
                "nexmark kind '{other}' (use bid, person, auction or all)"
            )));
        }
    };
    let mut config = NexmarkConfig::default();
    if let Some(seed) = opts.number("seed")? {
        config.seed = seed;
    }
    config.events = opts.number("events")?;
    config.emit_rate = opts.number("rate")?;
    let (base, event_rate) = generator_time(opts, config.emit_rate)?;
    config.base_time_ms = base.unwrap_or(config.base_time_ms);
    config.event_rate = event_rate.unwrap_or(config.event_rate);
    let source = match kind {
        Some(k) => NexmarkSource::new(k, config),
        None => NexmarkSource::all(config),
    };
    let schema = pick_columns(opts, &source.schema(), declared)?;
    Ok((Connector::source(source), schema))
}

/// A generator's event time: `start_time` (`'now'`: the wall clock when the
/// pipeline is planned, or a timestamp) is the event time of its first
/// event, and `event_rate` how fast it advances. With `start_time = 'now'`
/// and a `rate`, the event rate defaults to the rate, so event time follows
/// the wall clock and event-time windows close in real time. Both `None`
/// when not given (the generator's fixed defaults).
fn generator_time(opts: &mut Options, rate: Option<f64>) -> SqlResult<(Option<i64>, Option<f64>)> {
    let start = match opts.take("start_time") {
        None => None,
        Some(text) if text.eq_ignore_ascii_case("now") => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Some((now, true))
        }
        Some(text) => {
            let ns = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(&text)
                .map_err(|_| {
                    opts.err(format!(
                        "start_time = '{text}': expected 'now' or a timestamp such as '2024-01-01T00:00:00Z'"
                    ))
                })?;
            Some((ns.div_euclid(1_000_000), false))
        }
    };
    let event_rate = match opts.number::<f64>("event_rate")? {
        Some(r) => Some(r),
        None if start.is_some_and(|(_, now)| now) => rate,
        None => None,
    };
    Ok((start.map(|(ms, _)| ms), event_rate))
}

fn iot(opts: &mut Options, declared: &SchemaRef) -> SqlResult<(Connector, SchemaRef)> {
    let mut config = IotConfig::default();
    if let Some(seed) = opts.number("seed")? {
        config.seed = seed;
    }
    if let Some(d) = opts.number("devices")? {
        config.devices = d;
    }
    config.events = opts.number("events")?;
    config.emit_rate = opts.number("rate")?;
    let (base, event_rate) = generator_time(opts, config.emit_rate)?;
    config.base_time_ms = base.unwrap_or(config.base_time_ms);
    config.event_rate = event_rate.unwrap_or(config.event_rate);
    if let Some(ms) = opts.duration_ms("max_delay")? {
        config.max_delay_ms = ms;
    }
    let source = IotSource::new(config);
    let schema = pick_columns(opts, &IotSource::schema(), declared)?;
    Ok((Connector::source(source), schema))
}

/// The bad-record policy options shared by file and Kafka sources.
fn on_error(opts: &mut Options) -> SqlResult<OnError> {
    Ok(match opts.take("on_error").as_deref() {
        None | Some("fail") => OnError::Fail,
        Some("skip") => OnError::Skip,
        Some("dead_letter") => OnError::DeadLetter(PathBuf::from(
            opts.require("dead_letter_path", "bad.jsonl")?,
        )),
        Some(other) => {
            return Err(opts.err(format!(
                "on_error = '{other}' (use fail, skip or dead_letter)"
            )));
        }
    })
}

/// `max_future`: a duration, or 'none'; the file source's default.
fn max_future(opts: &mut Options) -> SqlResult<Option<std::time::Duration>> {
    Ok(match opts.take("max_future") {
        None => Some(millrace_connectors::file::DEFAULT_MAX_FUTURE),
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => {
            let ms = duration_text_ms(&v, None)
                .map_err(|e| opts.err(format!("option 'max_future': {e} (or 'none')")))?;
            Some(std::time::Duration::from_millis(ms.max(0) as u64))
        }
    })
}

fn file(
    opts: &mut Options,
    decl: &TableDecl,
    declared: &SchemaRef,
) -> SqlResult<(Connector, SchemaRef)> {
    let path = PathBuf::from(opts.require("path", "events.jsonl")?);
    let format = opts.take("format").unwrap_or_else(|| "json".into());
    // Written as JSON lines when INSERTed into; read when queried (which
    // needs the columns declared).
    let exactly_once = match opts.take("delivery").as_deref() {
        None | Some("exactly_once") => true,
        Some("at_least_once") => false,
        Some(other) => {
            return Err(opts.err(format!(
                "delivery = '{other}' (use exactly_once or at_least_once)"
            )));
        }
    };
    let sink = match format.to_lowercase().as_str() {
        "json" if exactly_once => Some(Arc::new(JsonLinesSink::new(&path)) as Arc<dyn SinkFactory>),
        "json" => Some(Arc::new(JsonLinesSink::new(&path).at_least_once()) as Arc<dyn SinkFactory>),
        _ => None,
    };
    if declared.fields().is_empty() {
        return Ok((Connector { source: None, sink }, declared.clone()));
    }
    let header = match opts.take("header").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(opts.err(format!("header = '{other}' (use true or false)"))),
    };
    let mut source = match format.to_lowercase().as_str() {
        "json" => FileSource::json(&path, declared.clone()),
        "csv" => FileSource::csv(&path, declared.clone(), header),
        other => return Err(opts.err(format!("format '{other}' (use json or csv)"))),
    };
    let policy = on_error(opts)?;
    source = source.with_on_error(policy);
    if let Some(n) = opts.number::<usize>("max_line_bytes")? {
        source = source.with_max_line_bytes(n);
    }
    let max_future = max_future(opts)?;
    source = source.with_max_future(max_future);
    if let Some(w) = &decl.watermark {
        source = source.with_event_time(EventTime::new(&w.column, w.max_out_of_orderness_ms));
    }
    let connector = Connector {
        source: Some(Arc::new(source)),
        sink,
    };
    Ok((connector, declared.clone()))
}

/// `connector = 'kafka'`: a topic, read when queried (which needs the value's
/// columns declared) and written when INSERTed into.
#[cfg(feature = "kafka")]
fn kafka(
    opts: &mut Options,
    decl: &TableDecl,
    declared: &SchemaRef,
) -> SqlResult<(Connector, SchemaRef)> {
    use millrace_connectors::kafka::{
        Connection, Delivery, KafkaSink, KafkaSource, Metadata, StartFrom, StopAt, ValueFormat,
    };
    let topic = opts.require("topic", "events")?;
    let bootstrap = opts.require("bootstrap_servers", "127.0.0.1:9092")?;
    let mut connection = Connection::new(bootstrap);
    // Client settings passed through to librdkafka, as Flink's `properties.*`.
    let passed: Vec<String> = opts
        .values
        .keys()
        .filter(|k| k.starts_with("kafka."))
        .cloned()
        .collect();
    for key in passed {
        let value = opts.take(&key).unwrap_or_default();
        connection = connection.with_option(&key["kafka.".len()..], value);
    }
    let format = match opts
        .take("format")
        .as_deref()
        .map(str::to_lowercase)
        .as_deref()
    {
        None | Some("json") => ValueFormat::Json,
        Some("csv") => {
            let delimiter = match opts.take("delimiter") {
                None => b',',
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(d) => return Err(opts.err(format!("delimiter = '{d}' (one character)"))),
            };
            ValueFormat::Csv { delimiter }
        }
        Some("raw") => ValueFormat::Raw,
        Some(other) => return Err(opts.err(format!("format '{other}' (use json, csv or raw)"))),
    };

    let mut sink = KafkaSink::new(connection.clone(), &topic, format);
    if let Some(key) = opts.take("key") {
        sink = sink.with_key(key.to_lowercase());
    }
    sink = sink.with_delivery(match opts.take("delivery").as_deref() {
        None | Some("at_least_once") => Delivery::AtLeastOnce,
        Some("exactly_once") => Delivery::ExactlyOnce,
        Some(other) => {
            return Err(opts.err(format!(
                "delivery = '{other}' (use at_least_once or exactly_once)"
            )));
        }
    });
    if let Some(ms) = opts.duration_ms("linger")? {
        sink = sink.with_linger(std::time::Duration::from_millis(ms.max(0) as u64));
    }
    if let Some(id) = opts.take("transactional_id") {
        sink = sink.with_transactional_id(id);
    }
    if let Some(t) = opts.take("progress_topic") {
        sink = sink.with_progress_topic(t);
    }

    let start = match opts.take("scan_startup").as_deref() {
        None | Some("earliest") => StartFrom::Earliest,
        Some("latest") => StartFrom::Latest,
        Some("group") => StartFrom::Group,
        Some("timestamp") => {
            let ms = opts
                .number::<i64>("scan_startup_timestamp")?
                .ok_or_else(|| {
                    opts.err(
                        "scan_startup = 'timestamp' needs scan_startup_timestamp (ms since 1970)"
                            .into(),
                    )
                })?;
            StartFrom::Timestamp(ms)
        }
        Some(other) => {
            return Err(opts.err(format!(
                "scan_startup = '{other}' (use earliest, latest, group or timestamp)"
            )));
        }
    };
    let stop = match opts.take("scan_bounded").as_deref() {
        None | Some("none") => StopAt::Never,
        Some("latest") => StopAt::Latest,
        Some(other) => {
            return Err(opts.err(format!("scan_bounded = '{other}' (use none or latest)")));
        }
    };
    let group = opts.take("group_id");
    let metadata = match opts.take("metadata") {
        None => Metadata::none(),
        Some(m) => Metadata::parse(&m).map_err(|e| opts.err(format!("metadata: {e}")))?,
    };
    // Dead letters to a topic, or as for files.
    let dead_letter_topic = opts.take("dead_letter_topic");
    let policy = match &dead_letter_topic {
        Some(_) => match opts.take("on_error").as_deref() {
            Some("dead_letter") => None,
            _ => {
                return Err(opts.err("dead_letter_topic goes with on_error = 'dead_letter'".into()));
            }
        },
        None => Some(on_error(opts)?),
    };
    let max_future = max_future(opts)?;
    // How long a partition without messages holds the watermark back ('0': forever).
    let idle_timeout = opts.duration_ms("idle_timeout")?;
    if declared.fields().is_empty() {
        if !metadata.is_empty() {
            return Err(opts.err(
                "metadata columns come with a read table: declare the value's columns too".into(),
            ));
        }
        return Ok((Connector::sink(sink), declared.clone()));
    }
    let mut source = KafkaSource::new(connection, &topic, format, declared.clone())
        .with_metadata(metadata)
        .with_start(start)
        .with_stop(stop)
        .with_max_future(max_future);
    source = match (policy, dead_letter_topic) {
        (Some(policy), _) => source.with_on_error(policy),
        (None, Some(topic)) => source.with_dead_letter_topic(topic),
        (None, None) => source,
    };
    if let Some(group) = group {
        source = source.with_group_id(group);
    }
    if let Some(w) = &decl.watermark {
        let mut et = EventTime::new(&w.column, w.max_out_of_orderness_ms);
        if let Some(ms) = idle_timeout {
            et =
                et.with_idle_timeout((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)));
        }
        source = source.with_event_time(et);
    }
    source.validate().map_err(|e| opts.err(e.to_string()))?;
    let schema = source.schema();
    let connector = Connector {
        source: Some(Arc::new(source)),
        sink: Some(Arc::new(sink)),
    };
    Ok((connector, schema))
}

#[cfg(not(feature = "kafka"))]
fn kafka(
    opts: &mut Options,
    _decl: &TableDecl,
    _declared: &SchemaRef,
) -> SqlResult<(Connector, SchemaRef)> {
    Err(opts.err("this build has no Kafka connector (build with the 'kafka' feature)".into()))
}
