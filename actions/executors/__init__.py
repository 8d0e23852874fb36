"""Rollback targets behind one interface (:mod:`actions.executors.base`), chosen by ``target.kind``.

:class:`Registry` builds the executors of the kinds an executor service is configured for, each
from its own settings (``BACKOUT_KUBERNETES_*``, ``BACKOUT_NGINX_*``, ``BACKOUT_IMAGE_*``,
``BACKOUT_WEBHOOK_*``), once, at start-up: a bad setting stops the service with its name instead
of failing the first rollback. A target of a kind that is not configured is refused with
:class:`~backout.errors.ConfigError` (the step fails and a human is told).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from actions.executors.base import Executor
from backout.errors import ConfigError


def _kubernetes() -> Executor:
    from actions.executors.kube import settings_from_env
    from actions.executors.kubernetes import KubernetesExecutor

    return KubernetesExecutor(settings_from_env())


def _argo() -> Executor:
    from actions.executors.argo import ArgoRolloutExecutor
    from actions.executors.kube import settings_from_env

    return ArgoRolloutExecutor(settings_from_env())


def _bluegreen() -> Executor:
    from actions.executors.bluegreen import BlueGreenExecutor

    return BlueGreenExecutor()


def _image() -> Executor:
    from actions.executors.image import ImageExecutor

    return ImageExecutor()


def _webhook() -> Executor:
    from actions.executors.webhook import WebhookExecutor

    return WebhookExecutor()


# kind -> how to build its executor from the environment (imported only when configured)
FACTORIES: dict[str, Callable[[], Executor]] = {
    "kubernetes": _kubernetes, "argo-rollout": _argo, "bluegreen": _bluegreen, "image": _image,
    "webhook": _webhook,
}
KINDS = tuple(FACTORIES)


class Registry:
    """The executors of the configured kinds, by kind."""

    def __init__(self, kinds: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(kinds))
        unknown = [k for k in wanted if k not in FACTORIES]
        if unknown:
            raise ConfigError(f"BACKOUT_EXECUTOR_TARGETS: unknown target kind(s) {', '.join(unknown)}; "
                              f"known: {', '.join(KINDS)}")
        self._executors = {kind: FACTORIES[kind]() for kind in wanted}

    @classmethod
    def of(cls, executors: Iterable[Executor]) -> Registry:
        """A registry of executors built elsewhere (tests, benchmarks)."""
        registry = cls(())
        registry._executors = {e.kind: e for e in executors}
        return registry

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._executors)

    def get(self, kind: str) -> Executor:
        """The executor of ``kind``; :class:`ConfigError` if this service has none."""
        executor = self._executors.get(kind)
        if executor is None:
            shown = kind if len(kind) <= 40 else f"{kind[:40]}…"
            raise ConfigError(f"no executor for target kind {shown!r} is configured here (BACKOUT_EXECUTOR_TARGETS "
                              f"lists {', '.join(self._executors) or 'none'}): nothing was done")
        return executor
