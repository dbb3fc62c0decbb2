"""The conftest hook that keeps ``make test-fast`` free of processes, run on tests made for it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.e2e  # the inner tests start processes (recorded, not blamed on this one)

INNER = '''
import multiprocessing
import subprocess
import sys

import pytest


def test_runs_a_command():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_spawns_a_worker():
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=print)
    process.start()
    process.join()


def test_forks():
    ctx = multiprocessing.get_context("fork")
    process = ctx.Process(target=print)
    process.start()
    process.join()


def test_pure():
    assert sum(range(4)) == 6


@pytest.mark.e2e
def test_marked_may_start_one():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_unmarked_tests_that_start_processes_fail_by_name(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from process_guard import pytest_runtest_setup, pytest_runtest_teardown  # noqa\n")
    pytester.makeini("[pytest]\nmarkers =\n    e2e: starts processes\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=3)
    out = result.stdout.str()
    for name in ("test_runs_a_command", "test_spawns_a_worker", "test_forks"):
        assert f"test_inner.py::{name} started" in out, out
    assert "test_pure started" not in out and "test_marked_may_start_one started" not in out
    assert "not marked @pytest.mark.e2e" in out
