//! One check of a probe: an HTTP request, a TCP connect, a command, a Prometheus query. Each
//! answers pass or fail, how long it took, and a value where the probe has one.
use std::time::{Duration, Instant};

use chaos_model::experiment::Probe;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// What one check found.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs one check of `probe`, bounded by its timeout.
pub async fn check(probe: &Probe) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(probe.timeout.0, run(probe)).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (ok, value, error) = match outcome {
        Ok(Ok((ok, value, error))) => (ok, value, error),
        Ok(Err(error)) => (false, None, Some(error)),
        Err(_) => (
            false,
            None,
            Some(format!("no answer within {}", probe.timeout)),
        ),
    };
    Check {
        ok,
        latency_ms,
        value,
        error,
    }
}

type Outcome = Result<(bool, Option<f64>, Option<String>), String>;

async fn run(probe: &Probe) -> Outcome {
    if let Some(http) = &probe.http {
        let started = Instant::now();
        let (status, _) = http_request(&http.method, &http.url).await?;
        let slow = http
            .max_latency
            .filter(|bound| started.elapsed() > bound.0)
            .map(|bound| format!("slower than {bound}"));
        let wrong = (!http.expect_status.contains(&status)).then(|| format!("HTTP {status}"));
        let error = wrong.or(slow);
        return Ok((error.is_none(), None, error));
    }
    if let Some(tcp) = &probe.tcp {
        return match tokio::net::TcpStream::connect(&tcp.address).await {
            Ok(_) => Ok((true, None, None)),
            Err(err) => Ok((false, None, Some(err.to_string()))),
        };
    }
    if let Some(cmd) = &probe.cmd {
        let (program, args) = cmd.run.split_first().ok_or("no command")?;
        let output = tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|err| format!("{program}: {err}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let code = output.status.code().unwrap_or(-1);
        let value = stdout.trim().parse::<f64>().ok();
        let error = if code != cmd.expect_exit_code {
            Some(format!("exit code {code}"))
        } else {
            cmd.expect_output
                .as_ref()
                .filter(|wanted| !stdout.contains(wanted.as_str()))
                .map(|wanted| format!("output lacks {wanted:?}"))
        };
        return Ok((error.is_none(), value, error));
    }
    if let Some(prometheus) = &probe.prometheus {
        let url = format!(
            "{}/api/v1/query?query={}",
            prometheus.url.trim_end_matches('/'),
            percent_encode(&prometheus.query)
        );
        let (status, body) = http_request("GET", &url).await?;
        if status != 200 {
            return Ok((false, None, Some(format!("HTTP {status}"))));
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|err| format!("not JSON: {err}"))?;
        let value = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        let Some(value) = value else {
            return Ok((false, None, Some("the query returned no sample".into())));
        };
        let held = prometheus.expect.is_none_or(|expect| expect.holds(value));
        let error = (!held).then(|| {
            format!(
                "{value} is not {}",
                prometheus.expect.map(|e| e.to_string()).unwrap_or_default()
            )
        });
        return Ok((held, Some(value), error));
    }
    Err("no probe kind".into())
}

/// One HTTP/1.1 request over a fresh connection (hyper): status and body.
pub async fn http_request(method: &str, url: &str) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|err| format!("{url}: {err}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are probed"));
    }
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|err| format!("connect {host}:{port}: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A query string value, with everything but unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Time in the experiment, for the report.
pub fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_escaped() {
        assert_eq!(
            super::percent_encode("sum(rate(x{a=\"b\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"
        );
    }
}
