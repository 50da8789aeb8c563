//! The front ends a person or program drives: each turns its input into the fault model and
//! calls the fault service ([`crate::service`]), in this process or through an agent.
pub mod cli;
pub mod client;
pub mod experiment;
pub mod foreground;
pub mod maintenance;
