//! SIGTERM and Ctrl-C for the front ends that run until told to stop (the foreground run, the
//! agent, experiments). Installed before anything is armed: a signal that arrives while faults
//! are being armed is delivered once they run, so the stop is a clean one (the default action
//! would end the process before it could remove clsact state).
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{ChaosError, Result};

pub struct Termination {
    term: Signal,
    interrupt: Signal,
}

impl Termination {
    pub fn install() -> Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|err| ChaosError::io(format!("installing the {name} handler"), err))
        };
        Ok(Self {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// `work`'s output, unless a signal comes first.
    pub async fn unless<T>(mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            output = work => Some(output),
            () = self.recv() => None,
        }
    }
}
