//! The state directory is mend's alone: how it and every file in it are created, checked and opened.
//!
//! mend often runs as root, and its state directory holds what it writes (the lock, the run tag, pid
//! files, replica logs, the event store) and what it serves (`GET .../logs`). Whoever could write there
//! could make mend overwrite any file through a planted symlink, append a replica's output to it, or
//! serve a secret through the logs API (issue 20). So:
//! - the directory must be owned by mend's user and not writable by group or others ([`check_root`]);
//!   mend creates it 0700, and the directories in it 0700 ([`ensure_dir`]), whatever the umask;
//! - files are created 0600 whatever the umask, never through a symlink (`O_NOFOLLOW`), and replaced
//!   by writing a new file exclusively (`O_EXCL`) and renaming it over the old one ([`replace_file`]);
//! - a file opened for appending or reading must be a regular file of mend's user with one link
//!   ([`open_append`], [`open_read`]): not a symlink, FIFO, device, or hard link to someone's secret.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::libc;

/// Mode of the directories mend creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files mend creates.
pub const FILE_MODE: u32 = 0o600;

/// Why the state directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It could not be created or examined.
    #[error("cannot use the state directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// It is something other than a directory.
    #[error("the state directory {path} is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// Another user owns it.
    #[error(
        "the state directory {path} is owned by uid {owner}, not by mend's user (uid {euid}): whoever owns it \
         could make mend overwrite or serve any file; use a directory of mend's user (chown it, or pick another \
         --state-dir)"
    )]
    ForeignOwner {
        /// The path.
        path: String,
        /// Its owner.
        owner: u32,
        /// mend's effective uid.
        euid: u32,
    },
    /// Group or others may write in it.
    #[error(
        "the state directory {path} is writable by {who} (mode {mode:04o}): anyone who can write there could make \
         mend overwrite or serve any file; run `chmod go-w {path}` (mend creates it 0700)"
    )]
    Writable {
        /// The path.
        path: String,
        /// "its group", "others" or "its group and others".
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates the state directory (0700, whatever the umask) if it does not exist, and refuses it when it
/// is not a directory, belongs to another user, or group or others may write in it. A symlink to a
/// directory is followed (systemd's `DynamicUser=` makes one); the directory it names is what is checked.
/// Nothing is changed in a directory that exists (systemd's `StateDirectoryMode=0700`, or 0755 for a
/// directory others may read, are both fine: the files in it are 0600).
pub fn check_root(state_dir: &Path) -> Result<(), StateDirError> {
    let io_error = |source| StateDirError::Io { path: state_dir.display().to_string(), source };
    if let Some(parent) = state_dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(state_dir) {
        Ok(()) => fs::set_permissions(state_dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_error)?,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error(error)),
    }
    let meta = fs::metadata(state_dir).map_err(io_error)?;
    check_dir_meta(state_dir, &meta)
}

fn check_dir_meta(path: &Path, meta: &fs::Metadata) -> Result<(), StateDirError> {
    let display = path.display().to_string();
    if !meta.is_dir() {
        return Err(StateDirError::NotADirectory { path: display });
    }
    if meta.uid() != euid() {
        return Err(StateDirError::ForeignOwner { path: display, owner: meta.uid(), euid: euid() });
    }
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return Ok(()),
    };
    Err(StateDirError::Writable { path: display, who, mode })
}

/// Creates `dir` and its missing ancestors 0700 (whatever the umask), and checks that `dir` is a real
/// directory (not a symlink) of mend's user that group and others cannot write to.
/// For the directories inside the state directory (`run`, `logs`, `logs/<service>`).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).recursive(true).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::other(format!(
            "{} is a symlink: mend does not follow those in its state directory",
            dir.display()
        )));
    }
    // Nobody else can add, rename or remove an entry here: what mend opens in it is what it made.
    check_dir_meta(dir, &meta).map_err(io::Error::other)
}

/// Checks an open file: a regular file of mend's user with one link (not a FIFO or device, nor a hard
/// link to someone else's file).
fn check_file(path: &Path, file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    let refuse =
        |why: &str| Err(io::Error::other(format!("{} {why}: mend refuses it in its state directory", path.display())));
    if !meta.is_file() {
        return refuse("is not a regular file");
    }
    if meta.uid() != euid() {
        return refuse("belongs to another user");
    }
    if meta.nlink() > 1 {
        return refuse("has other hard links");
    }
    Ok(())
}

/// Opens `path` for appending, creating it 0600 (whatever the umask), never through a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| symlink_error(path, error))?;
    check_file(path, &file)?;
    // The umask may have taken bits from 0600 (never added any); the mode is exact either way.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Opens `path` for reading and writing, creating it 0600 if missing, never through a symlink (the lock
/// file).
pub fn open_read_write(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| symlink_error(path, error))?;
    check_file(path, &file)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Opens `path` for reading, never through a symlink, and only if it is a regular file of mend's user
/// (a planted FIFO would block the reader; `O_NONBLOCK` makes opening it return at once).
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| symlink_error(path, error))?;
    check_file(path, &file)?;
    Ok(file)
}

/// Replaces `path` with a new 0600 file holding `contents`: written to a fresh temporary file created
/// exclusively (`O_EXCL | O_NOFOLLOW`, so nothing planted is followed or reused), then renamed over
/// `path` (a rename replaces a planted symlink rather than following it).
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temporary)?;
    let written = file
        .set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Reads a small file of the state directory (a pid file, the run tag) through [`open_read`].
pub fn read_to_string(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    open_read(path)?.take(64 * 1024).read_to_string(&mut text)?;
    Ok(text)
}

/// `ELOOP` from `O_NOFOLLOW` means the path is a symlink: say so.
fn symlink_error(path: &Path, error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!("{} is a symlink: mend does not follow those in its state directory", path.display()))
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_0600_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("secret");
        fs::write(&secret, "root only\n").expect("write");
        let link = dir.path().join("0.log");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        let refused = open_append(&link).expect_err("a symlink");
        assert!(
            refused.to_string().ends_with("0.log is a symlink: mend does not follow those in its state directory"),
            "{refused}"
        );
        assert!(open_read(&link).is_err());
        assert_eq!(fs::read_to_string(&secret).expect("read"), "root only\n", "nothing written through the link");
        // A replacement renames over the symlink instead of writing through it.
        replace_file(&link, b"42\n").expect("replace");
        assert_eq!(fs::read_to_string(&secret).expect("read"), "root only\n");
        let meta = fs::symlink_metadata(&link).expect("stat");
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, FILE_MODE);
        // A hard link to another file is refused too.
        let hard = dir.path().join("1.log");
        fs::hard_link(&secret, &hard).expect("hard link");
        assert!(open_append(&hard).expect_err("a hard link").to_string().contains("has other hard links"));
    }

    #[test]
    fn directories_writable_by_others_are_refused_and_new_ones_are_0700() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        check_root(&state).expect("a new state directory");
        assert_eq!(fs::metadata(&state).expect("stat").mode() & 0o777, DIR_MODE);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).expect("chmod");
        let refused = check_root(&state).expect_err("world-writable").to_string();
        assert!(refused.contains("is writable by its group and others (mode 0777)"), "{refused}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).expect("chmod");
        check_root(&state).expect("0755 is fine");
        ensure_dir(&state.join("logs").join("web")).expect("subdirectories");
        assert_eq!(fs::metadata(state.join("logs")).expect("stat").mode() & 0o777, DIR_MODE);
        // A planted symlink instead of a subdirectory is refused.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, state.join("run")).expect("symlink");
        assert!(ensure_dir(&state.join("run")).expect_err("a symlink").to_string().contains("is a symlink"));
    }
}
