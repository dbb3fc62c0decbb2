"""The dashboards' kernel manager: Voilà's pool of preheated kernels, kept warm.

Voilà (``--preheat_kernel``) runs each page's notebook in a pooled kernel before anyone
asks for it, up to :func:`neuronova_lib.dashboards.pages.await_request`, where the
kernel waits for a browser; a page then opens with the imports done and the widgets
loaded, and a new kernel refills the pool. The server culls kernels no page is
connected to after ``cull_idle_timeout`` (abandoned pages), and a pooled kernel is
exactly such a kernel: culled, it would leave the pool empty (Voilà refills a pool
only when a kernel is taken from it), and every page would start cold again after the
first idle five minutes. This manager spares the pool from culling; a kernel that has
served a page is culled as before.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager


class PoolKeepingKernelManager(AsyncMappingKernelManager):  # type: ignore[misc]
    """``AsyncMappingKernelManager`` that never culls a kernel waiting in Voilà's pool."""

    def pooled_kernel_ids(self) -> set[str]:
        """Kernels started for the pool and not yet given to a page."""
        pools: dict[str, list[Any]] = getattr(self, "_pools", {})  # set by Voilà's subclass
        ids = set()
        for pool in pools.values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None:
                    ids.add(task.result()["kernel_id"])
        return ids

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id in self.pooled_kernel_ids():
            return
        await super().cull_kernel_if_idle(kernel_id)
