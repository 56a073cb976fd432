//! `timeout()` / `timeout_at()`: asyncio's Timeout API on top of a fail-on-deadline cancel
//! scope, in Rust so that entering and leaving one costs no Python frame.

use pyo3::exceptions::{PyStopIteration, PyTypeError};
use pyo3::prelude::*;

use crate::scope::{check_deadline, CancelScope};
use crate::util::{cached, runtime_error};

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
        Err(match val {
            Some(v) if !v.is_none() => PyErr::from_value(v),
            _ => PyErr::from_value(typ),
        })
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

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<Ready>> {
        let py = slf.py();
        if slf.get().scope.bind(py).get().was_entered() {
            return Err(runtime_error("Timeout has already been entered"));
        }
        CancelScope::enter_impl(slf.get().scope.bind(py))?;
        Ready::new(py, Some(slf.clone().into_any().unbind()))
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

/// `async with timeout(delay):` — TimeoutError if the block still runs after `delay` seconds
/// (None: no deadline).
#[pyfunction]
#[pyo3(signature = (delay, *, shield = false))]
pub fn timeout(
    py: Python<'_>,
    delay: Option<Bound<'_, PyAny>>,
    shield: bool,
) -> PyResult<Py<Timeout>> {
    let deadline = match delay {
        None => f64::INFINITY,
        Some(d) => {
            let d = check_deadline(&d, "the delay").map_err(|e| {
                if e.is_instance_of::<PyTypeError>(py) {
                    PyTypeError::new_err("the delay must be a number of seconds or None")
                } else {
                    e
                }
            })?;
            let loop_ = cached(py).get_running_loop.bind(py).call0()?;
            let now: f64 = loop_.call_method0(pyo3::intern!(py, "time"))?.extract()?;
            now + d
        }
    };
    new_timeout(py, deadline, shield)
}

/// `async with timeout_at(when):` — like `timeout()` with an absolute loop-time deadline.
#[pyfunction]
#[pyo3(signature = (when, *, shield = false))]
pub fn timeout_at(
    py: Python<'_>,
    when: Option<Bound<'_, PyAny>>,
    shield: bool,
) -> PyResult<Py<Timeout>> {
    new_timeout(py, deadline_of(when.as_ref())?, shield)
}
