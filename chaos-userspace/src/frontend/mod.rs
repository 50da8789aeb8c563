//! The front ends a person or program drives: each turns its input into the fault model and
//! calls the fault service ([`crate::service`]), in this process or through an agent.
pub mod cli;
pub mod client;
pub mod experiment;
pub mod foreground;
pub mod maintenance;

/// A value as the JSON a front end prints: one line, or pretty for people.
pub fn to_json(value: &impl serde::Serialize, pretty: bool) -> crate::error::Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|err| crate::error::ChaosError::io("encoding JSON", std::io::Error::other(err)))
}
