//! The command line: arguments (`args`), flags → the fault model (`flags`), run files
//! (`run_file`). It builds faults of the model and nothing else; the service does the rest.
pub mod args;
pub mod flags;
pub mod run_file;
