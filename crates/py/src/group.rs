//! `TaskGroup`: strict structured concurrency over a cancel scope.
//!
//! Children hang below the group's scope node, so cancelling the scope reaches all of them
//! through the tree; the group itself only counts live children (O(1) per spawn/finish) and
//! collects failures. The first child failure cancels the scope.

use pyo3::exceptions::PyStopIteration;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::scope::CancelScope;
use crate::task::{current_core, Start, TaskCore, TaskOptions};
use crate::util::{
    cached, gc_retrack, gc_untrack, is_exit_request, is_marked_for, new_marked_cancelled_error,
    runtime_error, tree, with_exception_set_aside, GilCell,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum GroupState {
    #[default]
    Fresh,
    Active,
    Exiting,
    Exited,
}

/// How `TaskGroup::spawn` makes a child.
#[derive(Default)]
pub struct SpawnOptions<'py> {
    /// The task's name (None: `Task-N`).
    pub name: Option<Bound<'py, PyAny>>,
    /// The context its steps run in (None: a copy of the current one).
    pub context: Option<Bound<'py, PyAny>>,
    /// A child of `start()`: its failures go to the starter until it calls `started()`.
    pub starting: bool,
    /// Run the first step now (3.12+, loop running); None: as the loop's task factory says.
    pub eager_start: Option<bool>,
    /// The Task object to give the child's core: a directly constructed one (`Task(coro)`,
    /// its Future part initialised). None: a new one.
    pub task: Option<Bound<'py, PyAny>>,
}

#[pyclass(module = "asyncbis._core", frozen, subclass)]
pub struct TaskGroup {
    state: GilCell<GroupState>,
    scope: Py<CancelScope>,
    host: GilCell<Option<Py<TaskCore>>>,
    loop_: GilCell<Option<Py<PyAny>>>,
    live: GilCell<usize>,
    /// Strong references to the live children, as a Trio nursery holds its tasks: a child
    /// waiting on a future that nothing else references must not be collected (and never
    /// report back) while the group waits for it. A slab: O(1) adopt and release.
    children: GilCell<Vec<Option<Py<PyAny>>>>,
    free_slots: GilCell<Vec<usize>>,
    /// Finished children of a cancelled group, still untracked, held until the group exits
    /// (see `keeps_finished_child`).
    kept: GilCell<Vec<Py<PyAny>>>,
    /// How many finished children the group may keep: its live children when it kept the
    /// first one (0: none kept yet).
    keep_budget: GilCell<usize>,
    errors: GilCell<Vec<Py<PyAny>>>,
    base_error: GilCell<Option<Py<PyAny>>>,
    waiter: GilCell<Option<Py<PyAny>>>,
    /// A child ended cancelled: its cancellation stands for the group's exit (Trio's nursery
    /// raises its children's Cancelled), so the exit is a cancel point then.
    cancelled_children: GilCell<bool>,
    /// Non-zero while in `UNTRACKED_GROUPS` (its key: this object's address): some running
    /// children's cores are out of the cyclic GC.
    registered: GilCell<usize>,
    /// Which child failures the group acts on (`OrphanPolicy`); the root group's follows the
    /// root-task-group switch, every other group is strict.
    orphan_policy: GilCell<OrphanPolicy>,
    /// The root group of a run (`_set_orphan_policy`): its children are the run's loose
    /// tasks, which nobody awaits.
    is_root: GilCell<bool>,
    /// structured-exit=loop (`_hand_over_at_exit`): when the body returns and nothing failed,
    /// the exit hands the children still running over to the loop's next run instead of
    /// waiting for them (see `GroupExit::poll`).
    hand_over: GilCell<bool>,
    /// The exit handed its running children over: they stay its members (held, counted in
    /// `live`) until a later run's root group adopts them (`_adopt`).
    handed_over: GilCell<bool>,
    /// Children that failed after the hand-over, before any run adopted them: their failures
    /// are decided by the adopting group, as if they happened in its run. Not retrieved
    /// meanwhile: if no run adopts them, asyncio logs them as never retrieved.
    held: GilCell<Vec<Py<PyAny>>>,
}

/// When a failed child counts as a failure of the group.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum OrphanPolicy {
    /// Every failure, when the child finishes (Trio's nursery, asyncio.TaskGroup).
    #[default]
    Strict,
    /// Only a failure nobody retrieved (awaited, gathered, `result()`/`exception()` read) by
    /// the time the task is collected: asyncio's own "Task exception was never retrieved".
    AtCollection,
    /// Only a failure nobody retrieved by the end of the loop iteration after the one in which
    /// the child finished (its done callbacks have run by then).
    NextTick,
    /// Only a failure nobody was waiting for when the child finished (no done callback: no
    /// task awaiting it, no gather() or wait() over it); decided then, once.
    AtFinish,
}

/// Groups (by address) holding running children whose cores are untracked (see `gc_untrack`).
///
/// Untracking is sound while the group is alive, and a group is alive while its host task
/// is; a host task is only garbage if it was abandoned (it waits on a future nobody holds,
/// typically because its loop stopped or was closed with tasks pending). The references of
/// an untracked core count as external to the collector, though, so they would keep such an
/// abandoned group and its host alive for ever. `_gc_callback` (a `gc.callbacks` hook)
/// therefore hands back to the GC, before every full collection, the children of groups whose
/// loop is not running; a task abandoned on a loop that keeps running is collected once the
/// loop stops.
static UNTRACKED_GROUPS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn untracked_groups() -> MutexGuard<'static, Option<HashSet<usize>>> {
    UNTRACKED_GROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `gc.callbacks` hook (installed at import): see `UNTRACKED_GROUPS`.
#[pyfunction]
pub fn _gc_callback(py: Python<'_>, phase: &str, info: &Bound<'_, PyAny>) -> PyResult<()> {
    if phase != "start" {
        return Ok(());
    }
    let generation: i64 = info.get_item("generation")?.extract()?;
    if generation < 2 {
        return Ok(());
    }
    let groups: Vec<usize> = match untracked_groups().as_ref() {
        Some(set) if !set.is_empty() => set.iter().copied().collect(),
        _ => return Ok(()),
    };
    for addr in groups {
        // SAFETY: a registered group is alive: it leaves the set in its Drop (and __clear__)
        // before its memory is freed, and the GIL is held, so no other thread frees it now.
        let group = unsafe { Borrowed::from_ptr(py, addr as *mut ffi::PyObject) };
        let Ok(group) = group.cast::<TaskGroup>() else {
            continue;
        };
        let this = group.get();
        let running = this.loop_.get_ref(py).is_some_and(|l| {
            l.bind(py)
                .call_method0(pyo3::intern!(py, "is_running"))
                .and_then(|r| r.is_truthy())
                .unwrap_or(false)
        });
        if running {
            continue;
        }
        this.unregister();
        let children = this.children.take();
        retrack_children(py, &children);
        this.children.set(children);
        let kept = this.kept.take();
        retrack_tasks(py, kept.iter());
        this.kept.set(kept);
    }
    Ok(())
}

impl TaskGroup {
    /// The node of the group's scope (None before entry and after exit).
    pub fn scope_node(&self, py: Python<'_>) -> Option<asyncbis_scopes::NodeId> {
        self.scope.bind(py).get().node()
    }

    /// Called by a child's step when the child finishes (its Future state is already set).
    /// Returns true if the child's failure is decided when the task is collected: the core
    /// then reports it from `Task.__del__` (see `TaskCore::_collected`).
    /// `waited`: the task had done callbacks when it failed (see `decides_at_finish`).
    pub fn child_done(
        slf: &Bound<'_, Self>,
        task: &Bound<'_, PyAny>,
        starting: bool,
        slot: Option<usize>,
        waited: bool,
        kept: bool,
    ) -> bool {
        let py = slf.py();
        let this = slf.get();
        if let Some(slot) = slot {
            this.release(slot);
        }
        if kept {
            this.kept.push(task.clone().unbind());
        }
        if this.handed_over.get() {
            // Between two runs (structured-exit=loop): its failure waits for the next run.
            this.live.set(this.live.get().saturating_sub(1));
            match held_failure(task, starting, this.orphan_policy.get(), waited) {
                Ok(true) => this.held.push(task.clone().unbind()),
                Ok(false) => {}
                Err(e) => e.write_unraisable(py, Some(task)),
            }
            return false;
        }
        let policy = this.orphan_policy.get();
        if !starting && policy != OrphanPolicy::Strict {
            match unretrieved_failure(task) {
                Ok(false) => {}
                Ok(true) if policy == OrphanPolicy::AtFinish => {
                    if waited {
                        // Somebody waits for it: theirs to retrieve (or stock's log if not).
                        this.live.set(this.live.get().saturating_sub(1));
                        this.wake_exit(py);
                        return false;
                    }
                }
                Ok(true) if policy == OrphanPolicy::AtCollection => {
                    this.live.set(this.live.get().saturating_sub(1));
                    this.wake_exit(py);
                    return true;
                }
                Ok(true) => {
                    // Still counted as live, so the group cannot exit before the check ran.
                    let check = slf
                        .getattr(pyo3::intern!(py, "_check_orphan"))
                        .and_then(|check| {
                            let loop_ = this
                                .loop_
                                .get_ref(py)
                                .ok_or_else(|| runtime_error("task group has no loop"))?;
                            loop_
                                .bind(py)
                                .call_method1(pyo3::intern!(py, "call_soon"), (check, task))
                        });
                    match check {
                        Ok(_) => return false,
                        Err(e) => e.write_unraisable(py, Some(task)),
                    }
                }
                Err(e) => e.write_unraisable(py, Some(task)),
            }
        }
        this.live.set(this.live.get().saturating_sub(1));
        // A child of an abandoned group (see `abandon`) keeps its failure: nobody would read it
        // here, and left unretrieved on the task, asyncio logs it.
        if !starting && this.state.get() != GroupState::Exited {
            if let Err(e) = Self::collect_failure(slf, task) {
                e.write_unraisable(py, Some(task));
            }
        }
        this.wake_exit(py);
        false
    }

    /// Whether the group keeps a child that is finishing now, and that somebody else keeps
    /// alive, until the group exits, out of the cyclic GC as it was while running (its core
    /// then leaves it untracked and `child_done` holds it in `kept`). A finished task put back
    /// under the GC enters the youngest generation, so every young collection until the task
    /// is freed traverses it: when a group is cancelled, its children finish together and
    /// often outlive it (a program that cancels task by task holds them in a list), and the
    /// young collections that the cancellation itself triggers traversed every one of them
    /// (cancelling 5,000 sleeping tasks on 3.15: 3.5 ms of young collections against stock's
    /// 2.1 ms, whose tasks aged into the old generation while they ran). So a cancelled group
    /// keeps them, and puts them back under the GC all at once when it exits (`release_kept`).
    ///
    /// Held by the group, a kept task is reachable, as a running child is, so no collection
    /// could free it meanwhile; the groups' GC safety net (`_gc_callback`, `Drop`,
    /// `__clear__`) re-tracks kept tasks with the running ones. Bounded: only a group whose
    /// scope is effectively cancelled keeps children, never a root group (whose children are
    /// the run's loose tasks), and no more than it had live children when it kept the first
    /// one, so the group never holds more tasks than it held before the cancellation.
    pub fn keeps_finished_child(slf: &Bound<'_, Self>) -> bool {
        let py = slf.py();
        let this = slf.get();
        if this.is_root.get() || this.state.get() == GroupState::Exited {
            return false;
        }
        let budget = this.keep_budget.get();
        if budget == 0 {
            let cancelled = this
                .scope_node(py)
                .is_some_and(|n| tree().is_effectively_cancelled(n));
            if !cancelled {
                return false;
            }
            this.keep_budget.set(this.live.get().max(1));
        } else if this.kept.len() >= budget {
            return false;
        }
        Self::register(slf);
        true
    }

    /// Lets go of the finished children the group kept, back under the GC first.
    fn release_kept(&self, py: Python<'_>) {
        let kept = self.kept.take();
        if kept.is_empty() {
            return;
        }
        retrack_tasks(py, kept.iter());
        // Dropped after the cell is restored: freeing a task runs its __del__.
        drop(kept);
    }

    /// Whether a failing child must tell, before its done callbacks are scheduled, whether it
    /// has any (`OrphanPolicy::AtFinish`).
    pub fn decides_at_finish(&self) -> bool {
        self.orphan_policy.get() == OrphanPolicy::AtFinish
    }

    /// Wakes the group's exit once no child is live.
    fn wake_exit(&self, py: Python<'_>) {
        let this = self;
        if this.live.get() == 0 {
            if let Some(w) = this.waiter.take() {
                let w = w.bind(py);
                if !w
                    .call_method0(pyo3::intern!(py, "done"))
                    .and_then(|d| d.is_truthy())
                    .unwrap_or(true)
                {
                    if let Err(e) = w.call_method1(pyo3::intern!(py, "set_result"), (py.None(),)) {
                        e.write_unraisable(py, Some(w));
                    }
                }
            }
        }
    }

    /// A failure decided late (`OrphanPolicy`): if still unretrieved, it is the group's (read
    /// with `exception()`, which marks it retrieved: no "never retrieved" log follows).
    /// `cancel_later`: the group's scope is cancelled by a loop callback rather than now (the
    /// caller is a finaliser, which may run in the middle of any code). False if the group
    /// has exited already (the failure stays unretrieved: stock logs it).
    fn take_orphan(
        slf: &Bound<'_, Self>,
        task: &Bound<'_, PyAny>,
        cancel_later: bool,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if !matches!(this.state.get(), GroupState::Active | GroupState::Exiting)
            || !unretrieved_failure(task)?
        {
            return Ok(false);
        }
        let exc = task.call_method0(pyo3::intern!(py, "exception"))?;
        this.errors.push(exc.unbind());
        if cancel_later {
            let loop_ = this
                .loop_
                .get_ref(py)
                .ok_or_else(|| runtime_error("task group has no loop"))?;
            loop_.bind(py).call_method1(
                pyo3::intern!(py, "call_soon"),
                (slf.getattr(pyo3::intern!(py, "cancel"))?,),
            )?;
        } else {
            Self::cancel_scope_now(slf, None)?;
        }
        Ok(true)
    }

    /// A child watched until collection (`OrphanPolicy::AtCollection`) is being finalised.
    /// Acts only on the loop's own thread (a cyclic collection may finalise the task in another
    /// thread: stock's log is left to report it then).
    pub fn child_collected(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = slf.py();
        let Some(loop_) = slf.get().loop_.get_ref(py) else {
            return Ok(false);
        };
        let running = cached(py).running_loop_or_none.bind(py).call0()?;
        if !running.is(loop_.bind(py)) {
            return Ok(false);
        }
        Self::take_orphan(slf, task, true)
    }

    fn collect_failure(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if task
            .call_method0(pyo3::intern!(py, "cancelled"))?
            .is_truthy()?
        {
            this.cancelled_children.set(true);
            return Ok(());
        }
        // exception() also marks it retrieved, so no "never retrieved" log.
        let exc = task.call_method0(pyo3::intern!(py, "exception"))?;
        if exc.is_none() {
            return Ok(());
        }
        this.record_error(exc)?;
        Self::cancel_scope_now(slf, None)
    }

    /// Keeps an error that leaves the group: the first KeyboardInterrupt/SystemExit leaves
    /// alone, anything else in the exception group.
    fn record_error(&self, exc: Bound<'_, PyAny>) -> PyResult<()> {
        if !is_exit_request(&exc)? {
            self.errors.push(exc.unbind());
        } else if !self.base_error.is_some() {
            self.base_error.set(Some(exc.unbind()));
        }
        Ok(())
    }

    /// Gives up on the group's exit, which will never complete (its awaitable was closed, as a
    /// coroutine's close() does): the group is exited at once instead of left exiting. Its
    /// children are cancelled and finish unattended; the errors it held go to the loop's
    /// exception handler, and a child failing later keeps its unretrieved exception, which
    /// asyncio logs: none is lost.
    fn abandon(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let this = slf.get();
        if this.state.get() == GroupState::Exited {
            return;
        }
        // On a closed loop (a task abandoned there, being collected) the children never run
        // again: nothing to cancel, and waking them would only fail.
        let loop_closed = this.loop_.get_ref(py).is_none_or(|l| {
            l.bind(py)
                .call_method0(pyo3::intern!(py, "is_closed"))
                .and_then(|c| c.is_truthy())
                .unwrap_or(true)
        });
        if !loop_closed {
            if let Err(e) = Self::cancel_scope_now(slf, None) {
                e.write_unraisable(py, Some(slf.as_any()));
            }
        }
        this.state.set(GroupState::Exited);
        this.release_kept(py);
        if let Some(t) = this.host.take().and_then(|h| h.get().tree_id()) {
            tree().set_delivery_suppressed(t, false);
        }
        this.waiter.set(None);
        this.scope.bind(py).get().abandon(py);
        let mut errors = this.errors.take();
        if let Some(base) = this.base_error.take() {
            errors.insert(0, base);
        }
        if !errors.is_empty() {
            if let Err(e) = Self::report_abandoned_errors(slf, errors) {
                e.write_unraisable(py, Some(slf.as_any()));
            }
        }
    }

    fn report_abandoned_errors(slf: &Bound<'_, Self>, errors: Vec<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let group = cached(py)
            .base_exception_group
            .bind(py)
            .call1(("unhandled errors in a TaskGroup", PyList::new(py, errors)?))?;
        let Some(loop_) = slf.get().loop_.get_ref(py) else {
            PyErr::from_value(group).write_unraisable(py, Some(slf.as_any()));
            return Ok(());
        };
        let context = pyo3::types::PyDict::new(py);
        context.set_item(
            "message",
            "a TaskGroup's exit was closed before its children finished: its errors had \
             nowhere to go",
        )?;
        context.set_item("exception", group)?;
        context.set_item("task_group", slf)?;
        loop_
            .bind(py)
            .call_method1(pyo3::intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    fn cancel_scope_now(slf: &Bound<'_, Self>, reason: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let scope = slf.get().scope.bind(py);
        scope.call_method1(pyo3::intern!(py, "cancel"), (reason,))?;
        Ok(())
    }

    /// Spawns `coro` as a child.
    pub fn spawn<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        options: SpawnOptions<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let SpawnOptions {
            name,
            context,
            starting,
            eager_start,
            task,
        } = options;
        let this = slf.get();
        match this.state.get() {
            GroupState::Active | GroupState::Exiting => {}
            GroupState::Fresh => {
                return Err(runtime_error(
                    "this TaskGroup has not been entered; use `async with TaskGroup() as tg:` \
                     before spawning tasks into it",
                ))
            }
            GroupState::Exited => {
                return Err(runtime_error(
                    "this TaskGroup has exited; no new tasks can be spawned into it",
                ))
            }
        }
        let loop_ = this
            .loop_
            .get_ref(py)
            .ok_or_else(|| runtime_error("task group has no loop"))?
            .into_bound(py);
        // A child of start() runs under the caller's scope until it calls started() (Trio,
        // AnyIO): cancelling this group meanwhile does not reach it, cancelling the caller does.
        // `TaskCore::set_starting(false)` moves it under the group's scope.
        let caller_node = || {
            let tid = current_core(py)?.get().tree_id()?;
            tree().current_node(tid)
        };
        let node = match starting.then(caller_node).flatten() {
            Some(n) => Some(n),
            None => this.scope_node(py),
        };
        let task = match task {
            Some(task) => task,
            None => crate::new_task_object(py, &loop_)?,
        };
        let eager = match eager_start {
            Some(eager) => eager,
            None => crate::loop_wants_eager_tasks(py, &loop_)?,
        };
        let core = TaskCore::attach(
            &task,
            &loop_,
            coro,
            TaskOptions {
                name,
                context,
                group: Some(slf),
                parent_node: node,
                // Started below, once the group counts it.
                start: None,
            },
        );
        let core = match core {
            Ok(c) => c,
            Err(e) => {
                // Do not leave a half-made task pending (it would be reported as destroyed).
                let _ = cached(py).future_cancel.bind(py).call1((&task, py.None()));
                return Err(e);
            }
        };
        core.get().starting.set(starting);
        core.get()
            .group_slot
            .set(Some(this.adopt(task.clone().unbind())));
        // Held by the group from now on: see `gc_untrack` (both re-tracked in TaskCore::finish,
        // or by `release_children` if the group lets go of a task that is still running).
        gc_untrack(core.as_any());
        gc_untrack(&task);
        Self::register(slf);
        this.live.set(this.live.get() + 1);
        this.note_awaited_by(py, &task, true);
        // Counted as a child before its first step: an eager child may finish within it. A
        // first step that cannot be started (call_soon() refused, from another thread in
        // debug mode; an eager step's context already entered) un-counts it again: the
        // spawner gets the error, as with stock, and the group does not wait for it.
        if let Err(e) = TaskCore::start(&core, &loop_, Start::eager_if(eager)) {
            TaskCore::abandon_unstarted(&core);
            return Err(e);
        }
        Ok(task)
    }

    /// 3.14+ `asyncio.graph`: the host task awaits its children, recorded in each child's
    /// `_asyncio_awaited_by` while it runs (`add`) and taken off when it ends, as stock's
    /// TaskGroup does with `future_add_to_awaited_by`. Not for the root group, whose children
    /// are the run's loose tasks. A failure to record is reported, never the spawn's error.
    pub fn note_awaited_by(&self, py: Python<'_>, task: &Bound<'_, PyAny>, add: bool) {
        let c = cached(py);
        let func = if add {
            &c.future_add_to_awaited_by
        } else {
            &c.future_discard_from_awaited_by
        };
        let Some(func) = func else { return };
        if self.is_root.get() {
            return;
        }
        let Some(host) = self.host.get_ref(py).and_then(|h| h.get().task_obj(py)) else {
            return;
        };
        if let Err(e) = func.bind(py).call1((task, host)) {
            e.write_unraisable(py, Some(task));
        }
    }

    /// A child whose first step could not be started (`TaskCore::abandon_unstarted`): no
    /// longer counted, and no failure of the group's (the spawner got the error).
    pub fn child_abandoned(&self, py: Python<'_>, slot: Option<usize>) {
        if let Some(slot) = slot {
            self.release(slot);
        }
        self.live.set(self.live.get().saturating_sub(1));
        self.wake_exit(py);
    }

    fn adopt(&self, task: Py<PyAny>) -> usize {
        let mut children = self.children.take();
        let mut free = self.free_slots.take();
        let slot = match free.pop() {
            Some(i) => {
                children[i] = Some(task);
                i
            }
            None => {
                children.push(Some(task));
                children.len() - 1
            }
        };
        self.children.set(children);
        self.free_slots.set(free);
        slot
    }

    /// Children still running (held in the slab; `live` also counts finished children whose
    /// failure is decided one loop iteration later).
    fn running_children(&self) -> usize {
        let children = self.children.take();
        let n = children.iter().flatten().count();
        self.children.set(children);
        n
    }

    /// The exit's hand-over (structured-exit=loop): the children still running leave the
    /// group's scope and stay its members, back under the cyclic GC: if no later run adopts
    /// them (a loop closed without one), they are collected as stock's pending tasks are.
    fn hand_over_children(&self, py: Python<'_>) {
        let children = self.children.take();
        for task in children.iter().flatten() {
            if let Ok(core) = task.bind(py).getattr(pyo3::intern!(py, "_core")) {
                if let Ok(core) = core.cast::<TaskCore>() {
                    core.get().leave_group_scope();
                }
            }
        }
        retrack_children(py, &children);
        self.children.set(children);
        self.unregister();
        self.handed_over.set(true);
    }

    fn release(&self, slot: usize) {
        let mut children = self.children.take();
        let old = children.get_mut(slot).and_then(Option::take);
        self.children.set(children);
        if old.is_some() {
            self.free_slots.push_index(slot);
        }
        // `old` (a task the caller still holds) is dropped here, after the cells are restored.
        drop(old);
    }

    /// Decides what leaves the group once every child is done. Ok(true): the body's exception
    /// was absorbed (by the group's own cancellation).
    fn finish(slf: &Bound<'_, Self>, body_exc: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let host = this.host.take();
        let host_id = host.as_ref().and_then(|h| h.get().tree_id());
        if let Some(t) = host_id {
            tree().set_delivery_suppressed(t, false);
        }
        this.state.set(GroupState::Exited);
        this.release_kept(py);
        let scope = this.scope.bind(py);
        let c = cached(py);
        let body_exc = body_exc.map(|e| e.into_bound(py));
        // Children that ended cancelled, and a body that was cancelled, count as cancellations
        // reaching the group's scope (also when errors leave the group instead).
        let body_cancelled = match (&body_exc, host_id) {
            (Some(b), Some(tid)) => is_marked_for(b, tid.as_u64()),
            _ => false,
        };
        let absorbed = this.cancelled_children.get() || body_cancelled;
        if let Some(base) = this.base_error.take() {
            let base = base.into_bound(py);
            CancelScope::exit_impl(scope, Some(&base), absorbed)?;
            return Err(PyErr::from_value(base));
        }
        let errors = this.errors.take();
        if !errors.is_empty() {
            // An inner group's error that carries a cancellation carries it on (see exit_impl).
            let carried = host_id.is_some_and(|tid| {
                errors.iter().any(|e| {
                    e.bind(py)
                        .getattr(pyo3::intern!(py, crate::scope::CARRIED_ATTR))
                        .and_then(|v| v.extract::<u64>())
                        .is_ok_and(|m| m == tid.as_u64())
                })
            });
            let absorbed = absorbed || carried;
            let list = PyList::new(py, errors)?;
            let group = c
                .base_exception_group
                .bind(py)
                .call1(("unhandled errors in a TaskGroup", list))?;
            CancelScope::exit_impl(scope, Some(&group), absorbed)?;
            return Err(PyErr::from_value(group));
        }
        if body_exc.is_none() && absorbed {
            // The children were cancelled by a cancellation that also reaches the host: leaving
            // the group is a cancel point (Trio raises the children's Cancelled here).
            let reaching = scope
                .get()
                .node()
                .is_some_and(|n| tree().is_effectively_cancelled(n));
            if let (true, Some(tid)) = (reaching, host_id) {
                let reason = tree().delivery_reason(tid);
                let msg = reason.map(|r| pyo3::types::PyString::new(py, &r).into_any());
                let ce = new_marked_cancelled_error(py, msg.as_ref(), tid.as_u64())?;
                if CancelScope::exit_impl(scope, Some(&ce), false)? {
                    return Ok(false);
                }
                return Err(PyErr::from_value(ce));
            }
        }
        CancelScope::exit_impl(scope, body_exc.as_ref(), absorbed)
    }
}

#[pymethods]
impl TaskGroup {
    #[new]
    fn py_new(py: Python<'_>) -> PyResult<Self> {
        Ok(TaskGroup {
            state: GilCell::new(GroupState::Fresh),
            scope: Py::new(
                py,
                CancelScope::new_inner(f64::INFINITY, f64::INFINITY, false, false),
            )?,
            host: GilCell::new(None),
            loop_: GilCell::new(None),
            live: GilCell::new(0),
            children: GilCell::new(Vec::new()),
            free_slots: GilCell::new(Vec::new()),
            kept: GilCell::new(Vec::new()),
            keep_budget: GilCell::new(0),
            errors: GilCell::new(Vec::new()),
            base_error: GilCell::new(None),
            waiter: GilCell::new(None),
            cancelled_children: GilCell::new(false),
            registered: GilCell::new(0),
            orphan_policy: GilCell::new(OrphanPolicy::Strict),
            is_root: GilCell::new(false),
            hand_over: GilCell::new(false),
            handed_over: GilCell::new(false),
            held: GilCell::new(Vec::new()),
        })
    }

    /// Internal (the root group of a run): which child failures the group acts on, the value
    /// of the root-task-group switch: "on" (every failure), "unretrieved" (only failures not
    /// retrieved when the task is collected), "unretrieved-next-tick" (not retrieved one
    /// loop iteration after the task finished) or "unwaited-at-finish" (nobody waiting for
    /// the task when it finished).
    fn _set_orphan_policy(&self, value: &str) -> PyResult<()> {
        let policy = match value {
            "on" => OrphanPolicy::Strict,
            "unretrieved" => OrphanPolicy::AtCollection,
            "unretrieved-next-tick" => OrphanPolicy::NextTick,
            "unwaited-at-finish" => OrphanPolicy::AtFinish,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "a root group's failure policy is 'on', 'unretrieved', \
                     'unretrieved-next-tick' or 'unwaited-at-finish', got {other:?}"
                )))
            }
        };
        if self.state.get() != GroupState::Fresh {
            return Err(runtime_error(
                "the failure policy is set before the group is entered",
            ));
        }
        self.orphan_policy.set(policy);
        self.is_root.set(true);
        Ok(())
    }

    /// Internal (structured-exit=loop, the root group of a run): when the body returns and no
    /// failure or cancellation reached the group, its exit does not wait for the children still
    /// running: it hands them over (they stay pending, outside any scope) to the root group of
    /// the loop's next run, which adopts them (`_adopt`).
    fn _hand_over_at_exit(&self) -> PyResult<()> {
        if self.state.get() != GroupState::Fresh {
            return Err(runtime_error(
                "the hand-over is set before the group is entered",
            ));
        }
        self.hand_over.set(true);
        Ok(())
    }

    /// Internal (structured-exit=loop): the tasks this group's exit handed over that no run
    /// has adopted yet: those still running and those that failed since (0 if the exit did
    /// not hand any over).
    #[getter]
    fn _leftovers(&self) -> usize {
        if self.handed_over.get() {
            self.live.get() + self.held.len()
        } else {
            0
        }
    }

    /// Internal (structured-exit=loop): adopts what `earlier`, the root group of an earlier run
    /// on the same loop, handed over. Its running tasks become this group's children, under
    /// this group's scope (its cancellation reaches them, their failures are this group's); a
    /// failure one of them had between the runs is decided now, as if it happened in this run.
    fn _adopt(slf: &Bound<'_, Self>, earlier: &Bound<'_, TaskGroup>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let other = earlier.get();
        if slf.is(earlier) || !other.handed_over.get() {
            return Err(runtime_error(
                "only the tasks a group handed over at its exit can be adopted",
            ));
        }
        if !matches!(this.state.get(), GroupState::Active | GroupState::Exiting) {
            return Err(runtime_error(
                "a task group adopts tasks only while it is active",
            ));
        }
        let children = other.children.take();
        other.free_slots.take();
        let held = other.held.take();
        let node = this.scope_node(py);
        for task in children.into_iter().flatten() {
            other.live.set(other.live.get().saturating_sub(1));
            let bound = task.bind(py).clone();
            let core = match bound
                .getattr(pyo3::intern!(py, "_core"))
                .and_then(|c| c.cast_into::<TaskCore>().map_err(PyErr::from))
            {
                Ok(core) => core,
                Err(e) => {
                    // Not an asyncbis task's core (cannot happen: the group spawned it): it
                    // runs on ungrouped, as stock's tasks do.
                    e.write_unraisable(py, Some(&bound));
                    continue;
                }
            };
            let slot = this.adopt(task);
            this.live.set(this.live.get() + 1);
            // Held by this group from now on: see `gc_untrack` and `spawn`.
            gc_untrack(core.as_any());
            gc_untrack(&bound);
            Self::register(slf);
            core.get().join_group(py, slf, slot, node);
        }
        for task in held {
            let task = task.into_bound(py);
            this.live.set(this.live.get() + 1);
            if Self::child_done(slf, &task, false, None, false, false) {
                if let Ok(core) = task.getattr(pyo3::intern!(py, "_core")) {
                    if let Ok(core) = core.cast::<TaskCore>() {
                        core.get().watch_collection(slf.clone().unbind());
                    }
                }
            }
        }
        Ok(())
    }

    /// Internal (`OrphanPolicy::NextTick`): the loop iteration after `task` failed, its
    /// failure is the group's if nobody retrieved it; then the child stops counting as live.
    fn _check_orphan(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) {
        let py = slf.py();
        if let Err(e) = Self::take_orphan(slf, task, false) {
            e.write_unraisable(py, Some(task));
        }
        let this = slf.get();
        this.live.set(this.live.get().saturating_sub(1));
        this.wake_exit(py);
    }

    /// The scope that all of this group's tasks (and its body) run in.
    #[getter]
    fn cancel_scope(&self, py: Python<'_>) -> Py<CancelScope> {
        self.scope.clone_ref(py)
    }

    /// Whether `create_task()` would accept a task now (entered and not yet exited).
    #[getter]
    fn accepts_tasks(&self) -> bool {
        matches!(self.state.get(), GroupState::Active | GroupState::Exiting)
    }

    /// Number of children still running.
    #[getter]
    fn live_tasks(&self) -> usize {
        self.live.get()
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.state.get() != GroupState::Fresh {
            return Err(runtime_error(
                "this TaskGroup has already been entered; create a new TaskGroup",
            ));
        }
        let core = current_core(py).ok_or_else(|| {
            runtime_error(
                "TaskGroup must be entered inside an asyncbis task: run the code with \
                 asyncbis.run() (or call asyncbis.patch_asyncio() before asyncio.run())",
            )
        })?;
        CancelScope::enter_impl(this.scope.bind(py))?;
        let loop_ = core
            .get()
            .loop_obj(py)
            .ok_or_else(|| runtime_error("the current task has no event loop"))?
            .into_bound(py);
        this.loop_.set(Some(loop_.clone().unbind()));
        this.host.set(Some(core));
        this.state.set(GroupState::Active);
        // Entering is synchronous; `await` on the result returns the group without yielding.
        Ok(
            crate::timeout::Ready::new(py, Some(slf.clone().into_any().unbind()))?
                .into_bound(py)
                .into_any(),
        )
    }

    #[pyo3(signature = (_exc_type = None, exc = None, _tb = None))]
    fn __aexit__(
        slf: &Bound<'_, Self>,
        _exc_type: Option<Bound<'_, PyAny>>,
        exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<GroupExit>> {
        let py = slf.py();
        if slf.get().state.get() != GroupState::Active {
            return Err(runtime_error("this TaskGroup is not active"));
        }
        Py::new(
            py,
            GroupExit {
                group: slf.clone().unbind(),
                body_exc: GilCell::new(exc.filter(|e| !e.is_none()).map(|e| e.unbind())),
                phase: GilCell::new(0),
                yielded: GilCell::new(false),
            },
        )
    }

    /// Spawns a child task running `coro`. Allowed while the group is cancelled (the task runs
    /// to its first yield point, then is cancelled); refused before entry and after exit.
    /// `eager_start` (3.12+): run the first step now; None: as the loop's task factory says
    /// (eager with an eager task factory, as stock's `loop.create_task()` would do).
    #[pyo3(signature = (coro, *, name = None, context = None, eager_start = None))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
        eager_start: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Err(e) = crate::util::cached(slf.py())
            .iscoroutine
            .bind(slf.py())
            .call1((&coro,))
            .and_then(|r| r.is_truthy())
            .and_then(|ok| {
                if ok {
                    Ok(())
                } else {
                    Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "TaskGroup.create_task() needs a coroutine, got {}",
                        coro.repr()?
                    )))
                }
            })
        {
            // Close a coroutine we will never run, so Python does not warn it was never awaited.
            let _ = coro.call_method0(pyo3::intern!(slf.py(), "close"));
            return Err(e);
        }
        let options = SpawnOptions {
            name,
            context,
            eager_start,
            ..SpawnOptions::default()
        };
        match Self::spawn(slf, &coro, options) {
            Ok(t) => Ok(t),
            Err(e) => {
                let _ = coro.call_method0(pyo3::intern!(slf.py(), "close"));
                Err(e)
            }
        }
    }

    /// Internal: spawn a child for `start()`; failures before `started()` go to the starter.
    #[pyo3(signature = (coro, name = None))]
    fn _spawn_starting<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = SpawnOptions {
            name,
            starting: true,
            ..SpawnOptions::default()
        };
        Self::spawn(slf, &coro, options)
    }

    /// Cancels the group: its body and every child, including children spawned later.
    #[pyo3(signature = (reason = None))]
    fn cancel(slf: &Bound<'_, Self>, reason: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        Self::cancel_scope_now(slf, reason)
    }

    fn __repr__(&self) -> String {
        let state = match self.state.get() {
            GroupState::Fresh => "unentered",
            GroupState::Active => "active",
            GroupState::Exiting => "exiting",
            GroupState::Exited => "exited",
        };
        let mut s = format!("<TaskGroup {state} tasks={}", self.live.get());
        if self.errors.len() > 0 {
            s.push_str(&format!(" errors={}", self.errors.len()));
        }
        s.push('>');
        s
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.scope)?;
        self.host.visit(&visit)?;
        self.loop_.visit(&visit)?;
        self.errors.visit(&visit)?;
        self.base_error.visit(&visit)?;
        self.waiter.visit(&visit)?;
        self.held.visit(&visit)?;
        self.kept.visit(&visit)?;
        let children = self.children.take();
        let mut r = Ok(());
        for c in children.iter().flatten() {
            r = visit.call(c);
            if r.is_err() {
                break;
            }
        }
        self.children.set(children);
        r
    }

    fn __clear__(&self) {
        self.host.set(None);
        self.errors.take();
        self.base_error.set(None);
        self.waiter.set(None);
        self.held.take();
        self.free_slots.take();
        self.unregister();
        release_children(self.children.take());
        release_children(self.kept.take().into_iter().map(Some).collect());
    }
}

impl TaskGroup {
    /// Enters the group in `UNTRACKED_GROUPS` (it holds children whose cores are untracked).
    fn register(slf: &Bound<'_, Self>) {
        let this = slf.get();
        if this.registered.get() == 0 {
            let key = slf.as_ptr() as usize;
            this.registered.set(key);
            untracked_groups()
                .get_or_insert_with(HashSet::new)
                .insert(key);
        }
    }

    fn unregister(&self) {
        let key = self.registered.replace(0);
        if key != 0 {
            if let Some(set) = untracked_groups().as_mut() {
                set.remove(&key);
            }
        }
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        self.unregister();
        let children = self.children.take();
        if children.iter().any(Option::is_some) {
            release_children(children);
        }
        let kept = self.kept.take();
        if !kept.is_empty() {
            release_children(kept.into_iter().map(Some).collect());
        }
    }
}

/// Whether `task` finished with an exception (not KeyboardInterrupt/SystemExit: those always
/// act at once) that nobody has retrieved yet. Any other BaseException is an ordinary failure,
/// as stock's task stores it (only the two exit requests leave the loop). Reads the Future's
/// private state, which does not mark the exception retrieved as `exception()` would.
fn unretrieved_failure(task: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = task.py();
    if !task
        .getattr(pyo3::intern!(py, "_log_traceback"))?
        .is_truthy()?
    {
        return Ok(false);
    }
    let exc = task.getattr(pyo3::intern!(py, "_exception"))?;
    Ok(!exc.is_none() && !is_exit_request(&exc)?)
}

/// Whether a child that finished after its group handed it over (structured-exit=loop) has a
/// failure for the adopting group to decide: an exception (not a cancellation) of a child that
/// is not a `start()` child before `started()` (that one's failure is its starter's), unless
/// the group decides at finish and somebody was waiting for the child (`unwaited-at-finish`).
fn held_failure(
    task: &Bound<'_, PyAny>,
    starting: bool,
    policy: OrphanPolicy,
    waited: bool,
) -> PyResult<bool> {
    if starting || (policy == OrphanPolicy::AtFinish && waited) {
        return Ok(false);
    }
    // The private state: exception() would mark it retrieved.
    Ok(!task
        .getattr(pyo3::intern!(task.py(), "_exception"))?
        .is_none())
}

fn retrack_children(py: Python<'_>, children: &[Option<Py<PyAny>>]) {
    retrack_tasks(py, children.iter().flatten());
}

/// Puts tasks and their cores back under the GC (see `gc_untrack`).
fn retrack_tasks<'a>(py: Python<'_>, tasks: impl Iterator<Item = &'a Py<PyAny>>) {
    for task in tasks {
        let task = task.bind(py);
        gc_retrack(task);
        if let Ok(core) = task.getattr(pyo3::intern!(py, "_core")) {
            gc_retrack(&core);
        }
    }
}

/// Lets go of tasks still running (their group is being cleared by the GC, or freed): their
/// cores go back under the GC first, so a cycle through such a task can still be collected.
fn release_children(children: Vec<Option<Py<PyAny>>>) {
    if children.iter().all(Option::is_none) {
        return;
    }
    // Called from Drop: see `with_exception_set_aside`.
    Python::attach(|py| {
        with_exception_set_aside(py, || {
            retrack_children(py, &children);
            drop(children);
        })
    });
}

/// The awaitable returned by `TaskGroup.__aexit__`: waits for the children without taking
/// cancellation (Trio's nursery does the same), then decides what leaves the group.
#[pyclass(module = "asyncbis._core", frozen)]
pub struct GroupExit {
    group: Py<TaskGroup>,
    body_exc: GilCell<Option<Py<PyAny>>>,
    /// 0: not started, 1: waiting, 2: done, 3: closed.
    phase: GilCell<u8>,
    yielded: GilCell<bool>,
}

impl GroupExit {
    fn begin(&self, py: Python<'_>) -> PyResult<()> {
        let group = self.group.bind(py);
        let g = group.get();
        g.state.set(GroupState::Exiting);
        if let Some(host) = g.host.get_ref(py) {
            if let Some(t) = host.get().tree_id() {
                tree().set_delivery_suppressed(t, true);
            }
        }
        if let Some(exc) = self.body_exc.get_ref(py) {
            let exc = exc.bind(py);
            let c = cached(py);
            if !exc.is_instance(c.cancelled_error.bind(py))? {
                // The body failed: cancel the children; the error joins the group's (as in
                // asyncio.TaskGroup, Trio and AnyIO, even with no failing child).
                g.record_error(exc.clone())?;
                self.body_exc.set(None);
                TaskGroup::cancel_scope_now(group, None)?;
            }
        }
        self.phase.set(1);
        Ok(())
    }

    /// structured-exit=loop: whether this exit hands the running children over instead of
    /// waiting for them: the body returned, and no failure and no cancellation reached the group.
    fn hands_over(&self, py: Python<'_>) -> bool {
        let g = self.group.bind(py).get();
        g.hand_over.get()
            && !self.body_exc.is_some()
            && g.errors.len() == 0
            && !g.base_error.is_some()
            && !g
                .scope_node(py)
                .is_some_and(|n| tree().is_effectively_cancelled(n))
    }

    fn poll(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let group = self.group.bind(py);
        let g = group.get();
        if self.hands_over(py) {
            // The exit is a schedule point as always (a child failing meanwhile makes it an
            // ordinary exit); finished children whose failure is decided one iteration later
            // (root-task-group=unretrieved-next-tick) are waited for, an iteration at a time.
            if !self.yielded.replace(true) || g.live.get() > g.running_children() {
                return Ok(Some(py.None()));
            }
            g.hand_over_children(py);
            self.phase.set(2);
            TaskGroup::finish(group, None)?;
            return Err(PyStopIteration::new_err((false,)));
        }
        if g.live.get() > 0 {
            let loop_ = g
                .loop_
                .get_ref(py)
                .ok_or_else(|| runtime_error("task group has no loop"))?;
            let waiter = loop_
                .bind(py)
                .call_method0(pyo3::intern!(py, "create_future"))?;
            waiter.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
            g.waiter.set(Some(waiter.clone().unbind()));
            self.yielded.set(true);
            return Ok(Some(waiter.unbind()));
        }
        if !self.yielded.replace(true) {
            // Exiting an empty group is a schedule point (never a cancel point).
            return Ok(Some(py.None()));
        }
        self.phase.set(2);
        let body = self.body_exc.take();
        let body_is_some = body.is_some();
        let caught = TaskGroup::finish(group, body)?;
        // __aexit__'s return value: True absorbs the body's exception.
        Err(PyStopIteration::new_err((caught && body_is_some,)))
    }
}

#[pymethods]
impl GroupExit {
    /// The frame awaiting a GroupExit holds it: its reference to the group is part of an
    /// abandoned host's cycle (frame -> GroupExit -> group -> host core -> coroutine -> frame),
    /// which the collector could not see without this (never collected on 3.15, where a
    /// coroutine whose `async with` exit ignored GeneratorExit keeps its frame).
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.group)?;
        self.body_exc.visit(&visit)
    }

    fn __clear__(&self) {
        self.body_exc.set(None);
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.phase.get() {
            0 => {
                self.begin(py)?;
                self.poll(py)
            }
            1 => self.poll(py),
            3 => Err(runtime_error(
                "this TaskGroup exit was closed; it cannot be awaited any more",
            )),
            _ => Ok(None),
        }
    }
    #[pyo3(signature = (_value = None))]
    fn send(
        &self,
        py: Python<'_>,
        _value: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        self.__next__(py)
    }
    #[pyo3(signature = (typ, val = None, _tb = None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let exc = crate::util::thrown(typ, val)
            .into_value(py)
            .into_bound(py)
            .into_any();
        if self.phase.get() != 1 {
            return Err(PyErr::from_value(exc));
        }
        let group = self.group.bind(py);
        let c = cached(py);
        if exc.is_instance(c.cancelled_error.bind(py))? {
            // The host was cancelled while waiting (stock edge cancel): cancel the children,
            // keep waiting, and let the cancellation leave once they are done.
            if self.body_exc.get_ref(py).is_none() {
                self.body_exc.set(Some(exc.unbind()));
            }
            TaskGroup::cancel_scope_now(group, None)?;
        } else {
            group.get().record_error(exc)?;
            TaskGroup::cancel_scope_now(group, None)?;
        }
        self.poll(py)
    }
    /// As a coroutine's close(): this exit will not be resumed. While it waits for children,
    /// the group is abandoned (see `TaskGroup::abandon`) rather than left exiting; an exit
    /// never started leaves the group as it was (active: it can still be exited), and a
    /// finished one is done already.
    fn close(&self, py: Python<'_>) {
        match self.phase.get() {
            0 => self.phase.set(3),
            1 => {
                self.phase.set(3);
                self.body_exc.set(None);
                TaskGroup::abandon(self.group.bind(py));
            }
            _ => {}
        }
    }
}
