"""Runtime switches: read from the environment once, at the edge, into one Runtime."""

import sys

import pytest

from vt_core.errors import VtError
from vt_core.runtime import Runtime, RuntimeSettingError


def test_defaults():
    rt = Runtime.from_env({})
    assert rt == Runtime()
    assert rt.writer == ("process" if sys.platform.startswith("linux") else "thread")
    assert rt.writer_nice == 10
    assert rt.writer_start == "fork"
    assert rt.group_async is None  # decided by the device: on for CUDA, off on a CPU
    assert Runtime.from_env({"VT_GROUP_ASYNC": ""}).group_async is None  # empty = unset


@pytest.mark.parametrize("env, field, value", [
    ({"VT_WRITER": "thread"}, "writer", "thread"),
    ({"VT_WRITER": "process"}, "writer", "process"),
    ({"VT_WRITER_NICE": "0"}, "writer_nice", 0),
    ({"VT_WRITER_NICE": "19"}, "writer_nice", 19),
    ({"VT_WRITER_START": "exec"}, "writer_start", "exec"),
    ({"VT_WRITER_START": "fork"}, "writer_start", "fork"),
    ({"VT_GROUP_ASYNC": "1"}, "group_async", True),
    ({"VT_GROUP_ASYNC": "0"}, "group_async", False),
])
def test_each_switch(env, field, value):
    rt = Runtime.from_env(env)
    assert getattr(rt, field) == value
    others = {f: getattr(Runtime(), f) for f in ("writer", "writer_nice", "writer_start", "group_async")
              if f != field}
    assert all(getattr(rt, f) == v for f, v in others.items())  # one switch changes one field


def test_unrelated_variables_are_ignored():
    assert Runtime.from_env({"PATH": "/bin", "VT_OTHER": "x"}) == Runtime()


@pytest.mark.parametrize("env, message", [
    ({"VT_WRITER": "threads"}, "VT_WRITER='threads': use 'process' or 'thread'"),
    ({"VT_WRITER_NICE": "high"}, "VT_WRITER_NICE='high': give an integer niceness"),
    ({"VT_WRITER_START": "spawn"}, "VT_WRITER_START='spawn': use 'fork' or 'exec'"),
    ({"VT_GROUP_ASYNC": "yes"}, "VT_GROUP_ASYNC='yes': use 1 .on. or 0 .off."),
])
def test_bad_values_raise(env, message):
    with pytest.raises(RuntimeSettingError, match=message) as info:
        Runtime.from_env(env)
    assert isinstance(info.value, VtError) and isinstance(info.value, ValueError)


def test_from_env_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("VT_WRITER", "thread")
    monkeypatch.setenv("VT_GROUP_ASYNC", "1")
    rt = Runtime.from_env()
    assert rt.writer == "thread" and rt.group_async is True
