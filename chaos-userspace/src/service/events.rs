//! The service's events: every change the engine reports (a fault armed, an injection, a kill
//! round, a fault ended, a warning), converted once to the wire's type and handed to whoever
//! follows. Two ways to follow:
//! - [`EventFeed::follow`]: the recent events, then the live ones; a follower too slow to keep up
//!   is told how many it missed (the agent's `GET /v1/events`).
//! - [`EventFeed::every`]: every event, none lost, for a front end in this process that keeps up
//!   (the terminal of `inject` and `run`, whose `armed` records a program reads back).
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::{broadcast, mpsc};

use crate::{engine::EngineEvent, engine::Sink, wire::Event};

/// Events a new follower is given first, and how far a slow one may fall behind.
pub const RECENT_EVENTS: usize = 1024;

/// One event as the service publishes it.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    /// For an armed fault: the human line a terminal prints and its object's programs.
    pub armed: Option<ArmedText>,
}

#[derive(Debug, Clone)]
pub struct ArmedText {
    /// "chaos-bpf: armed connect-error#1 ... via ... for 60s".
    pub line: String,
    /// Each program as `name (prog id N)`.
    pub programs: Vec<String>,
}

impl From<EngineEvent> for Published {
    fn from(event: EngineEvent) -> Self {
        let (event, armed) = match event {
            EngineEvent::Armed {
                fault,
                line,
                programs,
            } => (Event::Armed { fault }, Some(ArmedText { line, programs })),
            EngineEvent::Injection(injection) => (Event::Injection(injection), None),
            EngineEvent::KillRound(round) => (Event::Kill(round), None),
            EngineEvent::Ended(summary) => (Event::Summary(summary), None),
            EngineEvent::Warning(message) => (Event::Warning { message }, None),
        };
        Self { event, armed }
    }
}

/// The recent events, then the live ones.
pub struct Following {
    pub recent: Vec<Arc<Published>>,
    pub live: broadcast::Receiver<Arc<Published>>,
}

/// The engine's sink in every process: it keeps the recent events and hands each one on.
pub struct EventFeed {
    recent: Mutex<VecDeque<Arc<Published>>>,
    live: broadcast::Sender<Arc<Published>>,
    every: Mutex<Vec<mpsc::UnboundedSender<Arc<Published>>>>,
}

impl Default for EventFeed {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::channel(RECENT_EVENTS).0,
            every: Mutex::new(Vec::new()),
        }
    }
}

impl EventFeed {
    pub fn follow(&self) -> Following {
        // Subscribed before the recent events are read: an event published in between is then
        // seen twice at worst, never missed.
        let live = self.live.subscribe();
        let recent = self
            .recent
            .lock()
            .map(|recent| recent.iter().cloned().collect())
            .unwrap_or_default();
        Following { recent, live }
    }

    pub fn every(&self) -> mpsc::UnboundedReceiver<Arc<Published>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut every) = self.every.lock() {
            every.push(sender);
        }
        receiver
    }
}

impl Sink for EventFeed {
    fn send(&self, event: EngineEvent) {
        let published = Arc::new(Published::from(event));
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&published));
        }
        if let Ok(mut every) = self.every.lock() {
            // A receiver that is gone is forgotten.
            every.retain(|sender| sender.send(Arc::clone(&published)).is_ok());
        }
        // No follower: nothing to do.
        let _ = self.live.send(published);
    }
}

/// Hands each warning of `events` (an object detached early, and why) to `log`, until the
/// feed is gone: what a front end that shows no other event still owes its user.
pub async fn each_warning(mut events: mpsc::UnboundedReceiver<Arc<Published>>, log: impl Fn(&str)) {
    while let Some(published) = events.recv().await {
        if let Event::Warning { message } = &published.event {
            log(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(n: usize) -> EngineEvent {
        EngineEvent::Warning(format!("w{n}"))
    }

    fn message(published: &Published) -> String {
        match &published.event {
            Event::Warning { message } => message.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn followers_get_the_recent_events_then_the_live_ones() {
        let feed = EventFeed::default();
        for n in 0..RECENT_EVENTS + 5 {
            feed.send(warning(n));
        }
        let mut following = feed.follow();
        assert_eq!(following.recent.len(), RECENT_EVENTS);
        assert_eq!(message(&following.recent[0]), "w5", "the oldest go first");
        feed.send(warning(9999));
        let live = following.live.try_recv().expect("a live event");
        assert_eq!(message(&live), "w9999");
    }

    #[test]
    fn every_event_reaches_an_in_process_follower_and_none_is_lost() {
        let feed = EventFeed::default();
        let mut every = feed.every();
        // Beyond what a slow live follower would be given.
        for n in 0..RECENT_EVENTS * 3 {
            feed.send(warning(n));
        }
        let mut got = 0;
        while let Ok(published) = every.try_recv() {
            assert_eq!(message(&published), format!("w{got}"));
            got += 1;
        }
        assert_eq!(got, RECENT_EVENTS * 3);
        drop(every);
        feed.send(warning(0));
        assert!(
            feed.every.lock().unwrap().is_empty(),
            "a dropped follower is forgotten"
        );
    }
}
