"""The stock asyncio objects, captured when asyncbis is first imported (before any patching).

Every switch that is off falls back to these, and unpatch_asyncio() puts them back.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.runners
import asyncio.taskgroups
import asyncio.tasks
import asyncio.timeouts

Runner = asyncio.runners.Runner
run = asyncio.runners.run
Task = asyncio.tasks.Task
TaskGroup = asyncio.taskgroups.TaskGroup
shield = asyncio.tasks.shield
wait_for = asyncio.tasks.wait_for
timeout = asyncio.timeouts.timeout
timeout_at = asyncio.timeouts.timeout_at
Timeout = asyncio.timeouts.Timeout
get_event_loop = asyncio.events.get_event_loop
get_event_loop_policy = asyncio.events.get_event_loop_policy
set_event_loop_policy = asyncio.events.set_event_loop_policy
create_task = asyncio.tasks.create_task

BaseEventLoop = asyncio.base_events.BaseEventLoop
loop_create_task = BaseEventLoop.create_task
loop_set_task_factory = BaseEventLoop.set_task_factory
loop_run_until_complete = BaseEventLoop.run_until_complete
loop_close = BaseEventLoop.close
