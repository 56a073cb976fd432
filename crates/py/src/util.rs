//! Shared plumbing: the global scope tree, GIL-guarded cells, cached Python objects, switches.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use asyncbis_scopes::Tree;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The one scope tree. Every access happens with the GIL held, so the lock is never contended;
/// it exists to make the static sound. Never call into Python while holding it.
static TREE: Mutex<Tree> = Mutex::new(Tree::new());

pub fn tree() -> MutexGuard<'static, Tree> {
    TREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `Cell` for pyclass fields. asyncbis objects are only touched with the GIL held (the module
/// is declared `gil_used = true`, so free-threaded builds re-enable the GIL for it), which
/// serialises every access.
pub struct GilCell<T>(Cell<T>);

// SAFETY: see the type's comment; the GIL is the lock.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(v: T) -> Self {
        GilCell(Cell::new(v))
    }
    pub fn set(&self, v: T) {
        self.0.set(v)
    }
    pub fn replace(&self, v: T) -> T {
        self.0.replace(v)
    }
}

impl<T: Default> GilCell<T> {
    pub fn take(&self) -> T {
        self.0.take()
    }
}

impl<T: Copy> GilCell<T> {
    pub fn get(&self) -> T {
        self.0.get()
    }
}

impl<T> GilCell<Option<Py<T>>> {
    pub fn get_ref(&self, py: Python<'_>) -> Option<Py<T>> {
        let v = self.0.take();
        let out = v.as_ref().map(|p| p.clone_ref(py));
        self.0.set(v);
        out
    }
    pub fn is_some(&self) -> bool {
        let v = self.0.take();
        let out = v.is_some();
        self.0.set(v);
        out
    }
    /// Calls `f` with the content borrowed (no reference count traffic); `f` must not touch
    /// this cell.
    pub fn with_ref<R>(&self, f: impl FnOnce(Option<&Py<T>>) -> R) -> R {
        let v = self.0.take();
        let out = f(v.as_ref());
        self.0.set(v);
        out
    }
    pub fn visit(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        let v = self.0.take();
        let r = match &v {
            Some(p) => visit.call(p),
            None => Ok(()),
        };
        self.0.set(v);
        r
    }
}

impl GilCell<Vec<usize>> {
    pub fn push_index(&self, item: usize) {
        let mut v = self.0.take();
        v.push(item);
        self.0.set(v);
    }
}

impl<T> GilCell<Vec<Py<T>>> {
    pub fn push(&self, item: Py<T>) {
        let mut v = self.0.take();
        v.push(item);
        self.0.set(v);
    }
    pub fn len(&self) -> usize {
        let v = self.0.take();
        let n = v.len();
        self.0.set(v);
        n
    }
    pub fn visit(&self, visit: &pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        let v = self.0.take();
        let mut r = Ok(());
        for p in &v {
            r = visit.call(p);
            if r.is_err() {
                break;
            }
        }
        self.0.set(v);
        r
    }
}

/// Python objects looked up once.
pub struct Cached {
    pub cancelled_error: Py<PyAny>,
    pub invalid_state_error: Py<PyAny>,
    pub future_type: Py<PyAny>,
    pub future_init: Py<PyAny>,
    pub future_cancel: Py<PyAny>,
    pub future_set_result: Py<PyAny>,
    pub future_set_exception: Py<PyAny>,
    /// `Future.result`, `.get_loop`, `.add_done_callback`: called unbound on futures whose type
    /// is exactly `asyncio.Future` (what loop.create_future() makes; nothing can override
    /// them there), which skips the method lookup on every wait and wake-up.
    pub future_result: Py<PyAny>,
    pub future_cancelled: Py<PyAny>,
    pub future_get_loop: Py<PyAny>,
    pub future_add_done_callback: Py<PyAny>,
    pub enter_task: Py<PyAny>,
    /// The dict `asyncio.current_task()` reads (loop -> task), when the C accelerator keeps one
    /// (3.11-3.13): entering/leaving a task is then two dict operations, not two calls.
    pub current_tasks: Option<Py<pyo3::types::PyDict>>,
    pub leave_task: Py<PyAny>,
    pub register_task: Py<PyAny>,
    /// 3.12+: used for eager starts, which run inside another task's step.
    pub swap_current_task: Option<Py<PyAny>>,
    /// 3.14+ `_asyncio.future_add_to_awaited_by` / `future_discard_from_awaited_by`: a task
    /// records itself on the future it waits on, as stock's C task does inside its step, for
    /// `asyncio.graph` (`capture_call_graph()` walks a future's `_asyncio_awaited_by`). The C
    /// functions, not `asyncio.futures`' names, which tests swap for the pure-Python ones.
    pub future_add_to_awaited_by: Option<Py<PyAny>>,
    pub future_discard_from_awaited_by: Option<Py<PyAny>>,
    pub base_exception_group: Py<PyAny>,
    /// `(KeyboardInterrupt, SystemExit)`: see `is_exit_request`.
    pub exit_requests: Py<pyo3::types::PyTuple>,
    pub timeout_error: Py<PyAny>,
    pub iscoroutine: Py<PyAny>,
    pub isgenerator: Py<PyAny>,
    pub get_running_loop: Py<PyAny>,
    /// `asyncio.events._get_running_loop` (None outside a running loop, no exception)
    pub running_loop_or_none: Py<PyAny>,
    /// `asyncio.BaseEventLoop.time` (to recognise loops that keep asyncio's clock)
    pub base_loop_time: Py<PyAny>,
    pub monotonic: Py<PyAny>,
    /// `contextvars.copy_context` (every task without an explicit context calls it)
    pub copy_context: Py<PyAny>,
}

static CACHED: PyOnceLock<Cached> = PyOnceLock::new();

fn current_tasks_dict(py: Python<'_>) -> Option<Py<pyo3::types::PyDict>> {
    let c_module = py.import("_asyncio").ok()?;
    let dict = c_module.getattr("_current_tasks").ok()?;
    let tasks = py.import("asyncio.tasks").ok()?;
    // Only if asyncio's current_task() is the C one that reads this very dict.
    let current_task = tasks.getattr("current_task").ok()?;
    if !current_task.is(c_module.getattr("current_task").ok()?) {
        return None;
    }
    dict.cast_into::<pyo3::types::PyDict>()
        .ok()
        .map(|d| d.unbind())
}

/// A function of the C accelerator `_asyncio`, if it has it.
fn c_asyncio_fn(py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
    py.import("_asyncio")
        .ok()?
        .getattr(name)
        .ok()
        .map(|f| f.unbind())
}

pub fn cached(py: Python<'_>) -> &'static Cached {
    CACHED.get_or_init(py, || {
        let load = || -> PyResult<Cached> {
            let asyncio = py.import("asyncio")?;
            let tasks = py.import("asyncio.tasks")?;
            let future = asyncio.getattr("Future")?;
            let builtins = py.import("builtins")?;
            let coroutines = py.import("asyncio.coroutines")?;
            let inspect = py.import("inspect")?;
            Ok(Cached {
                cancelled_error: asyncio.getattr("CancelledError")?.unbind(),
                invalid_state_error: asyncio.getattr("InvalidStateError")?.unbind(),
                future_init: future.getattr("__init__")?.unbind(),
                future_cancel: future.getattr("cancel")?.unbind(),
                future_result: future.getattr("result")?.unbind(),
                future_cancelled: future.getattr("cancelled")?.unbind(),
                future_get_loop: future.getattr("get_loop")?.unbind(),
                future_add_done_callback: future.getattr("add_done_callback")?.unbind(),
                future_set_result: future.getattr("set_result")?.unbind(),
                future_set_exception: future.getattr("set_exception")?.unbind(),
                future_type: future.unbind(),
                enter_task: tasks.getattr("_enter_task")?.unbind(),
                current_tasks: current_tasks_dict(py),
                leave_task: tasks.getattr("_leave_task")?.unbind(),
                register_task: tasks.getattr("_register_task")?.unbind(),
                swap_current_task: tasks.getattr("_swap_current_task").ok().map(|f| f.unbind()),
                future_add_to_awaited_by: c_asyncio_fn(py, "future_add_to_awaited_by"),
                future_discard_from_awaited_by: c_asyncio_fn(py, "future_discard_from_awaited_by"),
                base_exception_group: builtins.getattr("BaseExceptionGroup")?.unbind(),
                exit_requests: pyo3::types::PyTuple::new(
                    py,
                    [
                        builtins.getattr("KeyboardInterrupt")?,
                        builtins.getattr("SystemExit")?,
                    ],
                )?
                .unbind(),
                timeout_error: builtins.getattr("TimeoutError")?.unbind(),
                iscoroutine: coroutines.getattr("iscoroutine")?.unbind(),
                isgenerator: inspect.getattr("isgenerator")?.unbind(),
                get_running_loop: asyncio.getattr("get_running_loop")?.unbind(),
                running_loop_or_none: py
                    .import("asyncio.events")?
                    .getattr("_get_running_loop")?
                    .unbind(),
                base_loop_time: py
                    .import("asyncio.base_events")?
                    .getattr("BaseEventLoop")?
                    .getattr("time")?
                    .unbind(),
                monotonic: py.import("time")?.getattr("monotonic")?.unbind(),
                copy_context: py.import("contextvars")?.getattr("copy_context")?.unbind(),
            })
        };
        load().expect("asyncbis: the asyncio module lacks a name this Python should have")
    })
}

/// Behaviour switches that the core itself consults (docs/switches.md). The Python surface
/// owns the full list and pushes these down.
static LEVEL_CANCELLATION: AtomicBool = AtomicBool::new(true);
/// `timeout()`/`timeout_at()` are native cancel scopes (else the Python fallback decides).
static SCOPED_TIMEOUTS: AtomicBool = AtomicBool::new(true);
/// 0 = edge (stock), 1 = level, 2 = level but `uncancel()` back to zero lifts it.
static TASK_CANCEL_MODE: AtomicU8 = AtomicU8::new(1);

pub fn level_cancellation() -> bool {
    LEVEL_CANCELLATION.load(Ordering::Relaxed)
}

pub fn task_cancel_mode() -> u8 {
    TASK_CANCEL_MODE.load(Ordering::Relaxed)
}

pub fn scoped_timeouts() -> bool {
    SCOPED_TIMEOUTS.load(Ordering::Relaxed)
}

pub fn set_scoped_timeouts(on: bool) {
    SCOPED_TIMEOUTS.store(on, Ordering::Relaxed)
}

pub fn set_level_cancellation(on: bool) {
    LEVEL_CANCELLATION.store(on, Ordering::Relaxed)
}

pub fn set_task_cancel_mode(mode: u8) {
    TASK_CANCEL_MODE.store(mode, Ordering::Relaxed)
}

/// The attribute that marks a CancelledError as delivered by asyncbis to a given task, so that
/// scopes catch only their own cancellations.
pub const MARK_ATTR: &str = "_asyncbis_delivered_to";

pub fn new_marked_cancelled_error<'py>(
    py: Python<'py>,
    message: Option<&Bound<'py, PyAny>>,
    task_mark: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let ce = cached(py).cancelled_error.bind(py);
    let exc = match message {
        Some(m) if !m.is_none() => ce.call1((m,))?,
        _ => ce.call0()?,
    };
    // Interned: a new str per call cost an allocation and a hash on every delivery.
    exc.setattr(pyo3::intern!(py, MARK_ATTR), task_mark)?;
    Ok(exc)
}

pub fn is_marked_for(exc: &Bound<'_, PyAny>, task_mark: u64) -> bool {
    let py = exc.py();
    if !exc
        .is_instance(cached(py).cancelled_error.bind(py))
        .unwrap_or(false)
    {
        return false;
    }
    match exc.getattr(pyo3::intern!(py, MARK_ATTR)) {
        Ok(v) => v.extract::<u64>().map(|m| m == task_mark).unwrap_or(false),
        Err(_) => false,
    }
}

/// Whether `exc` is a KeyboardInterrupt or SystemExit: a request to stop the program, not a
/// failure of the task that raised it. Like stock asyncio, it propagates out of the loop
/// (a task step re-raises it) and a task group raises it alone, never inside an exception group.
pub fn is_exit_request(exc: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = exc.py();
    exc.is_instance(cached(py).exit_requests.bind(py))
}

pub fn runtime_error(msg: impl Into<String>) -> PyErr {
    PyRuntimeError::new_err(msg.into())
}

/// The exception an awaitable's `throw(typ, val=None, tb=None)` was given (the value when
/// there is one, else the type or instance passed first).
pub fn thrown(typ: Bound<'_, PyAny>, val: Option<Bound<'_, PyAny>>) -> PyErr {
    match val {
        Some(v) if !v.is_none() => PyErr::from_value(v),
        _ => PyErr::from_value(typ),
    }
}

/// Runs `f` with the pending Python exception, if any, set aside and then restored. For `Drop`
/// impls that call into Python: they run in tp_dealloc, possibly while an exception propagates
/// (a frame unwinding with GeneratorExit releases the scopes on its stack), and calling Python
/// with an exception set is undefined behaviour (a debug CPython asserts `!PyErr_Occurred()`;
/// release builds crashed at shutdown). CPython's own finalizers do the same.
pub fn with_exception_set_aside<R>(py: Python<'_>, f: impl FnOnce() -> R) -> R {
    let pending = PyErr::take(py);
    let r = f();
    if let Some(e) = pending {
        e.restore(py);
    }
    r
}

/// Takes a live object out of the cyclic GC's lists (no-op if it is not tracked).
///
/// Used for a grouped task and its core (see `TaskGroup::spawn`): while its group holds the
/// task, it is reachable, so the collector would only traverse it on every full collection for
/// nothing; with 80,000 live tasks that traversal was what made spawning superlinear. Whatever
/// releases the task from the group calls `gc_retrack` first, so a cycle through a task whose
/// group itself became garbage is still found (one collection later).
pub fn gc_untrack(obj: &Bound<'_, PyAny>) {
    let ptr = obj.as_ptr();
    // SAFETY: `ptr` is a live object (borrowed from `obj`) and the GIL is held.
    unsafe {
        if ffi::PyObject_IS_GC(ptr) != 0 && ffi::PyObject_GC_IsTracked(ptr) != 0 {
            ffi::PyObject_GC_UnTrack(ptr.cast());
        }
    }
}

/// Puts an object untracked by `gc_untrack` back under the cyclic GC (no-op if tracked:
/// tracking twice is a fatal error in CPython).
pub fn gc_retrack(obj: &Bound<'_, PyAny>) {
    let ptr = obj.as_ptr();
    // SAFETY: as in `gc_untrack`.
    unsafe {
        if ffi::PyObject_IS_GC(ptr) != 0 && ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}
