//! `chaos-bpf fault ...`: the agent's API from the command line. One HTTP/1 connection per
//! command through hyper, over TCP or the agent's Unix socket alike.
use std::path::PathBuf;

use crate::error::{ChaosError, Result};
use chaos_model::Format;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;

use serde::de::DeserializeOwned;

use crate::{
    frontend::{cli::args::FaultCommand, to_json},
    wire::{self, Counters, Event, FaultId, FaultList, FaultView, Listen, StoppedAll},
};

/// Where the agent is and how to prove who we are.
pub struct AgentClient {
    pub agent: Listen,
    pub token_file: Option<PathBuf>,
}

type Response = hyper::Response<hyper::body::Incoming>;

impl AgentClient {
    async fn send(&self, method: Method, path: &str, body: Option<String>) -> Result<Response> {
        let unreachable = |err: std::io::Error| {
            let whose = match err.kind() {
                std::io::ErrorKind::PermissionDenied => " (the socket is root's alone)",
                _ => "",
            };
            ChaosError::io(format!("reaching the agent at {}{whose}", self.agent), err)
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

    /// The answer, typed; an error status becomes one line with the agent's message.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T> {
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
        if !status.is_success() {
            let message = serde_json::from_slice::<wire::ApiError>(&bytes).map_or_else(
                |_| String::from_utf8_lossy(&bytes).into_owned(),
                |e| e.error,
            );
            return Err(ChaosError::Agent {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| ChaosError::Agent {
            status: status.as_u16(),
            message: format!("an answer this client cannot read: {err}"),
        })
    }

    pub async fn create(&self, fault: &chaos_model::Fault) -> Result<FaultView> {
        let body = serde_json::to_string(fault)
            .map_err(|err| ChaosError::io("encoding the fault", std::io::Error::other(err)))?;
        self.call(Method::POST, "/v1/faults", Some(body)).await
    }

    pub async fn list(&self) -> Result<FaultList> {
        self.call(Method::GET, "/v1/faults", None).await
    }

    pub async fn show(&self, id: FaultId) -> Result<FaultView> {
        self.call(Method::GET, &format!("/v1/faults/{id}"), None)
            .await
    }

    pub async fn stop(&self, id: FaultId) -> Result<FaultView> {
        self.call(Method::DELETE, &format!("/v1/faults/{id}"), None)
            .await
    }

    pub async fn stop_all(&self) -> Result<StoppedAll> {
        self.call(Method::POST, "/v1/faults:stop-all", None).await
    }

    /// `chaos-bpf fault ...`: the answers as JSON on stdout (`list` as a table unless --json).
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
                println!("{}", to_json(&self.create(&fault).await?, false)?);
            }
            FaultCommand::List { json: true } => {
                println!("{}", to_json(&self.list().await?, false)?);
            }
            FaultCommand::List { json: false } => print!("{}", table(&self.list().await?)),
            FaultCommand::Show { id } => println!("{}", to_json(&self.show(id).await?, true)?),
            FaultCommand::Stop { id: Some(id), .. } => {
                println!("{}", to_json(&self.stop(id).await?, false)?);
            }
            FaultCommand::Stop { id: None, .. } => {
                println!("{}", to_json(&self.stop_all().await?, false)?);
            }
            FaultCommand::Events { follow } => self.events(follow).await?,
        }
        Ok(())
    }

    /// The event stream, one line per event, each read as the wire's event type first.
    async fn events(&self, follow: bool) -> Result<()> {
        use std::io::Write as _;
        let path = format!("/v1/events?follow={follow}");
        let mut response = self.send(Method::GET, &path, None).await?;
        if response.status() != StatusCode::OK {
            return Err(ChaosError::Agent {
                status: response.status().as_u16(),
                message: "the event stream was refused".into(),
            });
        }
        let mut pending = Vec::new();
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame
                .map_err(|err| ChaosError::io("reading events", std::io::Error::other(err)))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Event =
                    serde_json::from_slice(&line).map_err(|err| ChaosError::Agent {
                        status: 200,
                        message: format!("an event this client cannot read: {err}"),
                    })?;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{}", to_json(&event, false)?);
                let _ = stdout.flush();
            }
        }
        Ok(())
    }
}

/// `fault list` for people.
fn table(listed: &FaultList) -> String {
    let mut out = format!(
        "{:>4}  {:8}  {:14}  {:16}  {:>10}  {:>10}  {}\n",
        "id", "state", "kind", "mechanism", "matched", "injected", "scope"
    );
    for fault in &listed.faults {
        let scope = fault
            .cgroup
            .as_deref()
            .or(fault.interface.as_deref())
            .unwrap_or("-");
        out.push_str(&format!(
            "{:>4}  {:8}  {:14}  {:16}  {:>10}  {:>10}  {scope}\n",
            fault.id,
            fault.state.to_string(),
            fault.kind,
            fault.mechanism,
            fault.counters.matched,
            fault.counters.injected,
        ));
    }
    out
}

/// An experiment's faults, armed in a node agent instead of this process. It stops only the
/// faults it armed: the agent may hold other people's.
pub struct AgentInjector {
    pub client: AgentClient,
    pub armed: Vec<FaultId>,
}

impl AgentInjector {
    /// Stops what this experiment armed and has not stopped yet.
    pub async fn stop_armed(&mut self) {
        for id in std::mem::take(&mut self.armed) {
            let _ = self.client.stop(id).await;
        }
    }
}

impl crate::experiment::Injector for AgentInjector {
    async fn arm(
        &mut self,
        _index: usize,
        mut fault: chaos_model::Fault,
        lifetime: std::time::Duration,
    ) -> Result<FaultId> {
        fault.duration = Some(chaos_model::HumanDuration(lifetime));
        let id = self.client.create(&fault).await?.id;
        self.armed.push(id);
        Ok(id)
    }

    async fn stop(&mut self, id: FaultId) -> Result<Counters> {
        self.armed.retain(|armed| *armed != id);
        Ok(self.client.stop(id).await?.counters)
    }

    async fn counters(&mut self, id: FaultId) -> Option<Counters> {
        self.client.show(id).await.ok().map(|view| view.counters)
    }

    async fn stop_all(&mut self) {
        self.stop_armed().await;
    }
}
