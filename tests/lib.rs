//! Shared helpers for nnc's integration tests: paths, the Python with onnx,
//! the `nnc` binary, scratch directories and time limits.

use std::ffi::{c_int, c_long, c_void};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A bundled example model, e.g. `example("mnist_cnn.onnx")`.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// Prints why a test does nothing here (shown with `--nocapture`, and in
/// the output of a failing run).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// A Python that can import every module in `modules`: `$PY`, then the
/// repository's `.venv` (scripts/python-env.sh makes it), then `python3`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(py) = std::env::var_os("PY").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(py));
    }
    candidates.push(root().join(".venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let probe = format!("import {}", modules.join(", "));
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The directory cargo builds this test into: `target/<profile>`.
pub fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash>
    Some(exe.parent()?.parent()?.to_path_buf())
}

/// The `nnc` command-line binary: `$NNC_BIN`, else `target/<profile>/nnc`
/// of the profile these tests were built with. `cargo test --workspace`
/// builds it; `cargo test -p nnc-tests` does not, so it may be missing (or
/// older than the libraries the tests link).
pub fn nnc_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NNC_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let p = profile_dir()?.join("nnc");
    p.is_file().then_some(p)
}

/// A scratch directory removed on drop (kept if `NNC_KEEP_TMP` is set).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "nnc-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create scratch directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("NNC_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("kept {}", self.path.display());
        }
    }
}

/// What a child process did within its time limit.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd`, capturing its output; `Ok(None)` if it had to be killed
/// after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> std::io::Result<Option<Finished>> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(Finished {
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
                elapsed: start.elapsed(),
            }));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How a closure run under [`guarded`] ended.
#[derive(Debug)]
pub enum Guarded<T> {
    Done(T),
    /// It panicked; the payload's message.
    Panicked(String),
    /// Still running after the limit (the thread is left behind).
    TimedOut,
}

thread_local! {
    /// Where the last panic on this thread happened (`file:line:col`).
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Wraps the panic hook (once) so that panics also record their location
/// for [`guarded`], which reports it with the message.
fn record_panic_locations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(l) = info.location() {
                // The innermost nnc function on the stack: the location alone
                // may be inside core (e.g. `i64::abs` overflowing).
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                let func = bt
                    .lines()
                    .filter_map(|l| l.trim_start().split_once(": ").map(|(_, f)| f))
                    .find(|f| {
                        (f.starts_with("nnc_") || f.starts_with("nnc::"))
                            && !f.starts_with("nnc_tests")
                    })
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default();
                PANIC_AT.with(|p| {
                    *p.borrow_mut() =
                        Some(format!("{}:{}:{}{func}", l.file(), l.line(), l.column()))
                });
            }
            if std::env::var_os("NNC_QUIET_PANICS").is_none() {
                previous(info);
            }
        }));
    });
}

/// Runs `f` on its own thread with a time limit, catching panics; a
/// panic's message is followed by ` at FILE:LINE:COL`.
pub fn guarded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Guarded<T> {
    record_panic_locations();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("nnc-guarded".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
                let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
                format!("{} at {at}", panic_message(&*payload))
            });
            let _ = tx.send(r);
        });
    if spawned.is_err() {
        return Guarded::Panicked("could not spawn a thread".into());
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Guarded::Done(v),
        Ok(Err(msg)) => Guarded::Panicked(msg),
        Err(_) => Guarded::TimedOut,
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Checks that an error message is one line without control characters
/// (names from a model must not be able to break a log line or drive a
/// terminal). The one designed exception is the middle end's list of
/// unsupported nodes: `N node(s) cannot be compiled:` then one
/// `  node ...` line each.
pub fn check_one_line(msg: &str) -> Result<(), String> {
    let lines: Vec<&str> = msg.split('\n').collect();
    if lines.len() > 1
        && !(lines[0].ends_with("cannot be compiled:")
            && lines[1..].iter().all(|l| l.starts_with("  node ")))
    {
        return Err(format!("message spans {} lines: {msg:?}", lines.len()));
    }
    if let Some(c) = msg.chars().find(|&c| c.is_control() && c != '\n') {
        return Err(format!("message contains control character {c:?}: {msg:?}"));
    }
    if msg.contains("panicked") {
        return Err(format!("message mentions a panic: {msg:?}"));
    }
    Ok(())
}

/// The environment variable that marks a child test process.
const CHILD_ENV: &str = "NNC_TEST_CHILD";

/// Whether this process is the child that [`run_in_child`] started for
/// test `name`. Tests that may crash the process (a segfault in generated
/// code, SIGFPE...) do their work only here, so that the parent can report
/// the crash instead of dying with it.
pub fn in_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
}

/// Runs test `name` of this test binary in a child process (see
/// [`in_child`]); `None` if it had to be killed after `limit`.
pub fn run_in_child(name: &str, limit: Duration) -> Option<Finished> {
    let exe = std::env::current_exe().expect("current test executable");
    run_with_timeout(
        Command::new(exe)
            .args([
                name,
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, name),
        limit,
    )
    .expect("spawn the test binary")
}

/// Describes how a child ended, for assertion messages: exit code or the
/// signal that killed it (11 = SIGSEGV, 8 = SIGFPE, 4 = SIGILL, 7 = SIGBUS).
pub fn describe_exit(f: &Finished) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (f.status.code(), f.status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

// ---------------------------------------------------------------------------
// Guard pages (Linux): buffers that fault on any stray access.
// ---------------------------------------------------------------------------

extern "C" {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fn sysconf(name: c_int) -> c_long;
}

const PROT_NONE: c_int = 0;
const PROT_READ_WRITE: c_int = 3;
const MAP_PRIVATE_ANONYMOUS: c_int = 0x02 | 0x20;
const SC_PAGESIZE: c_int = 30;

/// A buffer placed right against an inaccessible page: at the end of its
/// mapping (any read/write past the end faults) or at the start (any
/// access before the start faults).
pub struct GuardBuf {
    map: *mut u8,
    map_len: usize,
    /// The buffer: `len` bytes.
    pub ptr: *mut u8,
    pub len: usize,
}

#[derive(Clone, Copy, Debug)]
pub enum Place {
    /// Overruns hit the guard page.
    End,
    /// Underruns hit the guard page.
    Start,
}

impl GuardBuf {
    pub fn new(len: usize, align: usize, place: Place) -> GuardBuf {
        // SAFETY: plain POSIX calls on memory this struct owns.
        unsafe {
            let page = sysconf(SC_PAGESIZE) as usize;
            let data = len.max(1).div_ceil(page) * page;
            let map_len = data + 2 * page;
            let map = mmap(
                std::ptr::null_mut(),
                map_len,
                PROT_READ_WRITE,
                MAP_PRIVATE_ANONYMOUS,
                -1,
                0,
            );
            assert!(map as isize != -1, "mmap failed");
            let map = map as *mut u8;
            assert_eq!(mprotect(map.cast(), page, PROT_NONE), 0);
            assert_eq!(mprotect(map.add(page + data).cast(), page, PROT_NONE), 0);
            let ptr = match place {
                // Rounded up to the alignment, so up to align-1 bytes of
                // slack remain after the end for aligned buffers.
                Place::End => map.add(page + data - len.next_multiple_of(align)),
                Place::Start => map.add(page),
            };
            GuardBuf {
                map,
                map_len,
                ptr,
                len,
            }
        }
    }

    pub fn from_bytes(bytes: &[u8], align: usize, place: Place) -> GuardBuf {
        let b = GuardBuf::new(bytes.len(), align, place);
        // SAFETY: `ptr` has `len` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr, bytes.len()) };
        b
    }

    pub fn fill(&mut self, byte: u8) {
        // SAFETY: `ptr` has `len` writable bytes.
        unsafe { std::ptr::write_bytes(self.ptr, byte, self.len) };
    }

    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: `ptr` has `len` readable bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len).to_vec() }
    }
}

impl Drop for GuardBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new`.
        unsafe { munmap(self.map.cast(), self.map_len) };
    }
}
