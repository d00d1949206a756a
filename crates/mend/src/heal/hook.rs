//! `hook NAME`: runs the `[hook.NAME]` argv command with the incident in its environment, bounded in
//! time (its whole process group is killed at the timeout), its output captured (bounded) for the journal.

use std::process::Stdio;
use std::time::Duration;

use mend_config::Hook;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;

/// Output kept for the journal, per stream.
pub(crate) const MAX_OUTPUT_BYTES: usize = 4096;

/// Reads `reader` to its end, keeping the first [`MAX_OUTPUT_BYTES`].
pub(crate) async fn bounded(mut reader: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

/// Runs `hook` with `env` added to mend's environment: (succeeded, what happened, its output).
pub(crate) async fn run(hook: &Hook, env: &[(String, String)]) -> (bool, String, String) {
    let Some((program, args)) = hook.command.split_first() else {
        return (false, "the hook's command is empty".to_owned(), String::new());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return (false, format!("cannot run {program:?}: {error}"), String::new()),
    };
    let pid = child.id();
    let stdout = child.stdout.take().map(|out| tokio::spawn(bounded(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(bounded(err)));
    let (succeeded, message) = match tokio::time::timeout(hook.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, format!("hook {} exited 0", hook.name)),
        Ok(Ok(status)) => (false, format!("hook {} failed: {status}", hook.name)),
        Ok(Err(error)) => (false, format!("hook {}: cannot wait for it: {error}", hook.name)),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            (false, format!("hook {} timed out after {}s: killed", hook.name, hook.timeout.as_secs_f64()))
        }
    };
    let mut output = Vec::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        // Bounded: a grandchild that keeps the pipe open was killed with the group.
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(2), reader).await {
            output.extend(bytes);
        }
    }
    output.truncate(MAX_OUTPUT_BYTES);
    (succeeded, message, String::from_utf8_lossy(&output).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hook_gets_its_environment_and_a_slow_one_is_killed_with_its_group() {
        let hook = |command: &[&str], timeout_ms| Hook {
            name: "test".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Duration::from_millis(timeout_ms),
        };
        let env = [("MEND_INCIDENT_ID".to_owned(), "42".to_owned())];
        let (ok, message, output) = run(&hook(&["sh", "-c", "echo incident $MEND_INCIDENT_ID"], 5000), &env).await;
        assert_eq!((ok, message.as_str(), output.as_str()), (true, "hook test exited 0", "incident 42\n"));
        let (ok, message, _) = run(&hook(&["sh", "-c", "exit 3"], 5000), &env).await;
        assert!(!ok && message.contains("exit status: 3"), "{message}");
        // A hook that starts a child and sleeps: both are killed at the timeout, and the output pipe closes.
        let (ok, message, output) = run(&hook(&["sh", "-c", "echo started; sleep 30 & sleep 30"], 300), &env).await;
        assert_eq!(
            (ok, message.as_str(), output.as_str()),
            (false, "hook test timed out after 0.3s: killed", "started\n")
        );
        let (ok, message, _) = run(&hook(&["/nonexistent/hook"], 5000), &env).await;
        assert!(!ok && message.starts_with("cannot run \"/nonexistent/hook\""), "{message}");
        // Output is bounded.
        let (_, _, output) = run(&hook(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"], 5000), &env).await;
        assert_eq!(output.len(), MAX_OUTPUT_BYTES);
    }
}
