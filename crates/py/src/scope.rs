//! `CancelScope` (Trio/AnyIO semantics), deadlines, checkpoints.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use asyncbis_scopes::NodeId;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::task::{current_core, wake_all, TaskCore};
use crate::util::{cached, is_marked_for, runtime_error, tree, with_exception_set_aside, GilCell};

/// Marks an exception leaving a scope that a cancellation also reached without being caught
/// there (see `exit_impl`).
pub const CARRIED_ATTR: &str = "_asyncbis_carries_cancel";

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum ScopeState {
    #[default]
    Fresh,
    Active,
    Exited,
}

#[pyclass(module = "asyncbis._core", frozen, subclass)]
pub struct CancelScope {
    state: GilCell<ScopeState>,
    node: GilCell<Option<NodeId>>,
    host: GilCell<Option<Py<TaskCore>>>,
    loop_: GilCell<Option<Py<PyAny>>>,
    timer: GilCell<Option<Py<PyAny>>>,
    /// The enclosing scope whose deadline timer stands in for this scope's own (see
    /// `find_cover`); this scope then has no timer of its own.
    cover: GilCell<Option<Py<CancelScope>>>,
    /// The scopes whose timers this scope's timer stands in for (only a scope with a timer of
    /// its own has any): re-armed when this one's timer goes (fired, cancelled, moved, exited).
    covered: GilCell<Vec<Py<CancelScope>>>,
    reason: GilCell<Option<Py<PyAny>>>,
    deadline: GilCell<f64>,
    relative_deadline: GilCell<f64>,
    shield: GilCell<bool>,
    cancel_called: GilCell<bool>,
    cancelled_caught: GilCell<bool>,
    deadline_expired: GilCell<bool>,
    /// fail_after/fail_at: raise TimeoutError when the own deadline expired.
    fail_on_deadline: GilCell<bool>,
    thread: GilCell<Option<std::thread::ThreadId>>,
    /// The generator frame whose `with` entered this scope, when it is one (see
    /// `generator_frame`): such a scope may be left open across a `yield` and closed late, in
    /// any order or task, when the generator is finalized.
    gen_frame: GilCell<Option<Py<PyAny>>>,
}

pub fn check_deadline(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if value.is_none() {
        return Ok(f64::INFINITY);
    }
    let v: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a number (float or int) or None, got {}",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    if v.is_nan() {
        return Err(PyValueError::new_err(format!("{what} must not be NaN")));
    }
    Ok(v)
}

fn loop_time(py: Python<'_>, loop_: &Py<PyAny>) -> PyResult<f64> {
    loop_now(loop_.bind(py))
}

/// `loop.time()`. For loops that keep asyncio's own clock (`BaseEventLoop.time`, which is
/// `time.monotonic()`), the clock is read directly, saving a Python frame per deadline.
pub fn loop_now(loop_: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = loop_.py();
    let c = cached(py);
    let time_fn = loop_.get_type().getattr(pyo3::intern!(py, "time"))?;
    if time_fn.is(c.base_loop_time.bind(py)) {
        return c.monotonic.bind(py).call0()?.extract();
    }
    loop_.call_method0(pyo3::intern!(py, "time"))?.extract()
}

impl CancelScope {
    pub fn new_inner(deadline: f64, relative: f64, shield: bool, fail: bool) -> Self {
        CancelScope {
            state: GilCell::new(ScopeState::Fresh),
            node: GilCell::new(None),
            host: GilCell::new(None),
            loop_: GilCell::new(None),
            timer: GilCell::new(None),
            cover: GilCell::new(None),
            covered: GilCell::new(Vec::new()),
            reason: GilCell::new(None),
            deadline: GilCell::new(deadline),
            relative_deadline: GilCell::new(relative),
            shield: GilCell::new(shield),
            cancel_called: GilCell::new(false),
            cancelled_caught: GilCell::new(false),
            deadline_expired: GilCell::new(false),
            fail_on_deadline: GilCell::new(fail),
            thread: GilCell::new(None),
            gen_frame: GilCell::new(None),
        }
    }

    pub fn node(&self) -> Option<NodeId> {
        self.node.get()
    }

    pub fn shield_value(&self) -> bool {
        self.shield.get()
    }

    pub fn deadline_value(&self) -> f64 {
        self.deadline.get()
    }

    pub fn is_active(&self) -> bool {
        self.state.get() == ScopeState::Active
    }

    pub fn was_entered(&self) -> bool {
        self.state.get() != ScopeState::Fresh
    }

    pub fn deadline_expired_value(&self) -> bool {
        self.deadline_expired.get()
    }

    fn check_thread(&self, what: &str) -> PyResult<()> {
        if let Some(t) = self.thread.get() {
            if t != std::thread::current().id() {
                return Err(runtime_error(format!(
                    "CancelScope.{what} was called from a thread other than its event loop's; \
                     use loop.call_soon_threadsafe() to call it on the loop's thread"
                )));
            }
        }
        Ok(())
    }

    /// Ends an active scope whose exit will never run (the coroutine inside it was closed),
    /// from whatever task this runs in: disarms its deadline and takes its node out of the
    /// tree. Raises nothing; the scope is exited afterwards.
    pub fn abandon(&self, py: Python<'_>) {
        if self.state.get() != ScopeState::Active {
            return;
        }
        if let Some(node) = self.node.take() {
            // Fails only if the host task is gone (its whole stack was closed with it) or has
            // scopes open inside this one (they close with the host).
            let _ = tree().close(node);
        }
        let dependents = self.disarm(py);
        self.state.set(ScopeState::Exited);
        self.host.set(None);
        self.thread.set(None);
        let _ = release_covered(py, dependents, f64::NEG_INFINITY);
    }

    /// Cancels this scope's deadline timer, or leaves the scope that stood in for it, and
    /// returns the scopes this one's timer stood in for: the caller re-arms them
    /// (`release_covered`) once this scope's state is updated.
    fn disarm(&self, py: Python<'_>) -> Vec<Py<CancelScope>> {
        if let Some(h) = self.timer.take() {
            let _ = h.bind(py).call_method0(pyo3::intern!(py, "cancel"));
        }
        let me: *const CancelScope = self;
        if let Some(cover) = self.cover.take() {
            let mut list = cover.get().covered.take();
            // Scopes leave in reverse order of entry as a rule: search from the end.
            if let Some(i) = list.iter().rposition(|c| std::ptr::eq(c.get(), me)) {
                list.remove(i);
            }
            cover.get().covered.set(list);
        }
        if LAST_ARMED.with_ref(|l| l.is_some_and(|l| std::ptr::eq(l.get(), me))) {
            LAST_ARMED.set(None);
        }
        self.covered.take()
    }

    /// Arms (or re-arms) the deadline timer of an active scope; cancels at once if it passed.
    fn rearm(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::rearm_with(slf, None, f64::NEG_INFINITY)
    }

    /// `rearm`, with the loop time when the caller has just read it, and a time up to which
    /// the deadline counts as passed even if the clock is a hair behind it (the deadline of the
    /// timer that fired and stood in for this scope's: stock asyncio runs every timer due by
    /// then in the same loop iteration).
    fn rearm_with(slf: &Bound<'_, Self>, now: Option<f64>, expired_by: f64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let dependents = this.disarm(py);
        let armed = Self::arm(slf, now, expired_by);
        let released = release_covered(py, dependents, f64::NEG_INFINITY);
        armed.and(released)
    }

    fn arm(slf: &Bound<'_, Self>, now: Option<f64>, expired_by: f64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.state.get() != ScopeState::Active || this.cancel_called.get() {
            return Ok(());
        }
        let deadline = this.deadline.get();
        if let Some(node) = this.node.get() {
            tree().set_deadline(node, deadline);
        }
        if deadline.is_infinite() && deadline > 0.0 {
            return Ok(());
        }
        let Some(loop_) = this.loop_.get_ref(py) else {
            return Ok(());
        };
        let now = match now {
            Some(now) => now,
            None => loop_time(py, &loop_)?,
        };
        if deadline <= now.max(expired_by) {
            this.deadline_expired.set(true);
            return Self::do_cancel(slf, None);
        }
        if let Some(cover) = Self::find_cover(slf) {
            cover.get().covered.push(slf.clone().unbind());
            this.cover.set(Some(cover));
        } else {
            let cb = slf.getattr(pyo3::intern!(py, "_deadline_reached"))?;
            let handle = loop_
                .bind(py)
                .call_method1(pyo3::intern!(py, "call_at"), (deadline, cb))?;
            this.timer.set(Some(handle.unbind()));
        }
        LAST_ARMED.set(Some(slf.clone().unbind()));
        Ok(())
    }

    /// A scope whose deadline timer can stand in for this one's: the scope armed last (or the
    /// one standing in for it), if it is active, not cancelled, in the same task (so on the
    /// same loop and thread) and its deadline comes no later. Nested timeouts are the common
    /// case: the inner one then costs no loop timer. Standing in only moves *when* this
    /// scope's deadline is checked: the cover re-arms it (`release_covered`) when its own timer
    /// fires, is cancelled or moved, or the cover exits, all no later than its deadline, so
    /// this scope's deadline fires at the same loop time as with a timer of its own.
    fn find_cover(slf: &Bound<'_, Self>) -> Option<Py<CancelScope>> {
        let py = slf.py();
        let last = LAST_ARMED.with_ref(|l| l.map(|l| l.clone_ref(py)))?;
        let cover = if last.get().timer.is_some() {
            last
        } else {
            last.get().cover.get_ref(py)?
        };
        let c = cover.get();
        let this = slf.get();
        let usable = !std::ptr::eq(c, this)
            && c.state.get() == ScopeState::Active
            && !c.cancel_called.get()
            && c.timer.is_some()
            && c.deadline.get() <= this.deadline.get()
            && c.host.with_ref(|h| {
                this.host
                    .with_ref(|m| matches!((h, m), (Some(h), Some(m)) if h.is(m)))
            });
        usable.then_some(cover)
    }

    fn do_cancel(slf: &Bound<'_, Self>, reason: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.reason.get_ref(py).is_none() {
            if let Some(r) = &reason {
                if !r.is_none() {
                    this.reason.set(Some(r.clone().unbind()));
                }
            }
        }
        if this.cancel_called.get() {
            return Ok(());
        }
        this.cancel_called.set(true);
        let dependents = this.disarm(py);
        if let Some(node) = this.node.get() {
            let reason_obj = this.reason.get_ref(py);
            let reason_str = match &reason_obj {
                Some(r) => Some(r.bind(py).str()?.to_string()),
                None => None,
            };
            let wakes = tree().cancel_with_reason(node, reason_str);
            let msg = reason_obj.map(|r| r.into_bound(py));
            wake_all(py, wakes, msg.as_ref());
        }
        // The scopes this one's timer stood in for keep their deadlines: when this one passed
        // (this is its timer firing), those due by then pass with it, as their own timers
        // would have fired in the same loop iteration.
        let expired_by = if this.deadline_expired.get() {
            this.deadline.get()
        } else {
            f64::NEG_INFINITY
        };
        release_covered(py, dependents, expired_by)
    }

    /// Enters the scope in the current task (used by `__enter__` and task groups).
    pub fn enter_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match this.state.get() {
            ScopeState::Fresh => {}
            ScopeState::Active => {
                return Err(runtime_error(
                    "this cancel scope is already active; a CancelScope can be entered only once",
                ))
            }
            ScopeState::Exited => {
                return Err(runtime_error(
                    "this cancel scope has already been used; create a new CancelScope",
                ))
            }
        }
        let core = current_core(py).ok_or_else(|| {
            runtime_error(
                "CancelScope must be entered inside an asyncbis task: run the code with \
                 asyncbis.run() (or call asyncbis.patch_asyncio() before asyncio.run())",
            )
        })?;
        let core_ref = core.get();
        let tid = core_ref
            .tree_id()
            .ok_or_else(|| runtime_error("the current task has already finished"))?;
        let loop_ = core_ref
            .loop_obj(py)
            .ok_or_else(|| runtime_error("the current task has no event loop"))?;
        let rel = this.relative_deadline.get();
        // Only a scope with a deadline needs the clock (bare scopes are the common case).
        let now = if rel != f64::INFINITY || this.deadline.get() != f64::INFINITY {
            Some(loop_time(py, &loop_)?)
        } else {
            None
        };
        if let Some(now) = now {
            if rel != f64::INFINITY {
                this.deadline.set(this.deadline.get().min(now + rel));
            }
            if this.deadline.get() <= now {
                this.cancel_called.set(true);
                this.deadline_expired.set(true);
            }
        }
        let deadline = this.deadline.get();
        let reason = match this.reason.get_ref(py) {
            Some(r) => Some(r.bind(py).str()?.to_string()),
            None => None,
        };
        let node = {
            let mut t = tree();
            let node = t.open_scope(tid, this.shield.get(), this.cancel_called.get(), deadline);
            if let (Ok(n), Some(_)) = (&node, &reason) {
                if this.cancel_called.get() {
                    t.cancel_with_reason(*n, reason);
                }
            }
            node
        }
        .map_err(|e| runtime_error(e.to_string()))?;
        this.node.set(Some(node));
        if let Some(frame) = generator_frame(py) {
            gen_scopes()
                .get_or_insert_with(HashMap::new)
                .insert(node, frame.as_ptr() as usize);
            this.gen_frame.set(Some(frame.unbind()));
        }
        this.host.set(Some(core));
        this.loop_.set(Some(loop_));
        this.thread.set(Some(std::thread::current().id()));
        this.state.set(ScopeState::Active);
        Self::rearm_with(slf, now, f64::NEG_INFINITY)
    }

    /// Leaves the Active state without touching the tree (the node is gone or spliced out).
    fn finish_exit(&self, py: Python<'_>) {
        let dependents = self.disarm(py);
        self.state.set(ScopeState::Exited);
        if let Some(node) = self.node.take() {
            forget_gen_scope(node);
        }
        self.gen_frame.set(None);
        self.thread.set(None);
        self.host.set(None);
        // Only scopes left open below this one (misnested, a generator's) are still covered.
        let _ = release_covered(py, dependents, f64::NEG_INFINITY);
    }

    /// Exits a scope that cannot be closed in order: one left open across a `yield` by a
    /// generator (closed late, maybe in another task), or one whose node is already gone (its
    /// task finished, or a misnested exit abandoned it). Nothing is raised or caught.
    fn exit_out_of_order(&self, py: Python<'_>) -> PyResult<bool> {
        if let Some(node) = self.node.get() {
            let wakes = {
                let mut t = tree();
                if t.node_alive(node) {
                    t.splice_out(node)
                        .map_err(|e| runtime_error(e.to_string()))?
                } else {
                    Vec::new()
                }
            };
            wake_all(py, wakes, None);
        }
        self.finish_exit(py);
        Ok(false)
    }

    /// Exits the scope with the exception leaving it. Ok(true) when the scope absorbed it.
    /// `absorbed`: a cancellation already ended inside (a task group's cancelled children); if
    /// this scope is the one that catches, it counts as caught.
    pub fn exit_impl(
        slf: &Bound<'_, Self>,
        exc: Option<&Bound<'_, PyAny>>,
        absorbed: bool,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if this.state.get() != ScopeState::Active {
            return Err(runtime_error(
                "this cancel scope is not active (exited twice, or never entered)",
            ));
        }
        let host = this.host.get_ref(py).expect("active scope has a host");
        let node = this.node.get().expect("active scope has a node");
        let in_generator = this.gen_frame.get_ref(py).is_some();
        let above = {
            let t = tree();
            t.node_alive(node).then(|| t.nodes_above(node))
        };
        // Its node is gone: the task finished while the scope was open (an abandoned coroutine,
        // a generator finalized after its consumer), or a misnested exit abandoned it.
        let Some(above) = above else {
            return this.exit_out_of_order(py);
        };
        let current = current_core(py);
        if !current.as_ref().is_some_and(|c| c.is(&host)) {
            if in_generator {
                // A generator suspended inside this scope is finalized by another task (the
                // loop's asyncgen finalizer runs aclose() in a task of its own).
                return this.exit_out_of_order(py);
            }
            return Err(runtime_error(
                "a cancel scope must be exited in the task that entered it",
            ));
        }
        let above = above.unwrap_or_default();
        let mut misnested = None;
        // A generator's scope exited (in its task) after its consumer opened scopes that are
        // still active: it is taken out from below them instead of closed, and otherwise exits
        // as usual (it catches its own cancellation).
        let splice_late = in_generator && !above.is_empty();
        if !above.is_empty() && !splice_late {
            // Scopes left open above this one by suspended generator frames are spliced out
            // silently; any other is a misnesting: Trio's recovery (close this scope, abandon
            // the inner ones, raise one error; the abandoned scopes' exits do nothing).
            let suspended = suspended_generator_scopes(py, &above);
            let abandoned = above.len() - suspended;
            let wakes = {
                let mut t = tree();
                let mut wakes = Vec::new();
                for n in &above {
                    wakes.extend(t.splice_out(*n).map_err(|e| runtime_error(e.to_string()))?);
                }
                wakes
            };
            for n in &above {
                forget_gen_scope(*n);
            }
            wake_all(py, wakes, None);
            if abandoned > 0 {
                misnested = Some(abandoned);
            }
        }
        let (catches, wakes) = {
            let mut t = tree();
            let catches = t.catches(node);
            if splice_late {
                t.splice_out(node).map(|w| (catches, w))
            } else {
                t.close(node).map(|_| (catches, Vec::new()))
            }
        }
        .map_err(|e| runtime_error(e.to_string()))?;
        wake_all(py, wakes, None);
        let mark = host.get().mark();
        let scope_repr = match misnested {
            Some(_) => slf.repr()?.to_string(),
            None => String::new(),
        };
        this.finish_exit(py);
        let exc = exc.filter(|e| !e.is_none());
        if let Some(abandoned) = misnested {
            let err = runtime_error(format!(
                "cancel scope stack corrupted: {} was exited while {abandoned} cancel scope(s) or \
                 task group(s) entered after it in the same task were still active; cancel \
                 scopes must be exited in the reverse order they were entered. The inner scopes \
                 were abandoned (their own exits now do nothing). Typical causes: calling \
                 __enter__/__exit__ by hand, or a generator that yields inside a scope and is \
                 resumed by another task",
                scope_repr
            ));
            if let Some(e) = exc {
                err.value(py).setattr(pyo3::intern!(py, "__context__"), e)?;
            }
            return Err(err);
        }
        // An error group from an inner task group whose children were cancelled carries that
        // cancellation outward (Trio's groups hold the Cancelled leaves; ours do not).
        let carried = exc.is_some_and(|e| {
            e.getattr(pyo3::intern!(py, CARRIED_ATTR))
                .and_then(|v| v.extract::<u64>())
                .is_ok_and(|m| m == mark)
        });
        if absorbed || carried {
            if catches {
                this.cancelled_caught.set(true);
            } else if let Some(e) = exc {
                // Not ours to catch: an outer scope is the one; pass the mark along.
                let _ = e.setattr(pyo3::intern!(py, CARRIED_ATTR), mark);
            }
        }
        let Some(exc) = exc else {
            return Ok(false);
        };
        if !catches {
            return Ok(false);
        }
        let caught = if is_marked_for(exc, mark) {
            true
        } else if exc.is_instance(cached(py).base_exception_group.bind(py))? {
            // A group made only of our cancellations is absorbed as a whole.
            let all_ours = exc
                .getattr(pyo3::intern!(py, "exceptions"))?
                .try_iter()?
                .all(|e| e.map(|e| is_marked_for(&e, mark)).unwrap_or(false));
            all_ours
        } else {
            false
        };
        if caught {
            this.cancelled_caught.set(true);
            if this.fail_on_deadline.get() && this.deadline_expired.get() {
                // Bare, like stock asyncio.timeout's and Trio's (code compares it).
                let te = cached(py).timeout_error.bind(py).call0()?;
                // `raise TimeoutError from exc`, as stock asyncio.timeout does (PyO3 raises
                // without the interpreter's implicit chaining, so set both links).
                te.setattr(pyo3::intern!(py, "__cause__"), exc)?;
                te.setattr(pyo3::intern!(py, "__context__"), exc)?;
                return Err(PyErr::from_value(te));
            }
        }
        Ok(caught)
    }
}

#[pymethods]
impl CancelScope {
    #[new]
    #[pyo3(signature = (*, deadline = None, shield = false, relative_deadline = None))]
    fn py_new(
        deadline: Option<Bound<'_, PyAny>>,
        shield: bool,
        relative_deadline: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let d = match &deadline {
            Some(d) => check_deadline(d, "deadline")?,
            None => f64::INFINITY,
        };
        let r = match &relative_deadline {
            Some(r) => check_deadline(r, "relative_deadline")?,
            None => f64::INFINITY,
        };
        Ok(Self::new_inner(d, r, shield, false))
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        Self::enter_impl(slf)?;
        Ok(slf.clone())
    }

    #[pyo3(signature = (_exc_type = None, exc = None, _tb = None))]
    fn __exit__(
        slf: &Bound<'_, Self>,
        _exc_type: Option<Bound<'_, PyAny>>,
        exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        Self::exit_impl(slf, exc.as_ref(), false)
    }

    /// Cancels the scope (idempotent; the first reason given is kept).
    #[pyo3(signature = (reason = None))]
    fn cancel(slf: &Bound<'_, Self>, reason: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let this = slf.get();
        this.check_thread("cancel()")?;
        if let Some(r) = &reason {
            if !r.is_none() && !r.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "the cancel reason must be a str or None, got {}",
                    r.get_type().name()?
                )));
            }
        }
        Self::do_cancel(slf, reason)
    }

    fn _deadline_reached(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.timer.set(None);
        if this.state.get() == ScopeState::Active && !this.cancel_called.get() {
            this.deadline_expired.set(true);
            Self::do_cancel(slf, None)?;
        }
        Ok(())
    }

    #[getter]
    fn get_deadline(&self) -> f64 {
        self.deadline.get()
    }

    #[setter]
    fn set_deadline(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let this = slf.get();
        this.check_thread("deadline")?;
        this.deadline.set(check_deadline(&value, "deadline")?);
        Self::rearm(slf)
    }

    #[getter]
    fn get_relative_deadline(&self, py: Python<'_>) -> PyResult<f64> {
        if self.state.get() == ScopeState::Fresh {
            return Ok(self.relative_deadline.get());
        }
        match self.loop_.get_ref(py) {
            Some(l) => Ok(self.deadline.get() - loop_time(py, &l)?),
            None => Ok(self.relative_deadline.get()),
        }
    }

    #[setter]
    fn set_relative_deadline(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let rel = check_deadline(&value, "relative_deadline")?;
        match this.state.get() {
            ScopeState::Fresh => {
                this.relative_deadline.set(rel);
                Ok(())
            }
            _ => {
                let now = match this.loop_.get_ref(py) {
                    Some(l) => loop_time(py, &l)?,
                    None => return Ok(()),
                };
                this.deadline.set(now + rel);
                Self::rearm(slf)
            }
        }
    }

    #[getter]
    fn get_shield(&self) -> bool {
        self.shield.get()
    }

    #[setter]
    fn set_shield(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.check_thread("shield")?;
        let Ok(v) = value.cast::<pyo3::types::PyBool>() else {
            return Err(PyTypeError::new_err(format!(
                "shield must be a bool, got {}",
                value.get_type().name()?
            )));
        };
        let v = v.is_true();
        self.shield.set(v);
        if let Some(node) = self.node.get() {
            let wakes = tree().set_shield(node, v);
            wake_all(py, wakes, None);
        }
        Ok(())
    }

    #[getter]
    fn cancel_called(&self) -> bool {
        self.cancel_called.get()
    }

    #[getter]
    fn cancelled_caught(&self) -> bool {
        self.cancelled_caught.get()
    }

    #[getter]
    fn deadline_expired(&self) -> bool {
        self.deadline_expired.get()
    }

    #[getter]
    fn cancel_message(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.reason.get_ref(py)
    }

    /// Whether code inside this scope would get a cancellation at its next yield point.
    #[getter]
    fn effectively_cancelled(&self) -> bool {
        match self.node.get() {
            Some(n) => tree().is_effectively_cancelled(n),
            None => self.cancel_called.get(),
        }
    }

    #[getter]
    fn active(&self) -> bool {
        self.state.get() == ScopeState::Active
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = match self.state.get() {
            ScopeState::Fresh => "unentered",
            ScopeState::Active => "active",
            ScopeState::Exited => "exited",
        };
        let mut parts = vec![state.to_string()];
        if self.cancel_called.get() {
            parts.push("cancelled".into());
        }
        if self.shield.get() {
            parts.push("shielded".into());
        }
        let d = self.deadline.get();
        if d.is_finite() {
            match self.loop_.get_ref(py).map(|l| loop_time(py, &l)) {
                Some(Ok(now)) => parts.push(format!("deadline in {:.3}s", d - now)),
                _ => parts.push(format!("deadline={d}")),
            }
        }
        format!("<CancelScope {}>", parts.join(", "))
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.host.visit(&visit)?;
        self.loop_.visit(&visit)?;
        self.timer.visit(&visit)?;
        self.cover.visit(&visit)?;
        self.covered.visit(&visit)?;
        self.gen_frame.visit(&visit)?;
        self.reason.visit(&visit)
    }

    fn __clear__(&self) {
        self.host.set(None);
        self.timer.set(None);
        self.cover.set(None);
        self.covered.set(Vec::new());
        self.reason.set(None);
        self.gen_frame.set(None);
    }
}

impl Drop for CancelScope {
    fn drop(&mut self) {
        // A scope dropped while active (its coroutine was abandoned): free its node.
        if let Some(node) = self.node.replace(None) {
            forget_gen_scope(node);
            // Spliced out, not closed: an abandoned generator's scope may sit below scopes its
            // consumer opened since.
            let wakes = {
                let mut t = tree();
                if t.node_alive(node) {
                    t.splice_out(node).unwrap_or_default()
                } else {
                    Vec::new()
                }
            };
            if !wakes.is_empty() {
                Python::attach(|py| with_exception_set_aside(py, || wake_all(py, wakes, None)));
            }
        }
    }
}

/// The scope that armed its deadline last (a timer of its own or a cover), the candidate to
/// stand in for the next scope's timer (`CancelScope::find_cover`). Cleared when it disarms.
static LAST_ARMED: GilCell<Option<Py<CancelScope>>> = GilCell::new(None);

/// Re-arms scopes whose cover went away (earliest deadline first, so that each can stand in
/// for the later ones). Covered scopes never cover others, so this does not recurse further.
fn release_covered(
    py: Python<'_>,
    mut scopes: Vec<Py<CancelScope>>,
    expired_by: f64,
) -> PyResult<()> {
    if scopes.is_empty() {
        return Ok(());
    }
    scopes.sort_by(|a, b| a.get().deadline.get().total_cmp(&b.get().deadline.get()));
    let mut result = Ok(());
    for scope in scopes {
        let scope = scope.into_bound(py);
        scope.get().cover.set(None);
        let r = CancelScope::rearm_with(&scope, None, expired_by);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

fn new_scope<'py>(
    py: Python<'py>,
    deadline: f64,
    shield: bool,
    fail: bool,
) -> PyResult<Bound<'py, CancelScope>> {
    Bound::new(
        py,
        CancelScope::new_inner(deadline, f64::INFINITY, shield, fail),
    )
}

fn current_time(py: Python<'_>) -> PyResult<f64> {
    let loop_ = cached(py).get_running_loop.bind(py).call0()?;
    loop_now(&loop_)
}

fn delay_to_deadline(py: Python<'_>, delay: &Bound<'_, PyAny>) -> PyResult<f64> {
    let d = check_deadline(delay, "delay")?;
    if d < 0.0 {
        return Err(PyValueError::new_err("delay must be non-negative"));
    }
    if d.is_infinite() {
        return Ok(d);
    }
    Ok(current_time(py)? + d)
}

/// A scope that is cancelled `delay` seconds from now and absorbs its own cancellation.
#[pyfunction]
#[pyo3(signature = (delay, *, shield = false))]
pub fn move_on_after<'py>(
    py: Python<'py>,
    delay: Bound<'py, PyAny>,
    shield: bool,
) -> PyResult<Bound<'py, CancelScope>> {
    let deadline = delay_to_deadline(py, &delay)?;
    new_scope(py, deadline, shield, false)
}

#[pyfunction]
#[pyo3(signature = (deadline, *, shield = false))]
pub fn move_on_at<'py>(
    py: Python<'py>,
    deadline: Bound<'py, PyAny>,
    shield: bool,
) -> PyResult<Bound<'py, CancelScope>> {
    new_scope(py, check_deadline(&deadline, "deadline")?, shield, false)
}

/// Like `move_on_after`, but raises TimeoutError when its own deadline expired.
#[pyfunction]
#[pyo3(signature = (delay, *, shield = false))]
pub fn fail_after<'py>(
    py: Python<'py>,
    delay: Bound<'py, PyAny>,
    shield: bool,
) -> PyResult<Bound<'py, CancelScope>> {
    let deadline = delay_to_deadline(py, &delay)?;
    new_scope(py, deadline, shield, true)
}

#[pyfunction]
#[pyo3(signature = (deadline, *, shield = false))]
pub fn fail_at<'py>(
    py: Python<'py>,
    deadline: Bound<'py, PyAny>,
    shield: bool,
) -> PyResult<Bound<'py, CancelScope>> {
    new_scope(py, check_deadline(&deadline, "deadline")?, shield, true)
}

/// The earliest deadline in effect for the current task, up to the first shield
/// (`-inf` if it is already cancelled, `inf` if none).
#[pyfunction]
pub fn current_effective_deadline(py: Python<'_>) -> PyResult<f64> {
    let core = current_core(py)
        .ok_or_else(|| runtime_error("current_effective_deadline() needs an asyncbis task"))?;
    Ok(match core.get().tree_id() {
        Some(t) => tree().effective_deadline(t),
        None => f64::INFINITY,
    })
}

/// An awaitable that yields to the loop once (a schedule point and a cancel point).
#[pyclass(module = "asyncbis._core", frozen)]
pub struct Checkpoint {
    yielded: GilCell<bool>,
}

#[pymethods]
impl Checkpoint {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        if self.yielded.replace(true) {
            None
        } else {
            Some(py.None())
        }
    }
    #[pyo3(signature = (_value = None))]
    fn send(&self, py: Python<'_>, _value: Option<Bound<'_, PyAny>>) -> Option<Py<PyAny>> {
        self.__next__(py)
    }
    #[pyo3(signature = (typ, val = None, _tb = None))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.yielded.set(true);
        Err(crate::util::thrown(typ, val))
    }
    fn close(&self) {
        self.yielded.set(true);
    }
}

/// `await checkpoint()`: yield to the loop; raises CancelledError if cancelled.
#[pyfunction]
pub fn checkpoint(py: Python<'_>) -> PyResult<Py<Checkpoint>> {
    Py::new(
        py,
        Checkpoint {
            yielded: GilCell::new(false),
        },
    )
}

/// `await checkpoint_if_cancelled()`: a cancel point that only yields when cancelled.
#[pyfunction]
pub fn checkpoint_if_cancelled(py: Python<'_>) -> PyResult<Py<Checkpoint>> {
    let cancelled = current_core(py)
        .and_then(|c| c.get().tree_id())
        .is_some_and(|t| tree().task_should_deliver_level(t));
    Py::new(
        py,
        Checkpoint {
            yielded: GilCell::new(!cancelled),
        },
    )
}

/// Active scopes entered by a generator frame (`generator_frame`), by node: the frame's
/// address, kept valid by the scope's own reference to the frame (`CancelScope::gen_frame`).
static GEN_SCOPES: Mutex<Option<HashMap<NodeId, usize>>> = Mutex::new(None);

fn gen_scopes() -> MutexGuard<'static, Option<HashMap<NodeId, usize>>> {
    GEN_SCOPES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget_gen_scope(node: NodeId) {
    if let Some(map) = gen_scopes().as_mut() {
        map.remove(&node);
    }
}

const CO_GENERATORS: i64 = (ffi::CO_GENERATOR | ffi::CO_ASYNC_GENERATOR) as i64;
/// `@types.coroutine` generators are coroutines, not generators a consumer iterates.
const CO_ITERABLE_COROUTINE: i64 = ffi::CO_ITERABLE_COROUTINE as i64;

/// The generator frame whose `with` / `async with` statement is entering a scope, if it is a
/// generator (sync or async) that is not itself a context manager: the frames of `__enter__` /
/// `__aenter__` methods (asyncbis.timeout, wrappers) are skipped, and so is a generator driven
/// by an `__enter__` / `__aenter__` (an `@asynccontextmanager`/`@contextmanager` body: its
/// scopes are meant to stay open across its `yield`, for the caller's `with` block; they
/// belong to the frame that entered the context manager).
fn generator_frame(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    // SAFETY: a borrowed reference to the running frame (or NULL), made owned at once.
    let frame = unsafe { ffi::PyEval_GetFrame() };
    if frame.is_null() {
        return None;
    }
    let mut frame = unsafe { Bound::from_borrowed_ptr(py, frame.cast()) };
    // Bounded: wrappers nest a few levels at most.
    for _ in 0..16 {
        let code = frame_code(&frame);
        let flags: i64 = code
            .getattr(pyo3::intern!(py, "co_flags"))
            .ok()?
            .extract()
            .ok()?;
        if flags & CO_GENERATORS != 0 && flags & CO_ITERABLE_COROUTINE == 0 {
            match frame_back(&frame) {
                // A context manager's generator: go on with the frame that entered it.
                Some(back) if is_enter_frame(&back) => frame = back,
                _ => return Some(frame),
            }
        } else if is_enter_code(&code) {
            frame = frame_back(&frame)?;
        } else {
            return None;
        }
    }
    None
}

fn frame_code<'py>(frame: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    // SAFETY: `frame` is a live frame object; PyFrame_GetCode returns a new (non-NULL)
    // reference.
    unsafe {
        Bound::from_owned_ptr(
            frame.py(),
            ffi::PyFrame_GetCode(frame.as_ptr().cast()).cast(),
        )
    }
}

fn frame_back<'py>(frame: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `frame` is a live frame object; PyFrame_GetBack returns a new reference or NULL.
    let back = unsafe { ffi::PyFrame_GetBack(frame.as_ptr().cast()) };
    (!back.is_null()).then(|| unsafe { Bound::from_owned_ptr(frame.py(), back.cast()) })
}

fn is_enter_frame(frame: &Bound<'_, PyAny>) -> bool {
    is_enter_code(&frame_code(frame))
}

fn is_enter_code(code: &Bound<'_, PyAny>) -> bool {
    let py = code.py();
    code.getattr(pyo3::intern!(py, "co_name")).is_ok_and(|n| {
        n.eq(pyo3::intern!(py, "__aenter__")).unwrap_or(false)
            || n.eq(pyo3::intern!(py, "__enter__")).unwrap_or(false)
    })
}

/// How many of `nodes` are scopes of generator frames that are suspended (not on the running
/// stack): left open across a `yield`, not misnested.
fn suspended_generator_scopes(py: Python<'_>, nodes: &[NodeId]) -> usize {
    let frames: Vec<usize> = {
        let map = gen_scopes();
        let Some(map) = map.as_ref() else { return 0 };
        nodes.iter().filter_map(|n| map.get(n).copied()).collect()
    };
    if frames.is_empty() {
        return 0;
    }
    let mut running = Vec::new();
    // SAFETY: as in generator_frame.
    let top = unsafe { ffi::PyEval_GetFrame() };
    let mut cur = (!top.is_null()).then(|| unsafe { Bound::from_borrowed_ptr(py, top.cast()) });
    while let Some(f) = cur {
        running.push(f.as_ptr() as usize);
        cur = frame_back(&f);
    }
    frames.iter().filter(|f| !running.contains(f)).count()
}

/// Splices out the scopes left open by an async generator whose consumer let go of it (the
/// loop's asyncgen finalizer is being called for it): they stop applying to the consumer at
/// once, not only when the finalizer's `aclose()` task has run. Their own exits, then, do
/// nothing (`exit_impl`: the node is gone).
fn generator_left(py: Python<'_>, agen: &Bound<'_, PyAny>) {
    let Ok(frame) = agen.getattr(pyo3::intern!(py, "ag_frame")) else {
        return;
    };
    if frame.is_none() {
        return;
    }
    let frame = frame.as_ptr() as usize;
    let nodes: Vec<NodeId> = match gen_scopes().as_mut() {
        Some(map) => {
            let nodes: Vec<NodeId> = map
                .iter()
                .filter(|(_, f)| **f == frame)
                .map(|(n, _)| *n)
                .collect();
            for n in &nodes {
                map.remove(n);
            }
            nodes
        }
        None => return,
    };
    if nodes.is_empty() {
        return;
    }
    let wakes = {
        let mut t = tree();
        let mut wakes = Vec::new();
        for n in nodes {
            if t.node_alive(n) {
                wakes.extend(t.splice_out(n).unwrap_or_default());
            }
        }
        wakes
    };
    wake_all(py, wakes, None);
}

/// The asyncgen finalizer hook of a running loop, wrapped (see `_watch_left_generators`).
#[pyclass(module = "asyncbis._core", frozen)]
pub struct AsyncGenFinalizer {
    inner: Py<PyAny>,
}

#[pymethods]
impl AsyncGenFinalizer {
    fn __call__(&self, py: Python<'_>, agen: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        generator_left(py, &agen);
        Ok(self.inner.bind(py).call1((agen,))?.unbind())
    }

    /// The loop's own finalizer hook.
    #[getter]
    fn inner(&self, py: Python<'_>) -> Py<PyAny> {
        self.inner.clone_ref(py)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.inner)
    }
}

/// Wraps the asyncgen finalizer hook the running loop installed (`sys.set_asyncgen_hooks`), so
/// that a generator its consumer let go of (`break` out of `async for`, then the generator is
/// collected) stops holding the consumer in its scopes at once. Called by the runner when a
/// run starts; the loop restores the previous hooks when it stops. Idempotent. A generator
/// remembers the finalizer in place when it was first iterated, so generators first iterated
/// before this call are not covered.
#[pyfunction]
pub fn _watch_left_generators(py: Python<'_>) -> PyResult<()> {
    let sys = py.import(pyo3::intern!(py, "sys"))?;
    let hooks = sys.call_method0(pyo3::intern!(py, "get_asyncgen_hooks"))?;
    let finalizer = hooks.getattr(pyo3::intern!(py, "finalizer"))?;
    if finalizer.is_none() || finalizer.is_instance_of::<AsyncGenFinalizer>() {
        return Ok(());
    }
    let wrapped = Py::new(
        py,
        AsyncGenFinalizer {
            inner: finalizer.unbind(),
        },
    )?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(pyo3::intern!(py, "finalizer"), wrapped)?;
    sys.call_method(pyo3::intern!(py, "set_asyncgen_hooks"), (), Some(&kwargs))?;
    Ok(())
}
