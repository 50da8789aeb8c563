//! Runs an armed fault in the foreground: streams events, prints a status line every second, and
//! stops on `--duration`, Ctrl-C or SIGTERM, always detaching before it returns.
use std::{
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    sync::oneshot,
};

use crate::{
    error::{ChaosError, Result},
    instance::ActiveFault,
    telemetry::{Clock, EventRecord, Summary, status_line},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Json,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub duration: Option<Duration>,
    pub events: Option<EventFormat>,
}

/// SIGTERM and SIGINT, caught from before anything is attached: one arriving while the fault is
/// being armed is delivered once it runs, so the stop is a clean one (the default action would
/// kill the process before it could remove clsact state).
pub struct StopSignals {
    sigterm: Signal,
    sigint: Signal,
}

impl StopSignals {
    pub fn install() -> Result<Self> {
        Ok(Self {
            sigterm: signal(SignalKind::terminate())
                .map_err(|err| ChaosError::io("installing the SIGTERM handler", err))?,
            sigint: signal(SignalKind::interrupt())
                .map_err(|err| ChaosError::io("installing the SIGINT handler", err))?,
        })
    }
}

pub async fn run(
    mut fault: ActiveFault,
    options: RunOptions,
    signals: StopSignals,
) -> Result<Summary> {
    let ring = fault.take_events()?;
    let (stop_reader, stop_signal) = oneshot::channel();
    let reader = tokio::spawn(stream_events(ring, options.events, stop_signal));

    let StopSignals {
        mut sigterm,
        mut sigint,
    } = signals;
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let live = std::io::stderr().is_terminal();

    let ended_by = loop {
        tokio::select! {
            () = &mut deadline => break "duration",
            _ = sigterm.recv() => break "signal",
            _ = sigint.recv() => break "signal",
            _ = ticker.tick() => {
                // A failed read only costs one status line; the run goes on.
                if let Ok(counters) = fault.counters() {
                    let line = status_line(fault.spec.name(), fault.id, fault.armed_at.elapsed(), &counters);
                    if live {
                        eprint!("\r{line}");
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
        }
    };
    if live {
        eprintln!();
    }

    let duration = fault.armed_at.elapsed();
    let (name, id) = (fault.spec.name(), fault.id);
    let cgroup = fault.cgroup.as_ref().map(|c| c.path.display().to_string());
    let cgroup_id = fault.cgroup.as_ref().map(|c| c.id);
    let interface = fault.interface.as_ref().map(|i| i.name.clone());
    let program_ids = fault.programs.iter().map(|(_, id)| *id).collect();
    let counters = fault.stop()?;
    // The programs are detached; let the reader drain what they emitted before the summary.
    let _ = stop_reader.send(());
    let events_emitted = reader.await.unwrap_or(0);

    Ok(Summary {
        record_type: "summary",
        fault: name,
        fault_id: id,
        matched: counters.matched,
        injected: counters.injected,
        duration_ms: duration.as_millis() as u64,
        events_emitted,
        events_sampled_out: counters.events_sampled_out,
        events_lost: counters.events_lost,
        program_ids,
        cgroup,
        cgroup_id,
        interface,
        ended_by,
    })
}

/// Prints events until told to stop, then drains the ring. Returns how many it read.
async fn stream_events(
    ring: RingBuf<MapData>,
    format: Option<EventFormat>,
    mut stop: oneshot::Receiver<()>,
) -> u64 {
    let clock = Clock::now();
    // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let Ok(mut ring) =
        (unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) })
    else {
        return 0;
    };
    let mut emitted = 0;
    loop {
        let stopping = tokio::select! {
            _ = &mut stop => true,
            guard = ring.readable_mut() => {
                match guard {
                    Ok(mut guard) => {
                        emitted += drain(guard.get_inner_mut(), format, &clock);
                        guard.clear_ready();
                        false
                    }
                    Err(_) => true,
                }
            }
        };
        if stopping {
            emitted += drain(ring.get_mut(), format, &clock);
            return emitted;
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, format: Option<EventFormat>, clock: &Clock) -> u64 {
    let mut stdout = std::io::stdout().lock();
    let mut count = 0;
    while let Some(item) = ring.next() {
        count += 1;
        if format == Some(EventFormat::Json)
            && let Some(record) = EventRecord::from_bytes(&item, clock)
            && let Ok(line) = serde_json::to_string(&record)
        {
            let _ = writeln!(stdout, "{line}");
        }
    }
    let _ = stdout.flush();
    count
}
