//! Spawning replica processes: argv building, program lookup, process groups, and the die-with-mend shim.
//!
//! Every replica is the leader of its own process group, so that stopping it signals everything it
//! started. When mend runs with a shim (`mend __exec`), the shim sets `PR_SET_PDEATHSIG` to SIGKILL and
//! then execs the real program: if mend is killed with SIGKILL, its replicas die with it instead of living
//! on unsupervised. Because the kernel sends that signal when the *thread* that forked the child exits,
//! all spawns happen on one dedicated thread that lives as long as mend.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The hidden subcommand of the mend binary that sets the parent-death signal and execs the replica.
pub const SHIM_SUBCOMMAND: &str = "__exec";

/// What to spawn.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// argv; `argv[0]` is looked up like a shell would, then next to the mend binary.
    pub argv: Vec<String>,
    /// Run `argv[0]` through `/bin/sh -c`.
    pub shell: bool,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: PathBuf,
}

/// A spawned process.
#[derive(Debug)]
pub struct Spawned {
    /// The child; its stdout and stderr are piped.
    pub child: Child,
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// The program actually run.
    pub program: PathBuf,
}

/// What mend's own environment holds for mend alone: systemd's notification socket and watchdog (a
/// replica that speaks `sd_notify` would otherwise report on mend's unit), and its socket activation.
const NOT_FOR_REPLICAS: [&str; 6] =
    ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

type Job = (SpawnRequest, oneshot::Sender<io::Result<Spawned>>);

/// Spawns processes on a dedicated, long-lived thread.
#[derive(Debug, Clone)]
pub struct Spawner {
    jobs: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread. `shim` is the mend binary to run as `mend __exec` (None: spawn directly,
    /// without the parent-death guarantee).
    pub fn start(runtime: tokio::runtime::Handle, shim: Option<PathBuf>) -> io::Result<Self> {
        let (jobs, inbox) = std_mpsc::channel::<Job>();
        let self_dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
        std::thread::Builder::new().name("mend-spawner".into()).spawn(move || {
            // tokio's child reaper needs the runtime context on this thread.
            let _guard = runtime.enter();
            while let Ok((request, reply)) = inbox.recv() {
                let _ = reply.send(spawn_now(&request, shim.as_deref(), self_dir.as_deref()));
            }
        })?;
        Ok(Self { jobs })
    }

    /// Spawns `request` and returns the child.
    pub async fn spawn(&self, request: SpawnRequest) -> io::Result<Spawned> {
        let (reply, result) = oneshot::channel();
        self.jobs.send((request, reply)).map_err(|_| io::Error::other("spawner thread is gone"))?;
        result.await.map_err(|_| io::Error::other("spawner thread dropped the request"))?
    }
}

fn spawn_now(request: &SpawnRequest, shim: Option<&Path>, self_dir: Option<&Path>) -> io::Result<Spawned> {
    let (program, args): (PathBuf, Vec<OsString>) = if request.shell {
        let script = request.argv.first().cloned().unwrap_or_default();
        (PathBuf::from("/bin/sh"), vec!["-c".into(), script.into()])
    } else {
        let (first, rest) = request.argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
        let program = resolve_program(first, &request.working_dir, std::env::var_os("PATH"), self_dir)?;
        (program, rest.iter().map(OsString::from).collect())
    };
    let mut command = match shim {
        Some(shim) => {
            let mut command = Command::new(shim);
            command.arg(SHIM_SUBCOMMAND).arg(std::process::id().to_string()).arg("--").arg(&program).args(&args);
            command
        }
        None => {
            let mut command = Command::new(&program);
            command.args(&args);
            command
        }
    };
    for name in NOT_FOR_REPLICAS {
        command.env_remove(name);
    }
    command
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&request.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let child =
        command.spawn().map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", program.display())))?;
    let pid = child.id().ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
    Ok(Spawned { child, pid, program })
}

/// Finds the program to run: a path with a `/` is taken as is (relative to the working directory);
/// a bare name is searched in `PATH`, then in the directory of the mend binary (so that `mend-demo` works
/// from a build directory without installing it).
pub fn resolve_program(
    name: &str,
    working_dir: &Path,
    path: Option<OsString>,
    self_dir: Option<&Path>,
) -> io::Result<PathBuf> {
    if name.contains('/') {
        let program = working_dir.join(name);
        return if is_executable(&program) {
            Ok(program)
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: not found or not executable", program.display())))
        };
    }
    let mut searched: Vec<PathBuf> = path.as_ref().map(|p| std::env::split_paths(p).collect()).unwrap_or_default();
    searched.extend(self_dir.map(Path::to_path_buf));
    searched.iter().map(|dir| dir.join(name)).find(|candidate| is_executable(candidate)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("command {name:?} not found in PATH or next to the mend binary"),
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The shim's work, run by `mend __exec PARENT_PID -- PROGRAM ARGS...` in the child: make the kernel
/// SIGKILL this process when mend dies, then become the program. Returns only on error.
pub fn exec_shim(args: &[OsString]) -> io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let (Some(parent), Some(separator)) = (args.first(), args.get(1)) else {
        return io::Error::other("usage: mend __exec PARENT_PID -- PROGRAM [ARGS...]");
    };
    if separator != "--" || args.len() < 3 {
        return io::Error::other("usage: mend __exec PARENT_PID -- PROGRAM [ARGS...]");
    }
    if let Err(errno) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        return io::Error::other(format!("prctl(PR_SET_PDEATHSIG): {errno}"));
    }
    // mend may have died between fork and prctl; then nobody would ever signal us.
    let expected_parent = parent.to_str().and_then(|p| p.parse::<i32>().ok());
    if expected_parent != Some(nix::unistd::getppid().as_raw()) {
        return io::Error::other("mend exited before the replica started");
    }
    let argv: Result<Vec<CString>, _> = args[2..].iter().map(|arg| CString::new(arg.as_bytes())).collect();
    let Ok(argv) = argv else { return io::Error::other("argument contains a NUL byte") };
    match nix::unistd::execv(&argv[0], &argv) {
        Ok(never) => match never {},
        Err(errno) => io::Error::other(format!("exec {:?}: {errno}", args[2])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_bare_names_in_path_then_next_to_mend() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tool = dir.path().join("my-tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let empty_path = Some(OsString::from("/nonexistent"));
        assert_eq!(
            resolve_program("my-tool", Path::new("/"), empty_path.clone(), Some(dir.path())).ok(),
            Some(tool.clone())
        );
        assert_eq!(
            resolve_program("sh", Path::new("/"), Some("/bin".into()), None).ok(),
            Some(PathBuf::from("/bin/sh"))
        );
        let missing =
            resolve_program("no-such-tool", Path::new("/"), empty_path, Some(dir.path())).expect_err("missing");
        assert_eq!(missing.to_string(), "command \"no-such-tool\" not found in PATH or next to the mend binary");
        assert_eq!(resolve_program("./my-tool", dir.path(), None, None).ok(), Some(dir.path().join("./my-tool")));
        // Not executable: refused.
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        assert!(resolve_program("./my-tool", dir.path(), None, None).is_err());
    }

    #[tokio::test]
    async fn spawned_processes_lead_their_own_group() {
        let spawner = Spawner::start(tokio::runtime::Handle::current(), None).expect("spawner thread");
        let request = SpawnRequest {
            argv: vec!["sleep".into(), "10".into()],
            shell: false,
            env: vec![],
            working_dir: PathBuf::from("/"),
        };
        let mut spawned = spawner.spawn(request).await.expect("spawn sleep");
        let sample = mend_observe::process::sample(spawned.pid).expect("child is alive");
        assert_eq!(sample.pgid, spawned.pid as i32);
        spawned.child.kill().await.expect("kill child");
    }
}
