//! Library errors. Input and environment problems are the user's to fix and exit with code 2;
//! everything else is a failure of chaos-bpf or the kernel and exits with 1.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A field of a fault (the model) or a flag's value is wrong; the path names it
    /// (`match.port[0]`, or the flag on the command line), and `accepted` says what would do.
    /// Not a `source`: the message is the whole error, printed once.
    #[error("{0}")]
    Field(chaos_model::FieldError),
    /// A problem in a JSON or YAML file. (The inner error is part of this message, not a
    /// separate cause: `{:#}` would print it twice.)
    #[error("{file}: {problem}")]
    InFile {
        file: String,
        problem: Box<ChaosError>,
    },
    /// A command line clap rejected, as one line.
    #[error("{0}")]
    Usage(String),
    /// A problem on one line of an experiment file.
    #[error("{file} line {line}: {problem}")]
    AtLine {
        file: String,
        line: usize,
        problem: Box<ChaosError>,
    },
    /// The engine already holds as many faults as it may.
    #[error(
        "faults: {limit} are armed already, the most this engine holds; accepted: stop one first, or raise --max-faults"
    )]
    Capacity { limit: usize },
    /// The agent refused a request: its HTTP status and message.
    #[error("agent: {message} (HTTP {status})")]
    Agent { status: u16, message: String },
    /// No fault has this id (or it ended long enough ago to be forgotten).
    #[error("fault {0}: no such fault")]
    NotFound(u32),
    #[error(
        "must run as root: loading and attaching eBPF programs needs CAP_BPF, CAP_NET_ADMIN and \
         CAP_SYS_ADMIN (try sudo)"
    )]
    NotRoot,
    /// The kernel lacks what the fault needs; `reason` comes from the same probe `doctor` runs.
    #[error("{fault} needs {mechanism}, which this kernel does not support: {reason}")]
    Unsupported {
        fault: &'static str,
        mechanism: &'static str,
        reason: String,
    },
    #[error("loading the chaos-bpf kernel object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {name}: {reason}")]
    Attach { name: &'static str, reason: String },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ChaosError {
    /// Bad input: the field (a model path or a flag), the problem, and what is accepted.
    pub fn input(field: &str, problem: impl Into<String>, accepted: impl Into<String>) -> Self {
        Self::Field(chaos_model::FieldError::new(field, problem, accepted))
    }

    /// The same error for a fault one level down in a document (`faults[2]` + `scope.cgroup`).
    pub fn within(self, parent: &str) -> Self {
        match self {
            Self::Field(field) => Self::Field(field.within(parent)),
            other => other,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// 2 for what the user can fix (bad input, privileges, kernel support), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Field(_) | Self::Usage(_) | Self::NotRoot | Self::Unsupported { .. } => 2,
            // What the agent refused as the caller's mistake (400, 401, 404, 422, 429).
            Self::Agent { status, .. } if (400..500).contains(status) => 2,
            Self::AtLine { problem, .. } | Self::InFile { problem, .. } => problem.exit_code(),
            _ => 1,
        }
    }
}

impl From<chaos_model::FieldError> for ChaosError {
    fn from(error: chaos_model::FieldError) -> Self {
        ChaosError::Field(error)
    }
}

pub type Result<T, E = ChaosError> = std::result::Result<T, E>;
