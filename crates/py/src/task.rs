//! The native task: an `asyncio.Future` subclass (defined in Python, `asyncbis.Task`) whose step
//! and wake-up are this Rust object, `TaskCore`. The loop schedules the core itself (it is
//! callable, by vectorcall: see `enable_vectorcall`), so a step costs no Python frame, no
//! bound-method allocation and no argument tuple.
//!
//! Cancellation delivery: before each step (except the first), if the task's innermost cancel
//! scope is effectively cancelled, a fresh CancelledError marked for this task is thrown into
//! the coroutine (level cancellation). When a scope above a blocked task gets cancelled, the
//! future it waits on is cancelled, exactly as `Task.cancel()` does in stock asyncio, which
//! wakes the task so the next step can deliver.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use asyncbis_scopes::{NodeId, TaskId, Wake};
use pyo3::exceptions::{PyAttributeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{PyTraverseError, PyVisit};

use crate::group::TaskGroup;
use crate::util::{
    cached, gc_retrack, is_exit_request, level_cancellation, new_marked_cancelled_error,
    runtime_error, task_cancel_mode, tree, GilCell,
};

static TASK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// References to a grouped task that asyncbis itself holds when the task's step finishes it
/// (`TaskCore::finish`): its group's slot, its core's `task` field and the step's own. More
/// means somebody else keeps the finished task alive.
const RUNTIME_REFS_AT_FINISH: ffi::Py_ssize_t = 3;

thread_local! {
    /// The asyncbis task whose step is running on this thread (a stack: eager starts nest).
    static CURRENT: RefCell<Option<Py<TaskCore>>> = const { RefCell::new(None) };
}

/// How many asyncbis tasks this process has created (the study's proof of activation).
pub fn tasks_created() -> u64 {
    TASK_COUNTER.load(Ordering::Relaxed)
}

pub fn current_core(py: Python<'_>) -> Option<Py<TaskCore>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|t| t.clone_ref(py)))
}

/// How a new task starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Start {
    /// Its first step is scheduled on the loop.
    Soon,
    /// Its first step runs now, inside the spawner's step, when the loop is running on 3.12+
    /// (stock's `eager_start`); otherwise as `Soon`.
    Eager,
}

impl Start {
    /// From a Python `eager_start` flag.
    pub fn eager_if(eager: bool) -> Start {
        if eager {
            Start::Eager
        } else {
            Start::Soon
        }
    }
}

/// What `TaskCore::attach` takes besides the task, its loop and its coroutine.
#[derive(Default)]
pub struct TaskOptions<'a, 'py> {
    /// The task's name (None: `Task-N`).
    pub name: Option<Bound<'py, PyAny>>,
    /// The context the steps run in (None: a copy of the current one).
    pub context: Option<Bound<'py, PyAny>>,
    /// The group that holds the task (and hears of its end).
    pub group: Option<&'a Bound<'py, TaskGroup>>,
    /// The scope node the task's own node hangs below (None: a root of the tree).
    pub parent_node: Option<NodeId>,
    /// None: the caller starts the task later, with `TaskCore::start`.
    pub start: Option<Start>,
}

/// What started a step (see `TaskCore::step`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum StepKind {
    /// Scheduled by the loop (first step, bare yield, an exception to throw in), or a wake-up
    /// by a cancelled future: a pending scope cancellation is delivered.
    Scheduled,
    /// A wake-up by a future that completed on its own: its result or error is delivered; a
    /// pending cancellation waits for the next yield point, as in Trio, so that a completed
    /// operation's result is never lost.
    Completed,
    /// The first step, run synchronously by the spawner (3.12+ eager start) inside another
    /// task's step: the current task is swapped instead of entered.
    Eager,
}

#[pyclass(module = "asyncbis._core", frozen)]
pub struct TaskCore {
    /// The entry the loop and futures call (`vectorcall`; see `enable_vectorcall`).
    vectorcall: ffi::vectorcallfunc,
    task: GilCell<Option<Py<PyAny>>>,
    coro: GilCell<Option<Py<PyAny>>>,
    context: GilCell<Option<Py<PyAny>>>,
    loop_: GilCell<Option<Py<PyAny>>>,
    fut_waiter: GilCell<Option<Py<PyAny>>>,
    group: GilCell<Option<Py<TaskGroup>>>,
    cancel_message: GilCell<Option<Py<PyAny>>>,
    name: GilCell<Option<Py<PyAny>>>,
    /// The CancelledError the coroutine ended with: a task awaiting this one gets this very
    /// instance (as with stock C tasks, which keep it in the future), not a copy.
    cancelled_exc: GilCell<Option<Py<PyAny>>>,
    /// Debug mode: a weak reference to the task once it finished (the strong one is dropped
    /// then), for `__self__` (see `finish`).
    finished_task: GilCell<Option<Py<PyAny>>>,
    /// The future this task waits on was cancelled by a scope to wake it: the CancelledError
    /// it brings is the scope's, even if the scope was shielded again before the step ran.
    waiter_cancelled_by_scope: GilCell<bool>,
    tree_id: GilCell<Option<TaskId>>,
    root_node: GilCell<Option<NodeId>>,
    started: GilCell<bool>,
    finished: GilCell<bool>,
    must_cancel: GilCell<bool>,
    num_cancels: GilCell<i64>,
    /// Spawned by `TaskGroup.start()` and `task_status.started()` not called yet: a failure goes
    /// to the starter, not to the group.
    pub(crate) starting: GilCell<bool>,
    /// Where the group holds this task (see `TaskGroup::children`).
    pub(crate) group_slot: GilCell<Option<usize>>,
    /// The group that decides on this finished task's failure when the task is collected
    /// (root-task-group=unretrieved): see `_collected`.
    collected_by: GilCell<Option<Py<TaskGroup>>>,
    /// The task had done callbacks when it failed (root-task-group=unwaited-at-finish).
    waited: GilCell<bool>,
    seq: u64,
}

impl TaskCore {
    /// Woken by a scope that cancelled `fut` (a plain Future), with level cancellation: the
    /// next step will deliver the scope's cancellation in any case (the same test as in
    /// `step`), so the future's CancelledError would only be replaced.
    fn scope_cancellation_replaces(
        slf: &Bound<'_, Self>,
        fut: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if !this.waiter_cancelled_by_scope.get()
            || !this.started.get()
            || this.must_cancel.get()
            || !level_cancellation()
        {
            return Ok(false);
        }
        let Some(tid) = this.tree_id.get() else {
            return Ok(false);
        };
        if !tree().task_should_deliver_level(tid) {
            return Ok(false);
        }
        cached(py)
            .future_cancelled
            .bind(py)
            .call1((fut,))?
            .is_truthy()
    }

    /// Hands out the saved CancelledError once (later awaiters get a fresh one, as in stock).
    pub fn take_cancelled_exc(&self) -> Option<Py<PyAny>> {
        self.cancelled_exc.take()
    }

    pub fn tree_id(&self) -> Option<TaskId> {
        self.tree_id.get()
    }

    /// The Task object this core steps (None once it finished).
    pub fn task_obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task.get_ref(py)
    }

    pub fn loop_obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_.get_ref(py)
    }

    /// Whether the loop was in debug mode when the task was created: `Future.__init__` asked
    /// the loop then and kept a source traceback only if so. Reading that attribute (a C getter)
    /// spares a `loop.get_debug()` call, a Python frame, on every task completion.
    fn debug_at_creation(&self, py: Python<'_>) -> bool {
        self.task.get_ref(py).is_some_and(|t| {
            t.bind(py)
                .getattr(pyo3::intern!(py, "_source_traceback"))
                .is_ok_and(|tb| !tb.is_none())
        })
    }

    pub fn mark(&self) -> u64 {
        self.tree_id.get().map(|t| t.as_u64()).unwrap_or(u64::MAX)
    }

    fn schedule_step<'py>(
        slf: &Bound<'py, TaskCore>,
        loop_: &Bound<'py, PyAny>,
        exc: Option<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let ctx = slf
            .get()
            .context
            .get_ref(py)
            .ok_or_else(|| runtime_error("task has no context"))?
            .into_bound(py);
        call_with_context(
            loop_,
            pyo3::intern!(py, "call_soon"),
            slf.as_any(),
            exc.as_ref(),
            &ctx,
        )
    }

    /// Schedules a step that throws a RuntimeError with `msg` into the coroutine (stock's answer
    /// to a bad yield).
    fn schedule_step_raising<'py>(
        slf: &Bound<'py, TaskCore>,
        loop_: &Bound<'py, PyAny>,
        msg: String,
    ) -> PyResult<()> {
        let exc = runtime_error(msg).into_value(slf.py()).into_bound(slf.py());
        Self::schedule_step(slf, loop_, Some(exc.into_any()))
    }

    /// Wakes a blocked task so that its next step delivers a cancellation: cancels the future
    /// it waits on. That future may be a task waiting on a task...: see `cancel_iteratively`.
    pub fn wake_for_cancel(slf: &Bound<'_, TaskCore>, message: Option<&Bound<'_, PyAny>>) {
        let py = slf.py();
        if let Some(waiter) = slf.get().fut_waiter.get_ref(py) {
            cancel_iteratively(
                py,
                CancelOp {
                    future: waiter,
                    message: message.map(|m| m.clone().unbind()),
                    woken: Some(slf.clone().unbind()),
                },
            );
        }
    }

    /// Step (no argument, or an exception to throw in) or wake-up (a finished future).
    fn call(slf: &Bound<'_, Self>, arg: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        match arg {
            None => Self::step(slf, None, StepKind::Scheduled),
            Some(a) if a.is_instance_of::<pyo3::exceptions::PyBaseException>() => {
                Self::step(slf, Some(a), StepKind::Scheduled)
            }
            Some(fut) => {
                // Wake-up: the awaited future is done.
                slf.get().fut_waiter.set(None);
                if let Some(discard) = &cached(py).future_discard_from_awaited_by {
                    if let Some(task) = slf.get().task.get_ref(py) {
                        discard.bind(py).call1((&fut, task))?;
                    }
                }
                if let Some(exc) = crate::own_cancelled_exc(&fut) {
                    return Self::step(slf, Some(exc), StepKind::Scheduled);
                }
                let c = cached(py);
                let plain = fut.get_type().is(c.future_type.bind(py));
                if plain && Self::scope_cancellation_replaces(slf, &fut)? {
                    // The step delivers the scope's own CancelledError in place of the
                    // future's: do not make (and raise, and fetch) the future's one first.
                    return Self::step(slf, None, StepKind::Scheduled);
                }
                let outcome = if plain {
                    c.future_result.bind(py).call1((&fut,))
                } else {
                    fut.call_method0(pyo3::intern!(py, "result"))
                };
                match outcome {
                    Ok(_) => Self::step(slf, None, StepKind::Completed),
                    Err(e) => {
                        let value = e.value(py).clone().into_any();
                        // A cancelled future (typically cancelled by a scope to wake this task)
                        // lets the scope's cancellation through; a real outcome goes first.
                        let kind = if value.is_instance(c.cancelled_error.bind(py))? {
                            StepKind::Scheduled
                        } else {
                            StepKind::Completed
                        };
                        Self::step(slf, Some(value), kind)
                    }
                }
            }
        }
    }

    fn finish(slf: &Bound<'_, TaskCore>) {
        let py = slf.py();
        let this = slf.get();
        // Untracked while its group held it (see gc_untrack), like the task itself; back under
        // the GC now, unless the group keeps the finished task until it exits (a cancelled
        // group, and a task that outlives its finish: see `TaskGroup::keeps_finished_child`).
        // One that nobody else references is freed by the group's release below instead,
        // with what it holds (its CancelledError, traceback and frames), which keeping it would
        // only hand to the young collections.
        let held_elsewhere = this.task.with_ref(|t| {
            // SAFETY: a live object, borrowed from the cell.
            t.is_some_and(|t| unsafe { ffi::Py_REFCNT(t.as_ptr()) } > RUNTIME_REFS_AT_FINISH)
        });
        let kept = held_elsewhere
            && this.group_slot.get().is_some()
            && this
                .group
                .with_ref(|g| g.is_some_and(|g| TaskGroup::keeps_finished_child(g.bind(py))));
        if !kept {
            gc_retrack(slf.as_any());
            if let Some(task) = this.task.get_ref(py) {
                gc_retrack(task.bind(py));
            }
        }
        this.finished.set(true);
        this.fut_waiter.set(None);
        if let Some(id) = this.tree_id.replace(None) {
            tree().remove_task(id);
        }
        this.root_node.set(None);
        // Break the task <-> core cycle now: a finished task is freed by reference counting
        // alone, so the cyclic GC does not have to trace every finished task (that made
        // spawning superlinear in the number of tasks).
        // In debug mode the strong reference stays until the next loop iteration, as stock's
        // bound-method step keeps its task alive while the loop runs the step's handle: the
        // slow-callback log, written after the handle ran, names the task. Not longer: a
        // finished task kept in a cycle until a GC pass keeps its exception's frames alive
        // (AnyIO's refcycle tests).
        let release_later = this.debug_at_creation(py)
            && this.loop_.get_ref(py).is_some_and(|l| {
                slf.getattr(pyo3::intern!(py, "_release_task"))
                    .and_then(|cb| {
                        l.bind(py)
                            .call_method1(pyo3::intern!(py, "call_soon"), (cb,))
                    })
                    .is_ok()
            });
        let task = if release_later {
            this.task.get_ref(py)
        } else {
            this.task.take()
        };
        // Only in debug mode does the step go on naming its finished task (weakly, once the
        // strong reference is gone): the slow-callback log is the one reader of a finished
        // task's step. Elsewhere a weak reference per finished task was an allocation, and a
        // GC-tracked object counted towards the next young collection, for every task
        // (cancelling 5,000 sleeping tasks: about 7% of the CPU time).
        if release_later {
            if let Some(t) = &task {
                if let Ok(w) = pyo3::types::PyWeakrefReference::new(t.bind(py)) {
                    this.finished_task.set(Some(w.into_any().unbind()));
                }
            }
        }
        if let (Some(group), Some(task)) = (this.group.take(), task) {
            group.get().note_awaited_by(py, task.bind(py), false);
            let watch = TaskGroup::child_done(
                group.bind(py),
                task.bind(py),
                this.starting.get(),
                this.group_slot.take(),
                this.waited.replace(false),
                kept,
            );
            if watch {
                this.collected_by.set(Some(group));
            }
        }
    }

    /// Hand-over (structured-exit=loop): the task stays a member of its group, which exits
    /// without waiting for it, and leaves the group's scope: its node becomes a root of the
    /// tree until a later run's root group adopts it (`join_group`). A child of `start()` that
    /// has not called `started()` stays under its starter's scope, as before.
    pub(crate) fn leave_group_scope(&self) {
        if self.starting.get() {
            return;
        }
        if let Some(root) = self.root_node.get() {
            // Leaving a scope can only hide cancellations: nothing to wake.
            let wakes = tree().detach(root);
            debug_assert!(wakes.is_empty());
        }
    }

    /// Adoption (structured-exit=loop): the task, still running, becomes a child of `group`
    /// (held at `slot`), under the group's scope `node`: the group's cancellation reaches it.
    pub(crate) fn join_group(
        &self,
        py: Python<'_>,
        group: &Bound<'_, TaskGroup>,
        slot: usize,
        node: Option<NodeId>,
    ) {
        self.group.set(Some(group.clone().unbind()));
        self.group_slot.set(Some(slot));
        if self.starting.get() {
            return;
        }
        if let (Some(root), Some(node)) = (self.root_node.get(), node) {
            let wakes = tree().reparent(root, node);
            wake_all(py, wakes, None);
        }
    }

    /// A failure that `group` decides when the task is collected (root-task-group=unretrieved):
    /// see `_collected`.
    pub(crate) fn watch_collection(&self, group: Py<TaskGroup>) {
        self.collected_by.set(Some(group));
    }

    /// Undoes a spawn whose first step could not be started (scheduling it raised, or an eager
    /// first step could not enter the task's context): the coroutine never ran. The task ends
    /// cancelled (not pending: no "destroyed but it is pending" report), its coroutine is
    /// closed (no "never awaited" warning), it leaves the scope tree, and its group lets go
    /// of it. A task whose first step did run is left alone: it lives on (or has finished).
    pub fn abandon_unstarted(slf: &Bound<'_, TaskCore>) {
        let py = slf.py();
        let this = slf.get();
        if this.started.get() || this.finished.get() {
            return;
        }
        gc_retrack(slf.as_any());
        this.finished.set(true);
        this.fut_waiter.set(None);
        if let Some(id) = this.tree_id.replace(None) {
            tree().remove_task(id);
        }
        this.root_node.set(None);
        let task = this.task.take();
        if let Some(task) = &task {
            let task = task.bind(py);
            gc_retrack(task);
            if let Err(e) = cached(py).future_cancel.bind(py).call1((task, py.None())) {
                e.write_unraisable(py, Some(task));
            }
        }
        if let Some(coro) = this.coro.get_ref(py) {
            let coro = coro.bind(py);
            if let Err(e) = coro.call_method0(pyo3::intern!(py, "close")) {
                e.write_unraisable(py, Some(coro));
            }
        }
        if let Some(group) = this.group.take() {
            if let Some(task) = &task {
                group.get().note_awaited_by(py, task.bind(py), false);
            }
            group.get().child_abandoned(py, this.group_slot.take());
        }
    }

    /// One step of the coroutine: send None, or throw `exc` in (`kind`: what started it).
    fn step<'py>(
        slf: &Bound<'py, TaskCore>,
        exc: Option<Bound<'py, PyAny>>,
        kind: StepKind,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let c = cached(py);
        let task = match this.task.get_ref(py) {
            Some(t) => t.into_bound(py),
            None => {
                return Err(PyErr::from_value(
                    c.invalid_state_error
                        .bind(py)
                        .call1(("_step(): the task has already finished",))?,
                ))
            }
        };
        if this.finished.get() {
            let msg = format!(
                "_step(): already done: {}, {}",
                task.repr()?,
                match &exc {
                    Some(e) => e.repr()?.to_string(),
                    None => "None".into(),
                }
            );
            return Err(PyErr::from_value(
                c.invalid_state_error.bind(py).call1((msg,))?,
            ));
        }
        let loop_ = this
            .loop_
            .get_ref(py)
            .ok_or_else(|| runtime_error("task has no loop"))?
            .into_bound(py);
        let mut exc = exc;
        // Stock edge cancellation (Task.cancel() with the task-cancel-level switch off).
        if this.must_cancel.get() {
            let is_ce = exc
                .as_ref()
                .is_some_and(|e| e.is_instance(c.cancelled_error.bind(py)).unwrap_or(false));
            if !is_ce {
                let msg = this.cancel_message.get_ref(py);
                let e = match msg {
                    Some(m) => c.cancelled_error.bind(py).call1((m,))?,
                    None => c.cancelled_error.bind(py).call0()?,
                };
                exc = Some(e);
            }
            this.must_cancel.set(false);
        }
        this.fut_waiter.set(None);
        let scope_woke_us = this.waiter_cancelled_by_scope.replace(false);
        // Scope cancellation: not on the first step (a task spawned into a cancelled scope runs
        // to its first yield point, as in Trio), unless the task itself was cancelled before
        // it started: `Task.cancel()` keeps stock's contract, the body never runs (the
        // CancelledError is thrown into the coroutine before its first line).
        let cancelled_before_start = !this.started.get()
            && this
                .root_node
                .get()
                .is_some_and(|n| tree().cancel_called(n));
        if (this.started.get() || cancelled_before_start) && kind != StepKind::Completed {
            if let Some(tid) = this.tree_id.get() {
                let deliver = {
                    let mut t = tree();
                    if level_cancellation() {
                        t.task_should_deliver_level(tid)
                    } else {
                        t.take_edge_delivery(tid)
                    }
                    .then(|| t.delivery_reason(tid))
                };
                let deliver = match deliver {
                    // Woken by a scope that has been shielded (or lifted) since: the wake-up is
                    // still that scope's cancellation, never a stray unmarked one.
                    None if scope_woke_us
                        && exc.as_ref().is_some_and(|e| {
                            e.is_instance(c.cancelled_error.bind(py)).unwrap_or(false)
                        }) =>
                    {
                        Some(None)
                    }
                    d => d,
                };
                if let Some(reason) = deliver {
                    let msg = reason.map(|r| PyString::new(py, &r).into_any());
                    exc = Some(new_marked_cancelled_error(py, msg.as_ref(), tid.as_u64())?);
                }
            }
        }
        this.started.set(true);

        let coro = this
            .coro
            .get_ref(py)
            .ok_or_else(|| runtime_error("task has no coroutine"))?
            .into_bound(py);
        let swap = c
            .swap_current_task
            .as_ref()
            .filter(|_| kind == StepKind::Eager);
        let prev_task = match swap {
            Some(swap) => Some(swap.bind(py).call1((&loop_, &task))?),
            None => {
                enter_task(py, &loop_, &task)?;
                None
            }
        };
        let prev = CURRENT.with(|cur| cur.replace(Some(slf.clone().unbind())));
        let outcome = match &exc {
            None => send_none(&coro),
            Some(e) => throw(&coro, e),
        };
        let prev = CURRENT.with(|cur| cur.replace(prev));
        drop(prev);
        let left = match (swap, prev_task) {
            (Some(swap), Some(prev_task)) => swap.bind(py).call1((&loop_, prev_task)).map(|_| ()),
            _ => leave_task(py, &loop_, &task),
        };

        let result = Self::handle_outcome(slf, &task, &loop_, outcome);
        left?;
        result
    }

    fn handle_outcome<'py>(
        slf: &Bound<'py, TaskCore>,
        task: &Bound<'py, PyAny>,
        loop_: &Bound<'py, PyAny>,
        outcome: PyResult<Sent<'py>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let c = cached(py);
        match outcome {
            Ok(Sent::Return(value)) => {
                if this.must_cancel.get() {
                    this.must_cancel.set(false);
                    c.future_cancel
                        .bind(py)
                        .call1((task, this.cancel_message.get_ref(py)))?;
                } else {
                    c.future_set_result.bind(py).call1((task, value))?;
                }
                Self::finish(slf);
                Ok(())
            }
            Err(err) => {
                let value = err.value(py);
                if value.is_instance(c.cancelled_error.bind(py))? {
                    let args = value.getattr(pyo3::intern!(py, "args"))?;
                    let msg = if args.len()? > 0 {
                        Some(args.get_item(0)?)
                    } else {
                        None
                    };
                    c.future_cancel.bind(py).call1((task, msg))?;
                    this.cancelled_exc
                        .set(Some(value.clone().into_any().unbind()));
                    Self::finish(slf);
                    Ok(())
                } else if is_exit_request(value)? {
                    c.future_set_exception.bind(py).call1((task, value))?;
                    Self::finish(slf);
                    Err(err)
                } else {
                    // Read before set_exception() hands the callbacks to the loop.
                    if let Some(group) = this.group.get_ref(py) {
                        if group.get().decides_at_finish() {
                            let callbacks = task.getattr(pyo3::intern!(py, "_callbacks"))?;
                            this.waited.set(callbacks.is_truthy()?);
                        }
                    }
                    c.future_set_exception.bind(py).call1((task, value))?;
                    Self::finish(slf);
                    Ok(())
                }
            }
            Ok(Sent::Yield(result)) => {
                if result.is_none() {
                    // Bare yield: give up one loop iteration.
                    return Self::schedule_step(slf, loop_, None);
                }
                let blocking = match result.getattr(pyo3::intern!(py, "_asyncio_future_blocking")) {
                    Ok(b) => Some(b),
                    Err(e) if e.is_instance_of::<PyAttributeError>(py) => None,
                    Err(e) => return Err(e),
                };
                match blocking {
                    Some(b) if !b.is_none() => {
                        let plain_future = result.get_type().is(c.future_type.bind(py));
                        let fut_loop = if plain_future {
                            c.future_get_loop.bind(py).call1((&result,))?
                        } else {
                            match result.call_method0(pyo3::intern!(py, "get_loop")) {
                                Ok(l) => l,
                                Err(_) => result.getattr(pyo3::intern!(py, "_loop"))?,
                            }
                        };
                        if !fut_loop.is(loop_) {
                            return Self::schedule_step_raising(
                                slf,
                                loop_,
                                format!(
                                    "Task {} got Future {} attached to a different loop",
                                    task.repr()?,
                                    result.repr()?
                                ),
                            );
                        }
                        if !b.is_truthy()? {
                            return Self::schedule_step_raising(
                                slf,
                                loop_,
                                format!(
                                    "yield was used instead of yield from in task {} with {}",
                                    task.repr()?,
                                    result.repr()?
                                ),
                            );
                        }
                        if result.is(task) {
                            return Self::schedule_step_raising(
                                slf,
                                loop_,
                                format!("Task cannot await on itself: {}", task.repr()?),
                            );
                        }
                        result.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), false)?;
                        let ctx = this
                            .context
                            .get_ref(py)
                            .ok_or_else(|| runtime_error("task has no context"))?
                            .into_bound(py);
                        if plain_future {
                            call_unbound_with_context(
                                c.future_add_done_callback.bind(py),
                                &result,
                                slf.as_any(),
                                &ctx,
                            )?;
                        } else {
                            call_with_context(
                                &result,
                                pyo3::intern!(py, "add_done_callback"),
                                slf.as_any(),
                                None,
                                &ctx,
                            )?;
                        }
                        if let Some(add) = &c.future_add_to_awaited_by {
                            add.bind(py).call1((&result, task))?;
                        }
                        this.fut_waiter.set(Some(result.clone().unbind()));
                        // Level: a yield inside a cancelled scope is cancelled at once.
                        if let Some(tid) = this.tree_id.get() {
                            let pending = {
                                let t = tree();
                                let due = if level_cancellation() {
                                    t.task_should_deliver_level(tid)
                                } else {
                                    t.edge_delivery_pending(tid)
                                };
                                due.then(|| t.delivery_reason(tid))
                            };
                            if let Some(reason) = pending {
                                let msg = reason.map(|r| PyString::new(py, &r).into_any());
                                Self::wake_for_cancel(slf, msg.as_ref());
                            }
                        }
                        if this.must_cancel.get() {
                            let cancelled = result
                                .call_method1(
                                    pyo3::intern!(py, "cancel"),
                                    (this.cancel_message.get_ref(py),),
                                )?
                                .is_truthy()?;
                            if cancelled {
                                this.must_cancel.set(false);
                            }
                        }
                        Ok(())
                    }
                    _ => {
                        let msg = if c.isgenerator.bind(py).call1((&result,))?.is_truthy()? {
                            format!(
                                "yield was used instead of yield from for generator in task {} with {}",
                                task.repr()?,
                                result.repr()?
                            )
                        } else {
                            format!("Task got bad yield: {}", result.repr()?)
                        };
                        Self::schedule_step_raising(slf, loop_, msg)
                    }
                }
            }
        }
    }

    /// Creates the core of `task` (an instance of the Python Task class whose Future part is
    /// initialised), registers it and starts it as `options.start` says.
    pub fn attach<'py>(
        task: &Bound<'py, PyAny>,
        loop_: &Bound<'py, PyAny>,
        coro: &Bound<'py, PyAny>,
        options: TaskOptions<'_, 'py>,
    ) -> PyResult<Bound<'py, TaskCore>> {
        let py = task.py();
        let TaskOptions {
            name,
            context,
            group,
            parent_node,
            start,
        } = options;
        let c = cached(py);
        if !c.iscoroutine.bind(py).call1((coro,))?.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "a coroutine was expected, got {}",
                coro.repr()?
            )));
        }
        let context = match context {
            Some(ctx) if !ctx.is_none() => ctx,
            _ => c.copy_context.bind(py).call0()?,
        };
        let name = match name {
            Some(n) if !n.is_none() => Some(n.str()?.into_any().unbind()),
            _ => None,
        };
        let core = Bound::new(
            py,
            TaskCore {
                vectorcall: core_vectorcall,
                task: GilCell::new(Some(task.clone().unbind())),
                coro: GilCell::new(Some(coro.clone().unbind())),
                context: GilCell::new(Some(context.unbind())),
                loop_: GilCell::new(Some(loop_.clone().unbind())),
                fut_waiter: GilCell::new(None),
                group: GilCell::new(group.map(|g| g.clone().unbind())),
                cancel_message: GilCell::new(None),
                name: GilCell::new(name),
                cancelled_exc: GilCell::new(None),
                finished_task: GilCell::new(None),
                waiter_cancelled_by_scope: GilCell::new(false),
                tree_id: GilCell::new(None),
                root_node: GilCell::new(None),
                started: GilCell::new(false),
                finished: GilCell::new(false),
                must_cancel: GilCell::new(false),
                num_cancels: GilCell::new(0),
                starting: GilCell::new(false),
                group_slot: GilCell::new(None),
                collected_by: GilCell::new(None),
                waited: GilCell::new(false),
                seq: TASK_COUNTER.fetch_add(1, Ordering::Relaxed) + 1,
            },
        )?;
        VECTORCALL.call_once(|| enable_vectorcall(&core));
        // The tree holds a borrowed pointer; Drop removes it before the object is freed.
        let handle = core.as_ptr() as usize;
        let (tid, node) = {
            let mut t = tree();
            let tid = t.add_task(handle);
            let node = t.open_task_node(tid, parent_node);
            (tid, node)
        };
        let node = node.map_err(|e| runtime_error(e.to_string()))?;
        core.get().tree_id.set(Some(tid));
        core.get().root_node.set(Some(node));
        task.setattr(pyo3::intern!(py, "_core"), &core)?;
        c.register_task.bind(py).call1((task,))?;
        if let Some(start) = start {
            if let Err(e) = Self::start(&core, loop_, start) {
                Self::abandon_unstarted(&core);
                return Err(e);
            }
        }
        Ok(core)
    }

    /// Starts a task attached with `start: None` (see `Start`). A group adopts its child
    /// before starting it, so a child that finishes during its eager step is counted.
    pub fn start<'py>(
        core: &Bound<'py, TaskCore>,
        loop_: &Bound<'py, PyAny>,
        start: Start,
    ) -> PyResult<()> {
        let py = core.py();
        let run_eagerly = start == Start::Eager
            && cached(py).swap_current_task.is_some()
            && loop_
                .call_method0(pyo3::intern!(py, "is_running"))?
                .is_truthy()?;
        if run_eagerly {
            let ctx = core
                .get()
                .context
                .get_ref(py)
                .expect("context set at creation");
            ctx.bind(py).call_method1(
                pyo3::intern!(py, "run"),
                (core.getattr(pyo3::intern!(py, "_step_eager"))?,),
            )?;
            Ok(())
        } else {
            Self::schedule_step(core, loop_, None)
        }
    }
}

/// asyncio's `_enter_task(loop, task)`, same checks and messages, on its dict when possible.
/// 3.14+: the C accelerator keeps the current task on the thread state and its `_enter_task`
/// refuses a loop that is not the thread's running loop as the C `_set_running_loop` recorded
/// it (stock's C task steps through an internal entry without that check). A loop made
/// running by the pure-Python `events._set_running_loop` (a test swapping it) cannot run
/// asyncbis tasks there: "loop ... is not the running loop", as for stock's `_PyTask`.
fn enter_task<'py>(
    py: Python<'py>,
    loop_: &Bound<'py, PyAny>,
    task: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let c = cached(py);
    let Some(current) = &c.current_tasks else {
        c.enter_task.bind(py).call1((loop_, task))?;
        return Ok(());
    };
    let current = current.bind(py);
    if let Some(other) = current.get_item(loop_)? {
        return Err(runtime_error(format!(
            "Cannot enter into task {} while another task {} is being executed.",
            task.repr()?,
            other.repr()?
        )));
    }
    current.set_item(loop_, task)
}

/// asyncio's `_leave_task(loop, task)`.
fn leave_task<'py>(
    py: Python<'py>,
    loop_: &Bound<'py, PyAny>,
    task: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let c = cached(py);
    let Some(current) = &c.current_tasks else {
        c.leave_task.bind(py).call1((loop_, task))?;
        return Ok(());
    };
    let current = current.bind(py);
    match current.get_item(loop_)? {
        Some(t) if t.is(task) => current.del_item(loop_),
        other => Err(runtime_error(format!(
            "Leaving task {} does not match the current task {}.",
            task.repr()?,
            match other {
                Some(o) => o.repr()?.to_string(),
                None => "None".into(),
            }
        ))),
    }
}

static CONTEXT_KWNAMES: pyo3::sync::PyOnceLock<Py<pyo3::types::PyTuple>> =
    pyo3::sync::PyOnceLock::new();

/// `("context",)`, the keyword names of a vectorcall passing `context=`.
fn context_kwnames(py: Python<'_>) -> *mut ffi::PyObject {
    CONTEXT_KWNAMES
        .get_or_init(py, || {
            // Interned, like the parameter name it must match (identity hits the fast path).
            pyo3::types::PyTuple::new(py, [PyString::intern(py, "context")])
                .expect("a tuple of one str")
                .unbind()
        })
        .as_ptr()
}

/// `obj.method(cb[, arg], context=ctx)` by vectorcall: no kwargs dict, no bound method (this is
/// on every step: `loop.call_soon(core, context=...)`, `fut.add_done_callback(core, context=...)`).
pub fn call_with_context<'py>(
    obj: &Bound<'py, PyAny>,
    method: &Bound<'py, PyString>,
    cb: &Bound<'py, PyAny>,
    arg: Option<&Bound<'py, PyAny>>,
    ctx: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = obj.py();
    let kwnames = context_kwnames(py);
    let (args, nargs): ([*mut ffi::PyObject; 4], usize) = match arg {
        Some(a) => ([obj.as_ptr(), cb.as_ptr(), a.as_ptr(), ctx.as_ptr()], 3),
        None => (
            [
                obj.as_ptr(),
                cb.as_ptr(),
                ctx.as_ptr(),
                std::ptr::null_mut(),
            ],
            2,
        ),
    };
    // SAFETY: every pointer is a live object borrowed for the call; args[0] is self, the
    // positional args follow, then one keyword value named by `kwnames`.
    let ret =
        unsafe { ffi::PyObject_VectorcallMethod(method.as_ptr(), args.as_ptr(), nargs, kwnames) };
    if ret.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference returned by the call.
    drop(unsafe { Bound::from_owned_ptr(py, ret) });
    Ok(())
}

/// `func(obj, cb, context=ctx)` by vectorcall (`func`: an unbound method such as
/// `Future.add_done_callback`).
fn call_unbound_with_context<'py>(
    func: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    cb: &Bound<'py, PyAny>,
    ctx: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = obj.py();
    let kwnames = context_kwnames(py);
    let args = [obj.as_ptr(), cb.as_ptr(), ctx.as_ptr()];
    // SAFETY: live borrowed objects; two positional args, then one keyword value.
    let ret = unsafe { ffi::PyObject_Vectorcall(func.as_ptr(), args.as_ptr(), 2, kwnames) };
    if ret.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference returned by the call.
    drop(unsafe { Bound::from_owned_ptr(py, ret) });
    Ok(())
}

enum Sent<'py> {
    Yield(Bound<'py, PyAny>),
    Return(Bound<'py, PyAny>),
}

fn send_none<'py>(coro: &Bound<'py, PyAny>) -> PyResult<Sent<'py>> {
    let py = coro.py();
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: coro is a live object; PyIter_Send returns a new reference in `out` on
    // PYGEN_NEXT/PYGEN_RETURN and sets an exception on PYGEN_ERROR.
    let status = unsafe { ffi::PyIter_Send(coro.as_ptr(), ffi::Py_None(), &mut out) };
    match status {
        ffi::PySendResult::PYGEN_NEXT => Ok(Sent::Yield(unsafe { Bound::from_owned_ptr(py, out) })),
        ffi::PySendResult::PYGEN_RETURN => {
            Ok(Sent::Return(unsafe { Bound::from_owned_ptr(py, out) }))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

fn throw<'py>(coro: &Bound<'py, PyAny>, exc: &Bound<'py, PyAny>) -> PyResult<Sent<'py>> {
    let py = coro.py();
    match coro.call_method1(pyo3::intern!(py, "throw"), (exc,)) {
        Ok(v) => Ok(Sent::Yield(v)),
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            let value = e.value(py).getattr(pyo3::intern!(py, "value"))?;
            Ok(Sent::Return(value))
        }
        Err(e) => Err(e),
    }
}

/// One future to cancel on behalf of a cancellation (see `cancel_iteratively`).
struct CancelOp {
    future: Py<PyAny>,
    message: Option<Py<PyAny>>,
    /// The task woken by it: marked so that its next step knows the CancelledError the future
    /// brings is a scope's.
    woken: Option<Py<TaskCore>>,
}

thread_local! {
    /// Futures waiting to be cancelled while an outer `cancel_iteratively` is running.
    static CANCEL_QUEUE: RefCell<Option<std::collections::VecDeque<CancelOp>>> =
        const { RefCell::new(None) };
}

/// Cancels a future, iteratively: cancelling the future a task waits on may be cancelling a
/// task that waits on a task... (an await chain), each `cancel()` cancelling the next one.
/// Done by recursion, a chain of 1,000 links overflowed Python's recursion limit (the
/// RecursionError went to the unraisable hook and the cancellation reached nothing). Calls made
/// while one is running are queued and run by the outermost call, one after the other.
fn cancel_iteratively(py: Python<'_>, op: CancelOp) {
    let nested = CANCEL_QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        match q.as_mut() {
            Some(queue) => {
                queue.push_back(op);
                None
            }
            None => {
                *q = Some(std::collections::VecDeque::new());
                Some(op)
            }
        }
    });
    let Some(first) = nested else { return };
    let mut next = Some(first);
    while let Some(op) = next {
        let future = op.future.bind(py);
        let r = match &op.message {
            Some(m) => future.call_method1(pyo3::intern!(py, "cancel"), (m,)),
            None => future.call_method0(pyo3::intern!(py, "cancel")),
        };
        match r {
            Ok(done) => {
                if let (true, Some(core)) = (done.is_truthy().unwrap_or(false), &op.woken) {
                    core.get().waiter_cancelled_by_scope.set(true);
                }
            }
            Err(e) => e.write_unraisable(py, Some(future)),
        }
        next = CANCEL_QUEUE.with(|q| q.borrow_mut().as_mut().and_then(|q| q.pop_front()));
    }
    CANCEL_QUEUE.with(|q| *q.borrow_mut() = None);
}

/// Whether `fut` is a pending asyncbis task (its `cancel()` is `TaskCore::cancel`, which
/// returns True while the task is not finished).
fn pending_asyncbis_task(py: Python<'_>, fut: &Bound<'_, PyAny>) -> bool {
    fut.getattr_opt(pyo3::intern!(py, "_core"))
        .ok()
        .flatten()
        .and_then(|c| c.cast_into::<TaskCore>().ok())
        .is_some_and(|c| !c.get().finished.get())
}

/// Wakes the tasks a cancellation reached. Handles are turned into owned references before any
/// Python code can run (the GIL is held throughout), so none can have been freed.
pub fn wake_all(py: Python<'_>, wakes: Vec<Wake>, message: Option<&Bound<'_, PyAny>>) {
    let cores: Vec<Bound<'_, TaskCore>> = wakes
        .iter()
        .map(|w| {
            // SAFETY: the tree only holds handles of live TaskCore objects (removed in Drop).
            let any = unsafe { Bound::from_borrowed_ptr(py, w.handle as *mut ffi::PyObject) };
            any.cast_into::<TaskCore>()
                .expect("tree handle is a TaskCore")
        })
        .collect();
    for core in cores {
        TaskCore::wake_for_cancel(&core, message);
    }
}

#[pymethods]
impl TaskCore {
    /// Step (no argument, or an exception to throw in) or wake-up (a finished future). The
    /// loop and futures reach `TaskCore::call` through `core_vectorcall`; this is the entry for
    /// other call shapes (keywords, or a wrong number of arguments: PyO3's error).
    #[pyo3(signature = (arg = None))]
    fn __call__(slf: &Bound<'_, Self>, arg: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::call(slf, arg)
    }

    /// Called by `Task.__del__` when the task's exception was never retrieved: a group
    /// watching it (root-task-group=unretrieved) takes the failure. True if it did (the
    /// exception is retrieved then, so stock's "never retrieved" log does not follow).
    fn _collected(&self, task: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = task.py();
        match self.collected_by.take() {
            Some(group) => TaskGroup::child_collected(group.bind(py), task),
            None => Ok(false),
        }
    }

    /// Debug mode: lets go of the finished task one loop iteration after it finished (see
    /// `finish`).
    fn _release_task(&self) {
        if self.finished.get() {
            drop(self.task.take());
        }
    }

    /// The first step of an eagerly started task (called inside the task's context).
    fn _step_eager(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::step(slf, None, StepKind::Eager)
    }

    /// `Task.cancel()`: level (the task's own scope is cancelled) or stock edge semantics.
    #[pyo3(signature = (msg = None))]
    fn cancel(&self, py: Python<'_>, msg: Option<Bound<'_, PyAny>>) -> PyResult<bool> {
        if self.finished.get() {
            return Ok(false);
        }
        self.num_cancels.set(self.num_cancels.get() + 1);
        if task_cancel_mode() != 0 {
            if let Some(node) = self.root_node.get() {
                let reason = match &msg {
                    Some(m) if !m.is_none() => Some(m.str()?.to_string()),
                    _ => None,
                };
                let wakes = tree().cancel_with_reason(node, reason);
                wake_all(py, wakes, msg.as_ref());
                self.cancel_message.set(msg.map(|m| m.unbind()));
                return Ok(true);
            }
        }
        if let Some(waiter) = self.fut_waiter.get_ref(py) {
            if pending_asyncbis_task(py, waiter.bind(py)) {
                // Its cancel() returns True; queued, so that an await chain is not recursion.
                cancel_iteratively(
                    py,
                    CancelOp {
                        future: waiter,
                        message: msg.map(|m| m.unbind()),
                        woken: None,
                    },
                );
                return Ok(true);
            }
            let cancelled = waiter
                .bind(py)
                .call_method1(pyo3::intern!(py, "cancel"), (msg.as_ref(),))?
                .is_truthy()?;
            if cancelled {
                return Ok(true);
            }
        }
        self.must_cancel.set(true);
        self.cancel_message.set(msg.map(|m| m.unbind()));
        Ok(true)
    }

    fn uncancel(&self, py: Python<'_>) -> PyResult<i64> {
        let n = self.num_cancels.get();
        if n > 0 {
            self.num_cancels.set(n - 1);
            if n - 1 == 0 {
                if task_cancel_mode() == 2 {
                    if let Some(node) = self.root_node.get() {
                        tree().uncancel(node);
                    }
                }
                // 3.13 resets a pending edge cancellation when the count drops to zero.
                if py.version_info() >= (3, 13) {
                    self.must_cancel.set(false);
                }
            }
        }
        Ok(self.num_cancels.get())
    }

    fn cancelling(&self) -> i64 {
        self.num_cancels.get()
    }

    fn get_name(&self, py: Python<'_>) -> Py<PyAny> {
        match self.name.get_ref(py) {
            Some(n) => n,
            None => {
                let n = PyString::new(py, &format!("Task-{}", self.seq))
                    .into_any()
                    .unbind();
                self.name.set(Some(n.clone_ref(py)));
                n
            }
        }
    }

    fn set_name(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.name.set(Some(value.str()?.into_any().unbind()));
        Ok(())
    }

    /// The task this core steps: asyncio's handle formatting (`_format_handle`, slow-callback
    /// logs) looks for a task in the callback's `__self__`. None once the task finished,
    /// except in debug mode (see `finish`).
    #[getter(__self__)]
    fn owner_task(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        if let Some(t) = self.task.get_ref(py) {
            return Some(t);
        }
        let weak = self.finished_task.get_ref(py)?;
        let task = weak.bind(py).call0().ok()?;
        (!task.is_none()).then(|| task.unbind())
    }

    #[getter]
    fn coro(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.coro.get_ref(py)
    }

    #[getter]
    fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.get_ref(py)
    }

    #[getter]
    fn fut_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.fut_waiter.get_ref(py)
    }

    #[getter]
    fn must_cancel(&self) -> bool {
        self.must_cancel.get()
    }

    /// True while a child of `TaskGroup.start()` has not called `task_status.started()`.
    #[getter]
    fn get_starting(&self) -> bool {
        self.starting.get()
    }

    /// Setting it to False (`task_status.started()`) hands the child over to its group: it
    /// leaves the scope of the caller of `start()` for the group's scope (Trio, AnyIO).
    #[setter]
    fn set_starting(&self, py: Python<'_>, value: bool) {
        if self.starting.replace(value) && !value {
            let group_node = self.group.get_ref(py).and_then(|g| g.get().scope_node(py));
            if let (Some(root), Some(group_node)) = (self.root_node.get(), group_node) {
                let wakes = tree().reparent(root, group_node);
                wake_all(py, wakes, None);
            }
        }
    }

    #[getter]
    fn group(&self, py: Python<'_>) -> Option<Py<TaskGroup>> {
        self.group.get_ref(py)
    }

    /// Whether this task's innermost scope is effectively cancelled right now.
    #[getter]
    fn effectively_cancelled(&self) -> bool {
        match self.tree_id.get() {
            Some(t) => tree().task_should_deliver_level(t),
            None => false,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.task.visit(&visit)?;
        self.coro.visit(&visit)?;
        self.context.visit(&visit)?;
        self.loop_.visit(&visit)?;
        self.fut_waiter.visit(&visit)?;
        self.cancel_message.visit(&visit)?;
        self.name.visit(&visit)?;
        self.cancelled_exc.visit(&visit)?;
        self.finished_task.visit(&visit)?;
        self.collected_by.visit(&visit)?;
        self.group.visit(&visit)
    }

    fn __clear__(&self) {
        self.task.set(None);
        self.coro.set(None);
        self.context.set(None);
        self.fut_waiter.set(None);
        self.cancel_message.set(None);
        self.cancelled_exc.set(None);
        self.group.set(None);
        self.collected_by.set(None);
    }
}

impl Drop for TaskCore {
    fn drop(&mut self) {
        if let Some(id) = self.tree_id.replace(None) {
            tree().remove_task(id);
        }
    }
}

/// Patches `TaskCore`'s type once, when the first core exists.
static VECTORCALL: std::sync::Once = std::sync::Once::new();

/// Makes `TaskCore` instances vectorcall-able. PyO3 classes are called through `tp_call`
/// (`_PyObject_MakeTpCall` packs the arguments in a tuple, PyO3's trampoline parses them against
/// the signature): about 1.2k instructions per call, and the loop calls a core on every step and
/// wake-up (stock's C task binds a METH_O C function instead). The type gets the vectorcall flag
/// and the offset of the `vectorcall` field, which every instance sets to `core_vectorcall`
/// (PyO3 itself sets `Py_TPFLAGS_IMMUTABLETYPE` the same way after creating a type). `tp_call`
/// stays for the call shapes `core_vectorcall` hands back to it.
fn enable_vectorcall(core: &Bound<'_, TaskCore>) {
    let object = core.as_ptr() as usize;
    let field = std::ptr::addr_of!(core.get().vectorcall) as usize;
    let tp = core.get_type().as_type_ptr();
    // SAFETY: the offset is that of a field inside the object (same layout for every instance
    // of this final class), holding a valid `vectorcallfunc`; the type object is live (an
    // instance exists) and no other thread runs Python code (the GIL is held). tp_flags is
    // written through a plain c_ulong pointer (an AtomicCULong on free-threaded builds has
    // the same layout).
    unsafe {
        (*tp).tp_vectorcall_offset = (field - object) as ffi::Py_ssize_t;
        let flags = std::ptr::addr_of_mut!((*tp).tp_flags) as *mut std::ffi::c_ulong;
        *flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
        ffi::PyType_Modified(tp);
    }
}

/// `core(arg)` or `core()` by vectorcall (no tuple, no signature parsing), as the loop's
/// handles and futures' callbacks call it. Other shapes (keywords, too many arguments) go to
/// `tp_call`, i.e. `TaskCore.__call__` with PyO3's argument parsing and errors.
///
/// The body runs inside PyO3's own trampoline for fastcall functions (what `#[pyfunction]`
/// expands to): it marks the thread as attached for PyO3, so that `Py<T>` values dropped in
/// the step are released at once instead of being queued in PyO3's deferred-decref pool (the
/// loop calls in from Python code, with no PyO3 frame below), and it turns a panic into an
/// exception.
unsafe extern "C" fn core_vectorcall(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the vectorcall protocol's argument count (the flag bit masked off).
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf) };
    // SAFETY: called by the interpreter with the GIL held, with the vectorcall arguments.
    unsafe {
        pyo3::impl_::trampoline::get_trampoline_function!(
            fastcall_cfunction_with_keywords,
            core_fastcall
        )(callable, args, nargs, kwnames)
    }
}

/// The body of `core_vectorcall`.
///
/// # Safety
/// `callable` is a live TaskCore; `args` holds `nargs` positional values followed by one value
/// per name in `kwnames` (NULL or a tuple).
unsafe fn core_fastcall(
    py: Python<'_>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: kwnames is NULL or a tuple.
    let has_keywords = !kwnames.is_null() && unsafe { ffi::PyTuple_GET_SIZE(kwnames) } > 0;
    if has_keywords || nargs > 1 {
        // SAFETY: the caller's contract.
        return unsafe { call_through_tp_call(py, callable, args, nargs, kwnames) };
    }
    // SAFETY: only TaskCore's type has this vectorcall entry; args[0] is live when nargs == 1.
    let slf = unsafe { Bound::from_borrowed_ptr(py, callable).cast_into_unchecked::<TaskCore>() };
    let arg = (nargs == 1).then(|| unsafe { Bound::from_borrowed_ptr(py, *args) });
    TaskCore::call(&slf, arg)?;
    Ok(py.None().into_ptr())
}

/// A vectorcall turned into a `tp_call` (argument tuple and keyword dict), for the shapes
/// `core_vectorcall` does not handle itself.
///
/// # Safety
/// `args` holds `nargs` positional values followed by one value per name in `kwnames`.
unsafe fn call_through_tp_call(
    py: Python<'_>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: the caller's contract on args, nargs and kwnames.
    let positional =
        (0..nargs as usize).map(|i| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) });
    let tuple = pyo3::types::PyTuple::new(py, positional)?;
    let kwargs = if kwnames.is_null() {
        None
    } else {
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) };
        let kwargs = pyo3::types::PyDict::new(py);
        for (i, name) in names.try_iter()?.enumerate() {
            let value = unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs as usize + i)) };
            kwargs.set_item(name?, value)?;
        }
        Some(kwargs)
    };
    // SAFETY: callable is a live TaskCore, whose type has PyO3's tp_call (`__call__`).
    let Some(tp_call) = (unsafe { (*ffi::Py_TYPE(callable)).tp_call }) else {
        return Err(PyTypeError::new_err("TaskCore is not callable"));
    };
    let kwargs = kwargs.as_ref().map_or(std::ptr::null_mut(), |k| k.as_ptr());
    // SAFETY: a tp_call slot called with a tuple and a dict or NULL.
    let ret = unsafe { tp_call(callable, tuple.as_ptr(), kwargs) };
    if ret.is_null() {
        return Err(PyErr::fetch(py));
    }
    Ok(ret)
}
