//! `chaos-bpf fault ...`: the agent's API from the command line. One HTTP/1 connection per
//! command through hyper, over TCP or the agent's Unix socket alike.
use std::path::PathBuf;

use chaos::error::{ChaosError, Result};
use chaos_model::Format;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;

use crate::{agent::Listen, cli::FaultCommand};

/// Where the agent is and how to prove who we are.
pub struct AgentClient {
    pub agent: Listen,
    pub token_file: Option<PathBuf>,
}

type Response = hyper::Response<hyper::body::Incoming>;

impl AgentClient {
    async fn send(&self, method: Method, path: &str, body: Option<String>) -> Result<Response> {
        let unreachable = |err: std::io::Error| {
            ChaosError::io(format!("reaching the agent at {}", self.agent), err)
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "chaos-bpf-agent");
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|err| ChaosError::io(format!("reading {}", file.display()), err))?;
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|err| ChaosError::io("building the request", std::io::Error::other(err)))?;
        let failed = |err: hyper::Error| {
            ChaosError::io(
                format!("talking to the agent at {}", self.agent),
                std::io::Error::other(err),
            )
        };
        macro_rules! exchange {
            ($stream:expr) => {{
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream))
                        .await
                        .map_err(failed)?;
                tokio::spawn(connection);
                sender.send_request(request).await.map_err(failed)
            }};
        }
        match &self.agent {
            Listen::Tcp(addr) => exchange!(
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(unreachable)?
            ),
            Listen::Unix(path) => exchange!(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?
            ),
        }
    }

    /// The whole answer as JSON; an error status becomes one line with the agent's message.
    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| {
                ChaosError::io("reading the agent's answer", std::io::Error::other(err))
            })?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            return Ok(value);
        }
        Err(ChaosError::Agent {
            status: status.as_u16(),
            message: value["error"].as_str().map_or_else(
                || String::from_utf8_lossy(&bytes).into_owned(),
                str::to_string,
            ),
        })
    }

    pub async fn run(&self, command: FaultCommand) -> Result<()> {
        match command {
            FaultCommand::Create { file } => {
                let name = file.display().to_string();
                let text = if name == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(&file)
                }
                .map_err(|err| ChaosError::io(format!("reading {name}"), err))?;
                // Checked here first, so a mistake names the file's field without a round trip.
                let fault = chaos_model::parse_fault(&text, Format::of(Some(&name), &text))
                    .map_err(|err| ChaosError::InFile {
                        file: name.clone(),
                        problem: Box::new(ChaosError::Field(err)),
                    })?;
                let body = serde_json::to_string(&fault).map_err(|err| {
                    ChaosError::io("encoding the fault", std::io::Error::other(err))
                })?;
                let created = self.json(Method::POST, "/v1/faults", Some(body)).await?;
                println!("{created}");
            }
            FaultCommand::List { json } => {
                let listed = self.json(Method::GET, "/v1/faults", None).await?;
                if json {
                    println!("{listed}");
                } else {
                    print!("{}", table(&listed));
                }
            }
            FaultCommand::Show { id } => {
                let shown = self
                    .json(Method::GET, &format!("/v1/faults/{id}"), None)
                    .await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            }
            FaultCommand::Stop { id: Some(id), .. } => {
                let stopped = self
                    .json(Method::DELETE, &format!("/v1/faults/{id}"), None)
                    .await?;
                println!("{stopped}");
            }
            FaultCommand::Stop { id: None, .. } => {
                let stopped = self.json(Method::POST, "/v1/faults:stop-all", None).await?;
                println!("{stopped}");
            }
            FaultCommand::Events { follow } => {
                let path = format!("/v1/events?follow={follow}");
                let mut response = self.send(Method::GET, &path, None).await?;
                if response.status() != StatusCode::OK {
                    return Err(ChaosError::Agent {
                        status: response.status().as_u16(),
                        message: "the event stream was refused".into(),
                    });
                }
                use std::io::Write as _;
                while let Some(frame) = response.body_mut().frame().await {
                    let frame = frame.map_err(|err| {
                        ChaosError::io("reading events", std::io::Error::other(err))
                    })?;
                    if let Some(data) = frame.data_ref() {
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout.write_all(data);
                        let _ = stdout.flush();
                    }
                }
            }
        }
        Ok(())
    }
}

/// `fault list` for people.
fn table(listed: &serde_json::Value) -> String {
    let mut out = format!(
        "{:>4}  {:8}  {:14}  {:16}  {:>10}  {:>10}  {}\n",
        "id", "state", "kind", "mechanism", "matched", "injected", "scope"
    );
    for fault in listed["faults"].as_array().into_iter().flatten() {
        let scope = fault["cgroup"]
            .as_str()
            .or_else(|| fault["interface"].as_str())
            .unwrap_or("-");
        out.push_str(&format!(
            "{:>4}  {:8}  {:14}  {:16}  {:>10}  {:>10}  {scope}\n",
            fault["id"],
            fault["state"].as_str().unwrap_or("?"),
            fault["kind"].as_str().unwrap_or("?"),
            fault["mechanism"].as_str().unwrap_or("?"),
            fault["counters"]["matched"],
            fault["counters"]["injected"],
        ));
    }
    out
}

/// An experiment's faults, armed in a node agent instead of this process. It stops only the
/// faults it armed: the agent may hold other people's.
pub struct AgentInjector {
    pub client: AgentClient,
    pub armed: Vec<u32>,
}

impl AgentInjector {
    /// Stops what this experiment armed and has not stopped yet.
    pub async fn stop_armed(&mut self) {
        for id in std::mem::take(&mut self.armed) {
            let _ = self
                .client
                .json(Method::DELETE, &format!("/v1/faults/{id}"), None)
                .await;
        }
    }
}

impl chaos::experiment::Injector for AgentInjector {
    async fn arm(
        &mut self,
        mut fault: chaos_model::Fault,
        lifetime: std::time::Duration,
    ) -> Result<u32> {
        fault.duration = Some(chaos_model::HumanDuration(lifetime));
        let body = serde_json::to_string(&fault)
            .map_err(|err| ChaosError::io("encoding the fault", std::io::Error::other(err)))?;
        let created = self
            .client
            .json(Method::POST, "/v1/faults", Some(body))
            .await?;
        let id = created["id"]
            .as_u64()
            .map(|id| id as u32)
            .ok_or_else(|| ChaosError::Agent {
                status: 500,
                message: "the agent answered without a fault id".into(),
            })?;
        self.armed.push(id);
        Ok(id)
    }

    async fn stop(&mut self, id: u32) -> Result<chaos::telemetry::Counters> {
        self.armed.retain(|armed| *armed != id);
        let stopped = self
            .client
            .json(Method::DELETE, &format!("/v1/faults/{id}"), None)
            .await?;
        Ok(counters_of(&stopped))
    }

    async fn counters(&mut self, id: u32) -> Option<chaos::telemetry::Counters> {
        let shown = self
            .client
            .json(Method::GET, &format!("/v1/faults/{id}"), None)
            .await
            .ok()?;
        Some(counters_of(&shown))
    }

    async fn stop_all(&mut self) {
        self.stop_armed().await;
    }
}

fn counters_of(view: &serde_json::Value) -> chaos::telemetry::Counters {
    serde_json::from_value(view["counters"].clone()).unwrap_or_default()
}
