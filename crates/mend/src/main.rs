//! mend: a self-healing runtime for services. This is the command line: the daemon (`mend run`) and the
//! client commands that talk to it over its HTTP API.

mod chaos;
mod chart;
mod cli;
mod client;
mod daemon;
mod fleet;
mod gameday;
mod heal;
mod history;
mod learn;
mod notify;
mod output;
mod precursor;
mod reload;
mod remote_write;
mod replay;
mod report;
mod rollout;
mod traces;
mod traffic;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The die-with-mend shim runs in every replica before it execs the real program; it must not pay for
    // argument parsing or a runtime.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == mend_supervisor::SHIM_SUBCOMMAND) {
        let error = mend_supervisor::exec_shim(&args[2..]);
        output::error_line(&format!("mend {}: {error}", mend_supervisor::SHIM_SUBCOMMAND));
        return ExitCode::from(127);
    }
    if args.get(1).is_some_and(|arg| arg == mend_supervisor::orphans::REAPER_SUBCOMMAND) {
        let (Some(state_dir), Some(run_tag)) = (args.get(2), args.get(3).and_then(|tag| tag.to_str())) else {
            return ExitCode::from(2);
        };
        mend_supervisor::orphans::run_reaper(std::path::Path::new(state_dir), run_tag);
        return ExitCode::SUCCESS;
    }
    cli::main()
}
