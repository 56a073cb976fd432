//! `asyncbis._core`: the runtime core of asyncbis (cancel scopes, native tasks, task groups).

mod group;
mod scope;
mod task;
mod timeout;
mod util;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::group::{GroupExit, SpawnOptions, TaskGroup};
use crate::scope::{CancelScope, Checkpoint};
use crate::task::{current_core, Start, TaskCore, TaskOptions};
use crate::util::{cached, runtime_error, tree};

/// The Python `asyncbis.Task` class (an `asyncio.Future` subclass), registered at import.
static TASK_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn task_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    TASK_CLASS
        .get(py)
        .map(|c| c.bind(py))
        .ok_or_else(|| runtime_error("asyncbis._core: the Task class was not registered"))
}

/// A new, pending Task object whose Future part is initialised (no core yet).
pub(crate) fn new_task_object<'py>(
    py: Python<'py>,
    loop_: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = task_class(py)?;
    let task = cls.call_method1(pyo3::intern!(py, "__new__"), (cls,))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(pyo3::intern!(py, "loop"), loop_)?;
    cached(py)
        .future_init
        .bind(py)
        .call((&task,), Some(&kwargs))?;
    Ok(task)
}

/// asyncbis's eager task factory, registered by Python the first time a loop gets it: until
/// then no spawn pays for the check below.
static EAGER_FACTORY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether tasks spawned on `loop_` start eagerly: its task factory is asyncbis's eager one
/// (what `loop.set_task_factory(asyncio.eager_task_factory)` installs). Like stock, where an
/// eager factory makes every task of the loop eager, TaskGroup children included.
pub(crate) fn loop_wants_eager_tasks(py: Python<'_>, loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    let Some(factory) = EAGER_FACTORY.get(py) else {
        return Ok(false);
    };
    let current = loop_.call_method0(pyo3::intern!(py, "get_task_factory"))?;
    Ok(current.is(factory.bind(py)))
}

#[pyfunction]
fn _register_eager_factory(py: Python<'_>, factory: Bound<'_, PyAny>) -> PyResult<()> {
    if !factory.is_callable() {
        return Err(PyTypeError::new_err(
            "the eager task factory must be callable",
        ));
    }
    let _ = EAGER_FACTORY.set(py, factory.unbind());
    Ok(())
}

/// If `fut` is an asyncbis task that ended cancelled, the CancelledError its coroutine raised.
pub(crate) fn own_cancelled_exc<'py>(fut: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let py = fut.py();
    let cls = TASK_CLASS.get(py)?;
    if !fut.get_type().is(cls.bind(py)) {
        return None;
    }
    let core = fut.getattr(pyo3::intern!(py, "_core")).ok()?;
    let core = core.cast::<TaskCore>().ok()?;
    core.get().take_cancelled_exc().map(|e| e.into_bound(py))
}

#[pyfunction]
fn _register_task_class(py: Python<'_>, cls: Bound<'_, PyAny>) -> PyResult<()> {
    let future = cached(py).future_type.bind(py);
    let ok = cls
        .cast::<pyo3::types::PyType>()
        .map(|t| t.is_subclass(future).unwrap_or(false))
        .unwrap_or(false);
    if !ok {
        return Err(PyTypeError::new_err(
            "the task class must subclass asyncio.Future",
        ));
    }
    let _ = TASK_CLASS.set(py, cls.unbind());
    Ok(())
}

/// Gives `task` (a Task whose Future part is initialised: a directly constructed one) its core
/// and schedules its first step (or runs it now, with `eager_start` on 3.12+). In `group` if
/// given (counted as its child, as `group.create_task()`'s tasks are), else ungrouped.
#[pyfunction]
#[pyo3(signature = (task, coro, r#loop, name = None, context = None, *, eager_start = false, group = None))]
#[allow(clippy::too_many_arguments)]
fn _init_task<'py>(
    task: Bound<'py, PyAny>,
    coro: Bound<'py, PyAny>,
    r#loop: Bound<'py, PyAny>,
    name: Option<Bound<'py, PyAny>>,
    context: Option<Bound<'py, PyAny>>,
    eager_start: bool,
    group: Option<Bound<'py, TaskGroup>>,
) -> PyResult<()> {
    if let Some(group) = group {
        let options = SpawnOptions {
            name,
            context,
            eager_start: Some(eager_start),
            task: Some(task),
            ..SpawnOptions::default()
        };
        TaskGroup::spawn(&group, &coro, options)?;
        return Ok(());
    }
    TaskCore::attach(
        &task,
        &r#loop,
        &coro,
        TaskOptions {
            name,
            context,
            start: Some(Start::eager_if(eager_start)),
            ..TaskOptions::default()
        },
    )?;
    Ok(())
}

/// Creates a task on `loop`: in `group` if given (counted as its child), else ungrouped.
/// `eager_start`: run its first step now (3.12+, loop running); None: as the loop's task
/// factory says.
#[pyfunction]
#[pyo3(signature = (r#loop, coro, *, name = None, context = None, group = None, eager_start = None))]
fn spawn<'py>(
    py: Python<'py>,
    r#loop: Bound<'py, PyAny>,
    coro: Bound<'py, PyAny>,
    name: Option<Bound<'py, PyAny>>,
    context: Option<Bound<'py, PyAny>>,
    group: Option<Bound<'py, TaskGroup>>,
    eager_start: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    match group {
        Some(g) => {
            let options = SpawnOptions {
                name,
                context,
                eager_start,
                ..SpawnOptions::default()
            };
            TaskGroup::spawn(&g, &coro, options)
        }
        None => {
            let task = new_task_object(py, &r#loop)?;
            let eager = match eager_start {
                Some(eager) => eager,
                None => loop_wants_eager_tasks(py, &r#loop)?,
            };
            TaskCore::attach(
                &task,
                &r#loop,
                &coro,
                TaskOptions {
                    name,
                    context,
                    start: Some(Start::eager_if(eager)),
                    ..TaskOptions::default()
                },
            )?;
            Ok(task)
        }
    }
}

/// The core of the asyncbis task running now, or None (not in an asyncbis task).
#[pyfunction]
fn current_task_core(py: Python<'_>) -> Option<Py<TaskCore>> {
    current_core(py)
}

/// Sets a behaviour switch the core consults. `level-cancellation`: bool;
/// `task-cancel-level`: "off" (stock edge), "on" (permanent), "uncancel" (lifted at zero).
#[pyfunction]
fn _set_core_switch(name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match name {
        "level-cancellation" => util::set_level_cancellation(value.is_truthy()?),
        "scoped-timeouts" => util::set_scoped_timeouts(value.is_truthy()?),
        "task-cancel-level" => {
            let mode = if let Ok(s) = value.extract::<String>() {
                match s.as_str() {
                    "off" => 0,
                    "on" => 1,
                    "uncancel" => 2,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "task-cancel-level must be 'off', 'on' or 'uncancel', got {other:?}"
                        )))
                    }
                }
            } else if value.is_truthy()? {
                1
            } else {
                0
            };
            util::set_task_cancel_mode(mode)
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "the core has no switch named {other:?}"
            )))
        }
    }
    Ok(())
}

#[pyfunction]
fn _core_switches() -> (bool, u8) {
    (util::level_cancellation(), util::task_cancel_mode())
}

/// Number of asyncbis tasks created in this process so far (every path: factories, groups,
/// direct construction).
#[pyfunction]
fn _task_count() -> u64 {
    task::tasks_created()
}

/// Live scope-tree nodes and tasks (for leak tests).
#[pyfunction]
fn _tree_stats() -> (usize, usize) {
    let t = tree();
    (t.live_nodes(), t.live_tasks())
}

// `gil_used = true`: every pyclass keeps its state in `GilCell`s, sound only because the GIL
// serialises all access. A free-threaded interpreter (3.13t+) therefore re-enables the GIL when
// it imports this module (with a RuntimeWarning) instead of running it unsoundly; PyO3 0.30's
// default would declare the opposite. What real free-threading would take: docs/architecture.md.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CancelScope>()?;
    m.add_class::<TaskCore>()?;
    m.add_class::<TaskGroup>()?;
    m.add_class::<GroupExit>()?;
    m.add_class::<Checkpoint>()?;
    m.add_class::<timeout::Timeout>()?;
    m.add_class::<timeout::Ready>()?;
    m.add_class::<timeout::TimeoutEnter>()?;
    m.add_function(wrap_pyfunction!(timeout::timeout, m)?)?;
    m.add_function(wrap_pyfunction!(timeout::timeout_at, m)?)?;
    m.add_function(wrap_pyfunction!(timeout::_set_timeout_fallback, m)?)?;
    m.add_function(wrap_pyfunction!(scope::move_on_after, m)?)?;
    m.add_function(wrap_pyfunction!(scope::move_on_at, m)?)?;
    m.add_function(wrap_pyfunction!(scope::fail_after, m)?)?;
    m.add_function(wrap_pyfunction!(scope::fail_at, m)?)?;
    m.add_function(wrap_pyfunction!(scope::current_effective_deadline, m)?)?;
    m.add_function(wrap_pyfunction!(scope::checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(scope::checkpoint_if_cancelled, m)?)?;
    m.add_function(wrap_pyfunction!(scope::_watch_left_generators, m)?)?;
    m.add_function(wrap_pyfunction!(_register_task_class, m)?)?;
    m.add_function(wrap_pyfunction!(_init_task, m)?)?;
    m.add_function(wrap_pyfunction!(_register_eager_factory, m)?)?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add_function(wrap_pyfunction!(current_task_core, m)?)?;
    m.add_function(wrap_pyfunction!(_set_core_switch, m)?)?;
    m.add_function(wrap_pyfunction!(_core_switches, m)?)?;
    m.add_function(wrap_pyfunction!(_tree_stats, m)?)?;
    m.add_function(wrap_pyfunction!(_task_count, m)?)?;
    m.add("MARK_ATTR", util::MARK_ATTR)?;
    // Hands untracked children of groups on stopped loops back to the GC before each full
    // collection (see group::UNTRACKED_GROUPS).
    let gc_hook = wrap_pyfunction!(group::_gc_callback, m)?;
    m.add("_gc_callback", &gc_hook)?;
    m.py()
        .import("gc")?
        .getattr("callbacks")?
        .call_method1("append", (gc_hook,))?;
    Ok(())
}
