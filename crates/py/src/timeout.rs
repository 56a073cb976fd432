//! `timeout()` / `timeout_at()`: asyncio's Timeout API on top of a fail-on-deadline cancel
//! scope, in Rust so that entering and leaving one costs no Python frame.

use pyo3::exceptions::{PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::IntoPyDict;

use crate::scope::{check_deadline, CancelScope};
use crate::util::{cached, runtime_error, GilCell};

/// An already-finished awaitable: `await` returns `value` without yielding.
#[pyclass(module = "asyncbis._core", frozen)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub fn new(py: Python<'_>, value: Option<Py<PyAny>>) -> PyResult<Py<Ready>> {
        Py::new(py, Ready { value })
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.value {
            // Returning nothing is StopIteration(None) without creating an exception object.
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v.clone_ref(py),))),
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
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Err(crate::util::thrown(typ, val))
    }
    fn close(&self) {}
}

/// Like `asyncio.Timeout`, but level-cancelling: once the deadline passes, every yield point
/// inside raises CancelledError until the block exits, where it becomes TimeoutError.
/// `shield=True` also blocks cancellation from outside.
#[pyclass(module = "asyncbis._core", frozen, subclass)]
pub struct Timeout {
    scope: Py<CancelScope>,
}

fn deadline_of(when: Option<&Bound<'_, PyAny>>) -> PyResult<f64> {
    match when {
        None => Ok(f64::INFINITY),
        Some(w) => check_deadline(w, "the deadline"),
    }
}

impl Timeout {
    /// stock asyncio.Timeout's state names
    fn state(&self, py: Python<'_>) -> &'static str {
        let s = self.scope.bind(py).get();
        match (s.was_entered(), s.is_active(), s.deadline_expired_value()) {
            (false, _, _) => "created",
            (true, true, false) => "active",
            (true, true, true) => "expiring",
            (true, false, true) => "expired",
            (true, false, false) => "finished",
        }
    }
}

#[pymethods]
impl Timeout {
    #[new]
    #[pyo3(signature = (when, *, shield = false))]
    fn py_new(py: Python<'_>, when: Option<Bound<'_, PyAny>>, shield: bool) -> PyResult<Self> {
        let deadline = deadline_of(when.as_ref())?;
        Ok(Timeout {
            scope: Py::new(
                py,
                CancelScope::new_inner(deadline, f64::INFINITY, shield, true),
            )?,
        })
    }

    /// The cancel scope doing the work (deadline, shield, cancel_called, ...).
    #[getter]
    fn cancel_scope(&self, py: Python<'_>) -> Py<CancelScope> {
        self.scope.clone_ref(py)
    }

    /// The deadline in loop time, or None.
    fn when(&self, py: Python<'_>) -> Option<f64> {
        let d = self.scope.bind(py).get().deadline_value();
        (d != f64::INFINITY).then_some(d)
    }

    /// Moves the deadline (None: no deadline). Only while the timeout is active and has not
    /// expired (stock asyncio's rule and messages).
    fn reschedule(&self, py: Python<'_>, when: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let scope = self.scope.bind(py);
        match self.state(py) {
            "active" => {}
            "created" => return Err(runtime_error("Timeout has not been entered")),
            state => {
                return Err(runtime_error(format!(
                    "Cannot change state of {state} Timeout"
                )))
            }
        }
        let value = match &when {
            Some(w) => w.clone(),
            None => py.None().into_bound(py),
        };
        scope.setattr(pyo3::intern!(py, "deadline"), value)
    }

    /// Whether the deadline passed (the timeout fired).
    fn expired(&self, py: Python<'_>) -> bool {
        self.scope.bind(py).get().deadline_expired_value()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = self.state(py);
        let info = if state == "active" {
            match self.when(py) {
                Some(w) => format!(" when={}", (w * 1000.0).round() / 1000.0),
                None => " when=None".to_string(),
            }
        } else {
            String::new()
        };
        let shield = if self.scope.bind(py).get().shield_value() {
            " shield=True"
        } else {
            ""
        };
        format!("<Timeout [{state}]{info}{shield}>")
    }

    /// Like stock (a coroutine), nothing happens until the result is awaited.
    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<TimeoutEnter>> {
        Py::new(
            slf.py(),
            TimeoutEnter {
                timeout: GilCell::new(Some(slf.clone().unbind())),
            },
        )
    }

    #[pyo3(signature = (_exc_type = None, exc = None, _tb = None))]
    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Ready>> {
        let caught = CancelScope::exit_impl(self.scope.bind(py), exc.as_ref(), false)?;
        Ready::new(
            py,
            caught.then(|| {
                true.into_pyobject(py)
                    .unwrap()
                    .to_owned()
                    .into_any()
                    .unbind()
            }),
        )
    }
}

/// What `Timeout.__aenter__()` returns: enters the timeout's scope when awaited.
#[pyclass(module = "asyncbis._core", frozen)]
pub struct TimeoutEnter {
    timeout: GilCell<Option<Py<Timeout>>>,
}

#[pymethods]
impl TimeoutEnter {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(timeout) = self.timeout.take() else {
            return Ok(None);
        };
        let scope = timeout.bind(py).get().scope.bind(py);
        if scope.get().was_entered() {
            return Err(runtime_error("Timeout has already been entered"));
        }
        if crate::task::current_core(py).is_none() {
            return Err(runtime_error("Timeout should be used inside a task"));
        }
        CancelScope::enter_impl(scope)?;
        Err(PyStopIteration::new_err((timeout,)))
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
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.timeout.set(None);
        Err(crate::util::thrown(typ, val))
    }
    fn close(&self) {
        self.timeout.set(None);
    }
}

fn new_timeout(py: Python<'_>, deadline: f64, shield: bool) -> PyResult<Py<Timeout>> {
    Py::new(
        py,
        Timeout {
            scope: Py::new(
                py,
                CancelScope::new_inner(deadline, f64::INFINITY, shield, true),
            )?,
        },
    )
}

/// Where `timeout()`/`timeout_at()` go when the native scope does not apply (scoped-timeouts
/// off, or not in an asyncbis task): the Python surface's stock-compatible versions.
static FALLBACK: pyo3::sync::PyOnceLock<(Py<PyAny>, Py<PyAny>)> = pyo3::sync::PyOnceLock::new();

#[pyfunction]
pub fn _set_timeout_fallback(
    py: Python<'_>,
    timeout: Py<PyAny>,
    timeout_at: Py<PyAny>,
) -> PyResult<()> {
    FALLBACK
        .set(py, (timeout, timeout_at))
        .map_err(|_| runtime_error("the timeout fallback is already set"))
}

/// The fallback to call, or None when the native Timeout applies.
fn fallback(py: Python<'_>, at: bool) -> Option<Bound<'_, PyAny>> {
    if crate::util::scoped_timeouts() && crate::task::current_core(py).is_some() {
        return None;
    }
    FALLBACK.get(py).map(|(t, t_at)| {
        if at {
            t_at.bind(py).clone()
        } else {
            t.bind(py).clone()
        }
    })
}

fn number(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number or None, got bool"
        )));
    }
    check_deadline(value, what)
}

/// `async with timeout(delay):` — TimeoutError if the block still runs after `delay` seconds
/// (None: no deadline). Level-cancelling; `shield=True` also blocks outside cancellation.
#[pyfunction]
#[pyo3(signature = (delay, *, shield = false))]
pub fn timeout<'py>(
    py: Python<'py>,
    delay: Option<Bound<'py, PyAny>>,
    shield: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(f) = fallback(py, false) {
        return f.call((delay,), Some(&[("shield", shield)].into_py_dict(py)?));
    }
    let deadline = match delay {
        None => f64::INFINITY,
        Some(d) => {
            let d = number(&d, "the delay")?;
            let loop_ = cached(py).get_running_loop.bind(py).call0()?;
            let now = crate::scope::loop_now(&loop_)?;
            now + d
        }
    };
    Ok(new_timeout(py, deadline, shield)?.into_bound(py).into_any())
}

/// `async with timeout_at(when):` — like `timeout()` with an absolute loop-time deadline.
#[pyfunction]
#[pyo3(signature = (when, *, shield = false))]
pub fn timeout_at<'py>(
    py: Python<'py>,
    when: Option<Bound<'py, PyAny>>,
    shield: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(f) = fallback(py, true) {
        return f.call((when,), Some(&[("shield", shield)].into_py_dict(py)?));
    }
    let deadline = match &when {
        None => f64::INFINITY,
        Some(w) => number(w, "the deadline")?,
    };
    Ok(new_timeout(py, deadline, shield)?.into_bound(py).into_any())
}
