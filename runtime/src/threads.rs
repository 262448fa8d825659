//! A small persistent thread pool that implements `nnc_threads`.
//!
//! Generated code splits its loops into tasks and hands them to
//! `parallel_for`; it never creates threads itself. This pool keeps `n - 1`
//! workers parked on a condition variable and lets the calling thread take
//! part, so `n` tasks run at once. Tasks are claimed from an atomic counter,
//! which balances uneven tasks without any per-task allocation. Idle threads
//! spin briefly before blocking, so back-to-back loops (one per operator)
//! cost well under a microsecond each instead of a futex wake-up.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::abi;

/// One `parallel_for` call. Lives on the caller's stack; workers only reach
/// it through `State::job` and are waited for before the call returns.
struct Job {
    f: unsafe extern "C" fn(*mut c_void, usize),
    ctx: *mut c_void,
    num_tasks: usize,
    next: AtomicUsize,
}

impl Job {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.num_tasks {
                return;
            }
            // SAFETY: the `parallel_for` contract: `f(ctx, i)` is valid for
            // every i < num_tasks, from any thread.
            unsafe { (self.f)(self.ctx, i) };
        }
    }
}

struct State {
    /// The job being run, or null. Workers may only join while it is set.
    job: *const Job,
    /// Bumped for each job (and on shutdown) so a worker never joins the
    /// same job twice.
    generation: u64,
    /// Workers blocked on `work`; when zero, publishing skips the syscall.
    sleeping: usize,
    /// The caller is blocked on `done`.
    caller_waiting: bool,
    shutdown: bool,
}

// SAFETY: `job` is only dereferenced by workers counted in `active`, and the
// owner of the `Job` waits for `active == 0` before the `Job` goes away.
unsafe impl Send for State {}

struct Shared {
    state: Mutex<State>,
    /// Copy of `State::generation`, so idle workers can spin without the lock.
    epoch: AtomicU64,
    /// Workers that joined the current job and have not finished with it.
    /// Changed only under `state`'s lock; read without it by a spinning caller.
    active: AtomicUsize,
    /// Wakes workers: a new job or shutdown.
    work: Condvar,
    /// Wakes the caller: the last active worker left the job.
    done: Condvar,
    /// Serializes `parallel_for` calls from different threads.
    run: Mutex<()>,
    /// Workers plus the caller; fixed once the pool is built.
    num_threads: AtomicUsize,
}

/// How long idle threads spin before blocking. Generated code calls
/// `parallel_for` once per parallel operator, back to back; spinning across
/// those short gaps avoids a futex wake-up per operator, and the bound keeps
/// an idle pool from burning CPU.
const SPIN: Duration = Duration::from_micros(50);

/// Spins (politely) until `done()` or `SPIN` elapses; returns `done()`.
fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return done();
        }
        // Give the CPU away in case threads outnumber cores.
        std::thread::yield_now();
    }
}

/// Never panics on poisoning: no code holding these locks can panic, and a
/// panic inside `extern "C"` code would abort the process anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// True on pool workers and on a caller while it runs tasks: a nested
    /// `parallel_for` then runs inline instead of deadlocking on `run`.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

impl Shared {
    fn parallel_for(
        &self,
        num_tasks: usize,
        f: unsafe extern "C" fn(*mut c_void, usize),
        ctx: *mut c_void,
    ) {
        let job = Job {
            f,
            ctx,
            num_tasks,
            next: AtomicUsize::new(0),
        };
        if num_tasks <= 1
            || self.num_threads.load(Ordering::Relaxed) <= 1
            || IN_POOL.with(Cell::get)
        {
            job.work();
            return;
        }
        let _serial = lock(&self.run);
        {
            let mut st = lock(&self.state);
            st.job = &job;
            st.generation = st.generation.wrapping_add(1);
            self.epoch.store(st.generation, Ordering::Release);
            if st.sleeping > 0 {
                self.work.notify_all();
            }
        }
        IN_POOL.with(|c| c.set(true));
        job.work();
        IN_POOL.with(|c| c.set(false));
        // Every task is claimed now; close the job to latecomers, then wait
        // for the workers still running tasks of it (spinning first: they
        // are usually about to finish). The Acquire loads pair with the
        // workers' Release decrements, making their writes visible to us.
        let mut st = lock(&self.state);
        st.job = ptr::null();
        if self.active.load(Ordering::Acquire) == 0 {
            return;
        }
        drop(st);
        if spin_until(|| self.active.load(Ordering::Acquire) == 0) {
            return;
        }
        st = lock(&self.state);
        while self.active.load(Ordering::Acquire) > 0 {
            st.caller_waiting = true;
            st = wait(&self.done, st);
        }
        st.caller_waiting = false;
    }

    fn worker(&self) {
        IN_POOL.with(|c| c.set(true));
        let mut seen = 0u64;
        loop {
            // Cheap wait for the next job, then the authoritative check
            // under the lock, blocking if there is still nothing to do.
            spin_until(|| self.epoch.load(Ordering::Acquire) != seen);
            let mut st = lock(&self.state);
            let job = loop {
                if st.shutdown {
                    return;
                }
                if st.generation != seen {
                    seen = st.generation;
                    if !st.job.is_null() {
                        break st.job;
                    }
                }
                st.sleeping += 1;
                st = wait(&self.work, st);
                st.sleeping -= 1;
            };
            self.active.fetch_add(1, Ordering::Relaxed);
            drop(st);
            // SAFETY: the job stays alive until `active` drops to 0.
            unsafe { &*job }.work();
            let st = lock(&self.state);
            if self.active.fetch_sub(1, Ordering::Release) == 1 && st.caller_waiting {
                self.done.notify_one();
            }
        }
    }
}

/// The `parallel_for` handed to generated code: no unwinding can escape it
/// (nothing in it panics, and `extern "C"` aborts if something did).
unsafe extern "C" fn parallel_for_trampoline(
    pool: *mut c_void,
    num_tasks: usize,
    f: abi::nnc_task_fn,
    ctx: *mut c_void,
) {
    let (Some(f), false) = (f, pool.is_null()) else {
        return;
    };
    // SAFETY: `pool` comes from `ThreadPool::as_nnc_threads`, whose `Shared`
    // outlives every use of the returned struct (its documented contract).
    let shared = unsafe { &*(pool as *const Shared) };
    shared.parallel_for(num_tasks, f, ctx);
}

/// A persistent pool of `n` threads (`n - 1` workers plus the caller) for
/// running generated code in parallel.
///
/// One pool can serve many models and runs; concurrent `parallel_for` calls
/// from different threads are serialized, and nested ones run inline.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool running up to `n` tasks at once (`n == 0` is treated as 1).
    /// If the OS refuses to start some workers, the pool runs with fewer.
    pub fn new(n: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: ptr::null(),
                generation: 0,
                sleeping: 0,
                caller_waiting: false,
                shutdown: false,
            }),
            epoch: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            work: Condvar::new(),
            done: Condvar::new(),
            run: Mutex::new(()),
            num_threads: AtomicUsize::new(1),
        });
        let mut workers = Vec::with_capacity(n.saturating_sub(1));
        for i in 1..n {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("nnc-worker-{i}"))
                .spawn(move || s.worker())
            {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        // Published before the pool is handed out; workers never read it.
        shared
            .num_threads
            .store(workers.len() + 1, Ordering::Relaxed);
        ThreadPool { shared, workers }
    }

    /// How many tasks run at once (workers plus the calling thread).
    pub fn num_threads(&self) -> usize {
        self.shared.num_threads.load(Ordering::Relaxed)
    }

    /// The C view of this pool, to pass to a generated library's run
    /// function. It points into the pool's heap state, so moving the
    /// `ThreadPool` is fine, but it must not be used after the pool is
    /// dropped.
    pub fn as_nnc_threads(&self) -> abi::nnc_threads {
        abi::nnc_threads {
            num_threads: self.num_threads(),
            pool: Arc::as_ptr(&self.shared) as *mut c_void,
            parallel_for: Some(parallel_for_trampoline),
        }
    }

    fn shutdown(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            // Also ends the spin phase of idle workers at once.
            st.generation = st.generation.wrapping_add(1);
            self.shared.epoch.store(st.generation, Ordering::Release);
        }
        self.shared.work.notify_all();
        for h in self.workers.drain(..) {
            // A worker cannot panic (see `lock`); nothing to report.
            let _ = h.join();
        }
    }
}

impl Default for ThreadPool {
    /// One thread per available core.
    fn default() -> ThreadPool {
        ThreadPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("num_threads", &self.num_threads())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-task hit counters plus a running sum, shared with the C-style
    /// task function through `ctx`.
    struct Counts {
        hits: Vec<AtomicUsize>,
        sum: AtomicU64,
    }

    impl Counts {
        fn new(n: usize) -> Counts {
            Counts {
                hits: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                sum: AtomicU64::new(0),
            }
        }

        fn check(&self) {
            let n = self.hits.len() as u64;
            for (i, h) in self.hits.iter().enumerate() {
                assert_eq!(h.load(Ordering::Relaxed), 1, "task {i}");
            }
            assert_eq!(
                self.sum.load(Ordering::Relaxed),
                n * n.saturating_sub(1) / 2
            );
        }
    }

    unsafe extern "C" fn count_task(ctx: *mut c_void, task: usize) {
        let counts = unsafe { &*(ctx as *const Counts) };
        counts.hits[task].fetch_add(1, Ordering::Relaxed);
        counts.sum.fetch_add(task as u64, Ordering::Relaxed);
    }

    /// Calls through the C view, exactly as generated code does.
    fn run_c(t: &abi::nnc_threads, num_tasks: usize, f: abi::nnc_task_fn, ctx: *mut c_void) {
        unsafe { (t.parallel_for.unwrap())(t.pool, num_tasks, f, ctx) };
    }

    fn run_counts(t: &abi::nnc_threads, n: usize) {
        let counts = Counts::new(n);
        run_c(
            t,
            n,
            Some(count_task),
            &counts as *const Counts as *mut c_void,
        );
        counts.check();
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for n in [1, 2, 4] {
            let pool = ThreadPool::new(n);
            assert_eq!(pool.num_threads(), n);
            let t = pool.as_nnc_threads();
            assert_eq!(t.num_threads, n);
            for _ in 0..20 {
                run_counts(&t, 10_000);
            }
            // Small and odd sizes, including fewer tasks than threads.
            for tasks in [0, 1, 2, 3, 5, 7, 64] {
                run_counts(&t, tasks);
            }
        }
    }

    /// Many tiny back-to-back jobs: stresses the hand-off between jobs
    /// (spinning workers, late joiners, the caller's wait).
    #[test]
    fn many_small_jobs() {
        for n in [2, 4] {
            let pool = ThreadPool::new(n);
            let t = pool.as_nnc_threads();
            for i in 0..5_000 {
                run_counts(&t, 2 + i % 7);
            }
        }
    }

    #[test]
    fn zero_means_one_thread() {
        let pool = ThreadPool::new(0);
        assert_eq!(pool.num_threads(), 1);
        run_counts(&pool.as_nnc_threads(), 1000);
    }

    #[test]
    fn null_task_or_pool_is_ignored() {
        let pool = ThreadPool::new(2);
        let t = pool.as_nnc_threads();
        run_c(&t, 100, None, ptr::null_mut());
        unsafe { parallel_for_trampoline(ptr::null_mut(), 100, Some(count_task), ptr::null_mut()) };
    }

    #[test]
    fn concurrent_callers() {
        let pool = ThreadPool::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let t = pool.as_nnc_threads();
                    for _ in 0..50 {
                        run_counts(&t, 1000);
                    }
                });
            }
        });
    }

    /// Outer tasks start inner loops on the same pool; they must run inline
    /// rather than deadlock.
    struct Nested {
        threads: abi::nnc_threads,
        inner: Vec<Counts>,
    }

    unsafe extern "C" fn nested_task(ctx: *mut c_void, task: usize) {
        let nested = unsafe { &*(ctx as *const Nested) };
        let counts = &nested.inner[task];
        run_c(
            &nested.threads,
            counts.hits.len(),
            Some(count_task),
            counts as *const Counts as *mut c_void,
        );
    }

    #[test]
    fn nested_parallel_for_runs_inline() {
        let pool = ThreadPool::new(4);
        let nested = Nested {
            threads: pool.as_nnc_threads(),
            inner: (0..16).map(|_| Counts::new(100)).collect(),
        };
        run_c(
            &nested.threads,
            16,
            Some(nested_task),
            &nested as *const Nested as *mut c_void,
        );
        for c in &nested.inner {
            c.check();
        }
    }

    #[test]
    fn pool_survives_moves_and_drops_cleanly() {
        let pool = ThreadPool::new(3);
        let moved = Box::new(pool);
        run_counts(&moved.as_nnc_threads(), 500);
        drop(moved);
        // Many short-lived pools: shutdown must not hang or leak a wakeup.
        for _ in 0..50 {
            let p = ThreadPool::new(2);
            run_counts(&p.as_nnc_threads(), 10);
        }
    }
}
