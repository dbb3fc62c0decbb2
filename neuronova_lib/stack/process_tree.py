"""The processes a service started in sessions of their own, stopped with it.

Stopping a service signals its process group. A program that starts its
children in a new session escapes that signal: JupyterHub's local spawner does
so for every single-user server (a hub restart must not end its users'
servers), and a hub that stops slower than the supervisor waits, or is killed,
leaves them running with nobody to stop them. ``neuronova down`` promises that
nothing is left, so the supervisor notes a service's descendants before it
signals the group, and ends the ones that outlive it.
"""

from __future__ import annotations

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` now (children of children too); none when it is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_stragglers(processes: list[psutil.Process], timeout: float = 5.0) -> list[int]:
    """SIGTERM those of ``processes`` still running, SIGKILL them after ``timeout``; the pids
    that had to be stopped. ``is_running`` compares start times, so a pid reused by another
    program since the list was made is left alone."""
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for process in alive:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=timeout)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=timeout)
    return [p.pid for p in alive]
