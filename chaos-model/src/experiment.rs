//! An experiment as data (`apiVersion: chaos-bpf.dev/v1`, `kind: Experiment`): the steady state
//! as probes, the hypothesis as conditions on them per phase, the faults (the fault model, each
//! at its own time), the schedule, when to abort and what to run at the end. Chaos Toolkit and
//! Litmus users will know the shape; what is new is that the conditions are checked against
//! what the probes measured and the faults' kernel counters, and end in a verdict.
use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Fault, FieldError, HumanDuration, validate};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Experiment {
    /// `chaos-bpf.dev/v1`.
    pub api_version: String,
    /// `Experiment`.
    pub kind: String,
    pub metadata: Metadata,
    pub steady_state: SteadyState,
    pub hypothesis: Hypothesis,
    #[serde(default)]
    pub faults: Vec<TimedFault>,
    pub schedule: Schedule,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<AbortRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SteadyState {
    pub probes: Vec<Probe>,
}

/// One way of looking at the system, checked every `interval` from warm-up to the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    /// How conditions refer to it: `api` in `api.error_ratio < 0.01`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CmdProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    /// Between two checks (default 1s).
    #[serde(default = "Probe::default_interval")]
    pub interval: HumanDuration,
    /// A check that takes longer fails (default 1s).
    #[serde(default = "Probe::default_timeout")]
    pub timeout: HumanDuration,
}

impl Probe {
    fn default_interval() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(1))
    }

    fn default_timeout() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(1))
    }

    /// How many of http, tcp, cmd, prometheus are given (exactly one is right).
    fn kinds(&self) -> usize {
        [
            self.http.is_some(),
            self.tcp.is_some(),
            self.cmd.is_some(),
            self.prometheus.is_some(),
        ]
        .iter()
        .filter(|given| **given)
        .count()
    }
}

/// A check passes when the answer has an expected status, within `maxLatency` if given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    pub url: String,
    #[serde(default = "HttpProbe::default_method")]
    pub method: String,
    /// Statuses that pass (default 200).
    #[serde(default = "HttpProbe::default_status")]
    pub expect_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<HumanDuration>,
}

impl HttpProbe {
    fn default_method() -> String {
        "GET".into()
    }

    fn default_status() -> Vec<u16> {
        vec![200]
    }
}

/// A check passes when a TCP connection opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpProbe {
    /// HOST:PORT.
    pub address: String,
}

/// A check runs a command: it passes on the expected exit code, and, if given, when its output
/// contains `expectOutput`. Output that is a number is the probe's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CmdProbe {
    /// The program and its arguments (no shell unless you name one).
    pub run: Vec<String>,
    #[serde(default)]
    pub expect_exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_output: Option<String>,
}

/// A check runs an instant query; the first sample's value is the probe's value, and the check
/// passes while it meets `expect` (`< 0.01`), if given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusProbe {
    /// The server, e.g. http://127.0.0.1:9090.
    pub url: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Comparison>,
}

/// The tolerances: conditions on the probes, per phase. Each condition is one JUnit testcase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hypothesis {
    /// Before anything is injected: the steady state holds (else exit 3, nothing injected).
    #[serde(default)]
    pub warmup: Vec<Condition>,
    /// While faults are injected.
    #[serde(default)]
    pub injection: Vec<Condition>,
    /// After every fault is gone: the system recovered.
    #[serde(default)]
    pub cooldown: Vec<Condition>,
}

/// `probe.metric OP value`: `api.error_ratio < 0.01`, `api.p99_latency < 300ms`,
/// `errors.value <= 3`, `api.success`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub probe: String,
    pub metric: Metric,
    pub comparison: Comparison,
}

/// What a condition measures of a probe over a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Failed checks / checks.
    ErrorRatio,
    /// Every check passed (`error_ratio == 0`).
    Success,
    P50Latency,
    P99Latency,
    MaxLatency,
    /// The probe's last value (Prometheus, or a command's numeric output).
    Value,
    /// The largest value seen.
    MaxValue,
}

impl Metric {
    const ALL: &[(&str, Metric)] = &[
        ("error_ratio", Metric::ErrorRatio),
        ("success", Metric::Success),
        ("p50_latency", Metric::P50Latency),
        ("p99_latency", Metric::P99Latency),
        ("max_latency", Metric::MaxLatency),
        ("value", Metric::Value),
        ("max_value", Metric::MaxValue),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::P50Latency | Metric::P99Latency | Metric::MaxLatency
        )
    }
}

/// `< 0.01`, `<= 300ms`, `== 0`: latencies in milliseconds (or with a unit), others as numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub op: Op,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }
}

impl Comparison {
    pub fn holds(&self, measured: f64) -> bool {
        match self.op {
            Op::Lt => measured < self.value,
            Op::Le => measured <= self.value,
            Op::Gt => measured > self.value,
            Op::Ge => measured >= self.value,
            Op::Eq => (measured - self.value).abs() < f64::EPSILON,
        }
    }
}

const COMPARISON_ACCEPTED: &str =
    "<, <=, >, >= or == and a number (0.01, 5) or a latency (300ms, 1s)";

impl FromStr for Comparison {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(symbol, op)| text.strip_prefix(symbol).map(|rest| (*op, rest.trim())))
        .ok_or_else(|| format!("{text:?} has no comparison; accepted: {COMPARISON_ACCEPTED}"))?;
        let value = match rest.parse::<f64>() {
            Ok(number) if number.is_finite() => number,
            _ => humantime::parse_duration(rest)
                .map(|d| d.as_secs_f64() * 1000.0)
                .map_err(|_| {
                    format!(
                        "{rest:?} is not a number or a latency; accepted: {COMPARISON_ACCEPTED}"
                    )
                })?,
        };
        Ok(Comparison { op, value })
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

impl FromStr for Condition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted = "PROBE.METRIC OP VALUE (api.error_ratio < 0.01, api.p99_latency < 300ms) \
                        or PROBE.success; metrics: error_ratio, success, p50_latency, \
                        p99_latency, max_latency, value, max_value";
        let text = text.trim();
        let split = text.find(['<', '>', '=']).unwrap_or(text.len());
        let (subject, comparison) = text.split_at(split);
        let (probe, metric) = subject
            .trim()
            .split_once('.')
            .ok_or_else(|| format!("{text:?} names no probe metric; accepted: {accepted}"))?;
        let metric = Metric::ALL
            .iter()
            .find(|(name, _)| *name == metric)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("{metric:?} is not a metric; accepted: {accepted}"))?;
        let comparison = match (metric, comparison.trim()) {
            (Metric::Success, "") => Comparison {
                op: Op::Eq,
                value: 0.0,
            },
            (Metric::Success, _) => {
                return Err(format!(
                    "{text:?}: success takes no comparison; accepted: {accepted}"
                ));
            }
            (_, "") => return Err(format!("{text:?} has no comparison; accepted: {accepted}")),
            (_, comparison) => comparison.parse()?,
        };
        if probe.is_empty() {
            return Err(format!("{text:?} names no probe; accepted: {accepted}"));
        }
        Ok(Condition {
            probe: probe.to_string(),
            metric,
            comparison,
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.metric {
            Metric::Success => write!(f, "{}.success", self.probe),
            metric if metric.is_latency() => write!(
                f,
                "{}.{} {} {}ms",
                self.probe,
                metric.name(),
                self.comparison.op.symbol(),
                self.comparison.value
            ),
            metric => write!(f, "{}.{} {}", self.probe, metric.name(), self.comparison),
        }
    }
}

macro_rules! string_form {
    ($ty:ty, $name:literal, $description:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

string_form!(
    Condition,
    "Condition",
    "PROBE.METRIC OP VALUE: api.error_ratio < 0.01, api.p99_latency < 300ms, api.success"
);
string_form!(Comparison, "Comparison", "OP VALUE: < 0.01, <= 300ms, == 0");

/// A fault of the experiment: when it starts after warm-up, and for how long (default: to the
/// end of the injection phase).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimedFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<HumanDuration>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub lasts: Option<HumanDuration>,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schedule {
    /// The steady state is watched this long before anything is injected.
    pub warmup: HumanDuration,
    /// The injection phase.
    pub duration: HumanDuration,
    /// Watched this long after every fault is gone.
    pub cooldown: HumanDuration,
}

/// A probe failing this many checks in a row reverts every fault at once and ends the
/// experiment (exit 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AbortRule {
    pub probe: String,
    pub consecutive_failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollback {
    /// Commands (program and arguments) run in order at the end.
    pub commands: Vec<Vec<String>>,
    /// always (default), or deviation: only when the hypothesis did not hold or it aborted.
    #[serde(default)]
    pub when: RollbackWhen,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RollbackWhen {
    #[default]
    Always,
    Deviation,
}

/// The rules between an experiment's fields, each error naming its path.
pub fn validate_experiment(experiment: &Experiment) -> Result<(), FieldError> {
    if experiment.api_version != "chaos-bpf.dev/v1" {
        return Err(FieldError::new(
            "apiVersion",
            format!("{:?} is not supported", experiment.api_version),
            "chaos-bpf.dev/v1",
        ));
    }
    if experiment.kind != "Experiment" {
        return Err(FieldError::new(
            "kind",
            format!("{:?} is not an experiment", experiment.kind),
            "Experiment",
        ));
    }
    let probes = &experiment.steady_state.probes;
    if probes.is_empty() {
        return Err(FieldError::new(
            "steadyState.probes",
            "empty",
            "one probe or more",
        ));
    }
    for (index, probe) in probes.iter().enumerate() {
        let path = format!("steadyState.probes[{index}]");
        if probe.kinds() != 1 {
            return Err(FieldError::new(
                path,
                format!("{} of http, tcp, cmd, prometheus given", probe.kinds()),
                "exactly one of http, tcp, cmd, prometheus",
            ));
        }
        if probes[..index].iter().any(|p| p.name == probe.name) {
            return Err(FieldError::new(
                format!("{path}.name"),
                format!("{:?} names two probes", probe.name),
                "a name of its own for each probe",
            ));
        }
        if probe.interval.0.is_zero() {
            return Err(FieldError::new(
                format!("{path}.interval"),
                "0",
                "a positive duration",
            ));
        }
        if let Some(cmd) = &probe.cmd
            && cmd.run.is_empty()
        {
            return Err(FieldError::new(
                format!("{path}.cmd.run"),
                "empty",
                "a program and its arguments",
            ));
        }
    }
    let known = |name: &str| probes.iter().any(|p| p.name == name);
    let names = || {
        probes
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (phase, conditions) in [
        ("warmup", &experiment.hypothesis.warmup),
        ("injection", &experiment.hypothesis.injection),
        ("cooldown", &experiment.hypothesis.cooldown),
    ] {
        for (index, condition) in conditions.iter().enumerate() {
            if !known(&condition.probe) {
                return Err(FieldError::new(
                    format!("hypothesis.{phase}[{index}]"),
                    format!("no probe {:?}", condition.probe),
                    format!("a probe of steadyState.probes: {}", names()),
                ));
            }
        }
    }
    let schedule = &experiment.schedule;
    if schedule.duration.0.is_zero() {
        return Err(FieldError::new(
            "schedule.duration",
            "0",
            "a positive duration",
        ));
    }
    for (index, timed) in experiment.faults.iter().enumerate() {
        let path = format!("faults[{index}]");
        validate(&timed.fault).map_err(|err| err.within(&format!("{path}.fault")))?;
        let at = timed.at.map_or(0.0, |d| d.0.as_secs_f64());
        if at >= schedule.duration.0.as_secs_f64() {
            return Err(FieldError::new(
                format!("{path}.at"),
                "starts after the injection phase ends",
                format!("less than schedule.duration ({})", schedule.duration),
            ));
        }
        if timed.fault.duration.is_some() {
            return Err(FieldError::new(
                format!("{path}.fault.duration"),
                "the schedule decides how long a fault of an experiment lasts",
                format!("{path}.for"),
            ));
        }
    }
    for (index, rule) in experiment.abort.iter().enumerate() {
        if !known(&rule.probe) {
            return Err(FieldError::new(
                format!("abort[{index}].probe"),
                format!("no probe {:?}", rule.probe),
                format!("a probe of steadyState.probes: {}", names()),
            ));
        }
        if rule.consecutive_failures == 0 {
            return Err(FieldError::new(
                format!("abort[{index}].consecutiveFailures"),
                "0",
                "1 or more",
            ));
        }
    }
    Ok(())
}

/// A mistake in an experiment file: the field, and where it is in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExperimentError {
    pub field: FieldError,
    /// 1-based line and column, where known.
    pub at: Option<(usize, usize)>,
}

impl fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "{line}:{column}: ")?;
        }
        write!(f, "{}", self.field)
    }
}

impl std::error::Error for ExperimentError {}

/// Parses and validates an experiment (YAML, or JSON, which is YAML too), naming the field of a
/// mistake and its line and column.
pub fn parse_experiment(text: &str) -> Result<Experiment, ExperimentError> {
    let parsed: Result<Experiment, _> =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text));
    let experiment = parsed.map_err(|err| {
        let at = err.inner().location().map(|l| (l.line(), l.column()));
        let path = crate::validate::path_of(err.path());
        let message = err.inner().to_string();
        // serde_yaml ends its message with the place, which `at` says already.
        let message = message
            .split_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head)
            .to_string();
        let message = match message.split_once(": ") {
            Some((place, rest)) if !place.contains(' ') && path.starts_with(place) => {
                rest.to_string()
            }
            _ => message,
        };
        // The path's own place first: serde_yaml places a bad list item at the list's start.
        let at = locate(text, &path).or(at);
        ExperimentError {
            field: FieldError::new(path, message, ""),
            at,
        }
    })?;
    validate_experiment(&experiment).map_err(|field| ExperimentError {
        at: locate(text, &field.path),
        field,
    })?;
    Ok(experiment)
}

/// The line and column of a field path (`faults[1].fault.match.port[0]`) in block-style YAML:
/// each key is looked for below its parent, list items counted by their dashes. A path into a
/// flow-style part (`{...}`) ends at the deepest key found.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // (line index, the column keys of the current block start at or beyond)
    let (mut from, mut min_column) = (0usize, 0usize);
    // Just after a list item, its first key may sit on the item's own line, left of the
    // item's content column.
    let mut on_item_line = false;
    let mut found = None;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.split_once('[') {
            Some((key, rest)) => (key, Some(rest)),
            None => (segment, None),
        };
        if !key.is_empty() {
            let (line, column) = find_key(&lines, from, min_column, key, on_item_line)?;
            on_item_line = false;
            found = Some((line + 1, column + 1));
            from = line + 1;
            min_column = column + 1;
        }
        for index in indexes
            .into_iter()
            .flat_map(|rest| rest.split('['))
            .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
        {
            let Some((line, column)) = find_item(&lines, from, min_column, index) else {
                return found;
            };
            found = Some((line + 1, column + 1));
            from = line;
            min_column = column + 1;
            on_item_line = true;
        }
    }
    found
}

/// A line's first column of content, and whether the line counts (not blank, not a comment).
fn content_column(line: &str) -> Option<usize> {
    let column = line.len() - line.trim_start().len();
    let rest = line.trim_start();
    (!rest.is_empty() && !rest.starts_with('#')).then_some(column)
}

fn find_key(
    lines: &[&str],
    from: usize,
    min_column: usize,
    key: &str,
    on_item_line: bool,
) -> Option<(usize, usize)> {
    for (index, line) in lines.iter().enumerate().skip(from) {
        let Some(column) = content_column(line) else {
            continue;
        };
        // A dash opens an item whose first key sits on the same line.
        let mut key_column = column;
        let mut rest = &line[column..];
        while let Some(after) = rest.strip_prefix("- ") {
            key_column += 2 + (after.len() - after.trim_start().len());
            rest = after.trim_start();
        }
        if column < min_column && !(on_item_line && index == from) {
            return None;
        }
        if key_column >= min_column
            && let Some(after) = rest.strip_prefix(key)
            && after.starts_with(':')
        {
            return Some((index, key_column));
        }
    }
    None
}

fn find_item(
    lines: &[&str],
    from: usize,
    min_column: usize,
    wanted: usize,
) -> Option<(usize, usize)> {
    let mut seen = 0;
    let mut item_column = None;
    for (index, line) in lines.iter().enumerate().skip(from) {
        let Some(column) = content_column(line) else {
            continue;
        };
        if column + 1 < min_column {
            return None;
        }
        if !line[column..].starts_with("- ") && line[column..].trim() != "-" {
            continue;
        }
        match item_column {
            None => item_column = Some(column),
            Some(first) if column != first => continue,
            Some(_) => {}
        }
        if seen == wanted {
            return Some((index, column));
        }
        seen += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
apiVersion: chaos-bpf.dev/v1
kind: Experiment
metadata:
  name: redis-refused
steadyState:
  probes:
    - name: api
      http:
        url: http://127.0.0.1:8080/items/1
      interval: 100ms
    - name: redis
      tcp: {address: 127.0.0.1:6379}
hypothesis:
  warmup: [api.success]
  injection:
    - api.error_ratio < 0.01
    - api.p99_latency < 300ms
  cooldown: [api.success]
faults:
  - at: 5s
    for: 30s
    fault:
      kind: connect-error
      errno: ECONNREFUSED
      scope: {cgroup: /sys/fs/cgroup/api}
      match:
        port: [6379]
schedule: {warmup: 5s, duration: 40s, cooldown: 5s}
abort:
  - probe: api
    consecutiveFailures: 5
";

    #[test]
    fn the_example_parses() {
        let experiment = parse_experiment(EXAMPLE).unwrap();
        assert_eq!(experiment.steady_state.probes.len(), 2);
        assert_eq!(
            experiment.hypothesis.injection[1].to_string(),
            "api.p99_latency < 300ms"
        );
        assert_eq!(experiment.hypothesis.injection[1].comparison.value, 300.0);
        assert_eq!(experiment.hypothesis.warmup[0].metric, Metric::Success);
    }

    fn error_of(text: &str) -> ExperimentError {
        parse_experiment(text).unwrap_err()
    }

    #[test]
    fn mistakes_name_the_field_its_line_and_column_and_what_is_accepted() {
        let unknown =
            error_of(&EXAMPLE.replace("    consecutiveFailures: 5", "    consecutiveFailure: 5"));
        assert_eq!(unknown.at, Some((31, 5)), "{unknown}");
        assert!(
            unknown
                .to_string()
                .contains("unknown field `consecutiveFailure`"),
            "{unknown}"
        );

        let kind = error_of(&EXAMPLE.replace("kind: connect-error", "kind: connect-eror"));
        assert_eq!(kind.field.path, "faults[0].fault.kind");
        assert_eq!(kind.at.map(|a| a.0), Some(23), "{kind}");

        let port = error_of(&EXAMPLE.replace("port: [6379]", "port: [70000]"));
        assert_eq!(port.field.path, "faults[0].fault.match.port[0]");
        assert_eq!(port.at.map(|a| a.0), Some(27), "{port}");
        assert!(port.to_string().contains("accepted"), "{port}");

        let condition =
            error_of(&EXAMPLE.replace("api.p99_latency < 300ms", "api.p98_latency < 300ms"));
        assert_eq!(condition.at.map(|a| a.0), Some(17), "{condition}");
        assert!(condition.to_string().contains("p99_latency"), "{condition}");

        let probe = error_of(&EXAMPLE.replace("api.error_ratio < 0.01", "web.error_ratio < 0.01"));
        assert_eq!(probe.field.path, "hypothesis.injection[0]");
        assert_eq!(probe.at.map(|a| a.0), Some(16), "{probe}");
        assert!(probe.field.accepted.contains("api, redis"), "{probe}");

        let errno = error_of(&EXAMPLE.replace("errno: ECONNREFUSED", "errno: EIO"));
        assert_eq!(errno.field.path, "faults[0].fault.errno");
        assert_eq!(errno.at, Some((24, 7)), "{errno}");

        let late = error_of(&EXAMPLE.replace("at: 5s", "at: 50s"));
        assert_eq!(late.field.path, "faults[0].at");
        assert_eq!(late.at.map(|a| a.0), Some(20), "{late}");
    }

    #[test]
    fn comparisons_and_conditions() {
        assert!("< 0.01".parse::<Comparison>().unwrap().holds(0.0));
        assert!(!"< 300ms".parse::<Comparison>().unwrap().holds(300.0));
        assert!("<= 1s".parse::<Comparison>().unwrap().holds(1000.0));
        assert!("api.max_value >= 3".parse::<Condition>().is_ok());
        assert!("api".parse::<Condition>().is_err());
        assert!("api.error_ratio".parse::<Condition>().is_err());
        assert!("api.success < 1".parse::<Condition>().is_err());
        assert!("api.error_ratio ~ 1".parse::<Condition>().is_err());
    }
}
