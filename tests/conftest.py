"""Fixtures shared by several test modules."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def sigint_handled():
    """Python's default SIGINT handler for the test's duration. A runner handles SIGINT only
    where it has that handler (stock Runner's rule), and a test process can inherit SIGINT
    ignored (a background job, nohup, CI with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
