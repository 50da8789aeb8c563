//! `chaos-bpf run FILE`: a file of faults, told apart by content: `inject` lines, or a fault
//! set in JSON or YAML (as `chaos-bpf schema` describes).
use chaos_model::{Fault, Format};
use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use super::{args::InjectCommand, flags::one_line_usage_error};
use crate::{error::ChaosError, frontend::cli::flags::on_the_command_line};

/// One line of a run file: an `inject` command without `chaos-bpf inject`.
#[derive(Debug, Parser)]
#[command(name = "chaos-bpf run", no_binary_name = true)]
struct RunLine {
    #[command(subcommand)]
    fault: InjectCommand,
}

/// Where a fault of a `run` file came from, for errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of a file of `inject` lines.
    Line(usize),
    /// `faults[N]` of a JSON or YAML fault set.
    Index(usize),
}

/// Whether a run file is a fault set (JSON or YAML, as `chaos-bpf schema` describes) rather
/// than fault lines, told by its content, whatever its name: the first line that is not blank
/// or a comment opens an object or list (`{`, `[`, `---`) or is a YAML key (`faults:`), which
/// a fault line, a kind and its flags, never is.
pub fn is_fault_set(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .is_some_and(|line| {
            line.starts_with(['{', '['])
                || line.starts_with("---")
                || line
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| word.ends_with(':'))
        })
}

/// The faults of a `run` file (`-` reads standard input), in the model, with where each came
/// from: lines are checked by the same parser as `inject`, JSON and YAML by the model's. Errors
/// name the file and the line or field.
pub fn read_run_file(path: &std::path::Path) -> Result<Vec<(Origin, Fault)>, ChaosError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|err| {
        ChaosError::input(
            "FILE",
            format!("{name}: {err}"),
            "a readable file of fault lines, or - for standard input",
        )
    })?;
    if is_fault_set(&text) {
        let set =
            chaos_model::parse_fault_set(&text, Format::of(Some(&name), &text)).map_err(|err| {
                ChaosError::InFile {
                    file: name.clone(),
                    problem: Box::new(ChaosError::Field(err)),
                }
            })?;
        return Ok(set
            .faults
            .into_iter()
            .enumerate()
            .map(|(index, fault)| (Origin::Index(index), fault))
            .collect());
    }
    let mut faults = Vec::new();
    // Built once: clap builds its whole command tree per parse, which for 10,000 lines was
    // most of a run's arming time.
    let mut command = RunLine::command();
    for (number, line) in text.lines().enumerate() {
        let at_line = |problem: ChaosError| ChaosError::AtLine {
            file: name.clone(),
            line: number + 1,
            problem: Box::new(problem),
        };
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = shlex::split(line).ok_or_else(|| {
            at_line(ChaosError::input(
                "FILE",
                "unbalanced quotes",
                "words as a shell would split them",
            ))
        })?;
        // "chaos-bpf inject drop ..." and "inject drop ..." read as "drop ...".
        let skip = words
            .iter()
            .take(2)
            .take_while(|w| *w == "chaos-bpf" || *w == "inject")
            .count();
        words.drain(..skip);
        let parsed = command
            .try_get_matches_from_mut(&words)
            .and_then(|matches| RunLine::from_arg_matches(&matches))
            .map_err(|err| at_line(ChaosError::Usage(one_line_usage_error(&err))))?;
        let common = parsed.fault.common();
        if common.events.is_some() || common.events_per_cpu_per_sec.is_some() {
            return Err(at_line(ChaosError::input(
                "--events",
                "events are printed for the whole run",
                "chaos-bpf run --events json FILE",
            )));
        }
        if common.metrics.is_some() {
            return Err(at_line(ChaosError::input(
                "--metrics",
                "one endpoint serves the whole run",
                "chaos-bpf run --metrics ADDR FILE",
            )));
        }
        if common.max_duration.is_some() {
            return Err(at_line(ChaosError::input(
                "--max-duration",
                "the limit is the whole run's",
                "chaos-bpf run --max-duration D FILE (a line may set its own --duration)",
            )));
        }
        faults.push((Origin::Line(number + 1), parsed.fault.to_fault()));
    }
    if faults.is_empty() {
        return Err(ChaosError::input(
            "FILE",
            format!("{name} has no fault lines"),
            "one fault per line, as for inject",
        ));
    }
    Ok(faults)
}

/// A refusal of a fault read from run file `file`, named by where the fault came from: its
/// line (shown with flags, as `inject` would) or its place in the fault set.
pub fn refusal(file: &str, origin: Option<&Origin>, error: ChaosError) -> ChaosError {
    match origin {
        Some(Origin::Line(line)) => on_the_command_line(ChaosError::AtLine {
            file: file.to_string(),
            line: *line,
            problem: Box::new(error),
        }),
        Some(Origin::Index(index)) => ChaosError::InFile {
            file: file.to_string(),
            problem: Box::new(error.within(&format!("faults[{index}]"))),
        },
        None => on_the_command_line(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run file's format comes from its content: the bench's JSON file has no extension.
    #[test]
    fn run_files_are_told_apart_by_content() {
        for set in [
            "{\"faults\": []}",
            "  [1]",
            "# a fault set\nfaults:\n  - kind: drop\n",
            "---\nfaults: []",
        ] {
            assert!(is_fault_set(set), "{set:?}");
        }
        for lines in [
            "drop --iface lo --probability 0.3",
            "# two rules\n\nconnect-error --cgroup /x --port 5432 # comment",
            "",
        ] {
            assert!(!is_fault_set(lines), "{lines:?}");
        }
    }
}
