"""The ``image`` target: redeploy the last good image tag with the orchestrator's own command.

Target: ``{"kind": "image", "image": "registry.example.com/shop/checkout", "service": "checkout"}``
(``service`` is the orchestrator's name for it: a Docker service, a Nomad job, a Deployment;
``namespace`` and ``container`` are optional, for commands that need them).

The command is configured, never taken from a message: ``BACKOUT_IMAGE_COMMAND`` is a JSON
list, one argument per element, such as ::

    ["docker", "service", "update", "--image", "{image}:{version}", "{service}"]
    ["kubectl", "-n", "{namespace}", "set", "image", "deployment/{service}", "{container}={image}:{version}"]
    ["nomad", "job", "run", "-var", "image={image}:{version}", "/etc/nomad/{service}.hcl"]

Each element is formatted on its own from the placeholders below, each value checked by
:mod:`backout.names` first (a value can neither split into more arguments nor start with
``-``), and the list is run without a shell. ``BACKOUT_IMAGE_INSPECT_COMMAND``, optional,
prints the image the service runs now (``repo:tag``, ``repo:tag@digest`` or the bare tag):
with it the executor skips a rollback already in place and confirms one it made.
"""

from __future__ import annotations

import logging
import shlex
import string
import subprocess
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actions.executors.base import ExecutionFailed, Outcome, Rollback
from backout import names
from backout.contracts import Target, validate
from backout.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

# placeholder -> the name format its value must have; the last two come from the decision
PLACEHOLDERS: dict[str, names.NameKind] = {
    "image": "image", "service": "service", "namespace": "namespace", "container": "k8s_name",
    "version": "version", "from_version": "version",
}
TARGET_PLACEHOLDERS = ("image", "service", "namespace", "container")
_SHOWN_OUTPUT_CHARS = 500


class ImageSettings(BaseSettings):
    """Settings of the ``image`` target, from ``BACKOUT_IMAGE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_IMAGE_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    command: tuple[str, ...] = ()
    """``BACKOUT_IMAGE_COMMAND``: the command that redeploys a service on an image tag, a JSON
    list of arguments with placeholders ``{image}``, ``{service}``, ``{namespace}``,
    ``{container}`` (from the target), ``{version}`` (the tag to roll back to) and
    ``{from_version}`` (the blamed tag). It must wait until the redeploy is done (``docker
    service update`` does, unless ``--detach``); exit 0 means done. Required for image targets."""

    inspect_command: tuple[str, ...] = ()
    """``BACKOUT_IMAGE_INSPECT_COMMAND``: optional command that prints the image the service runs
    now, with the target's placeholders only, e.g. ``["docker", "service", "inspect", "--format",
    "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "{service}"]`` (``{{`` is a literal brace)."""

    timeout_s: float = Field(default=600.0, gt=0)
    """``BACKOUT_IMAGE_TIMEOUT_S``: how long the command may run before it is killed and the
    step fails (the inspect command gets a tenth of it, at least 10 s)."""


class ImageTarget(BaseModel):
    """The fields of an ``image`` target, each in the format of :mod:`backout.names`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["image"]
    image: str
    service: str
    namespace: str | None = None
    container: str | None = None

    @field_validator("image", "service", "namespace", "container", mode="before")
    @classmethod
    def _checked(cls, value: object, info: ValidationInfo) -> object:
        return value if value is None else names.check(PLACEHOLDERS[info.field_name or ""], value)


class ImageExecutor:
    """Runs the configured redeploy command on the last good tag."""

    kind: ClassVar[str] = "image"

    def __init__(self, settings: ImageSettings | None = None) -> None:
        self.settings = settings if settings is not None else ImageSettings()
        _check_template("BACKOUT_IMAGE_COMMAND", self.settings.command, set(PLACEHOLDERS))
        _check_template("BACKOUT_IMAGE_INSPECT_COMMAND", self.settings.inspect_command,
                        set(TARGET_PLACEHOLDERS))

    def current_version(self, target: Target) -> str | None:
        """The tag the inspect command reports; ``None`` without one. :class:`ExecutionFailed`
        when it fails or prints no tag."""
        if not self.settings.inspect_command:
            return None
        argv = _format("BACKOUT_IMAGE_INSPECT_COMMAND", self.settings.inspect_command, _values(target))
        code, out, err = _run(argv, max(10.0, self.settings.timeout_s / 10))
        if code != 0:
            raise ExecutionFailed(f"{shlex.join(argv)} failed: {err}")
        tag = tag_of(out)
        if tag is None:
            raise ExecutionFailed(f"{shlex.join(argv)} printed {out[:80]!r}, not an image with a tag")
        return tag

    def plan(self, rollback: Rollback) -> list[str]:
        argv = self._command(rollback)
        steps = [f"run {shlex.join(argv)} (killed after {self.settings.timeout_s:g} s; exit 0 is done)"]
        if self.settings.inspect_command:
            inspect = _format("BACKOUT_IMAGE_INSPECT_COMMAND", self.settings.inspect_command,
                              _values(rollback.target))
            steps.insert(0, f"skip if {shlex.join(inspect)} reports {rollback.to_version} already")
            steps.append(f"check that {shlex.join(inspect)} reports {rollback.to_version}")
        return steps

    def execute(self, rollback: Rollback) -> Outcome:
        argv = self._command(rollback)
        try:
            if self.current_version(rollback.target) == rollback.to_version:
                return Outcome("skipped", f"{rollback.service} runs {rollback.to_version} already",
                               rollback.to_version)
            code, _, err = _run(argv, self.settings.timeout_s)
            if code != 0:
                return Outcome("failed", f"{shlex.join(argv)} exited with {code}: {err}")
            now = self.current_version(rollback.target)
        except ExecutionFailed as exc:
            return Outcome("failed", str(exc))
        if now is not None and now != rollback.to_version:
            return Outcome("failed", f"{shlex.join(argv)} exited 0, but {rollback.service} runs {now}, "
                                     f"not {rollback.to_version}")
        return Outcome("executed", f"{shlex.join(argv)} exited 0"
                                   + (f"; {rollback.service} runs {now}" if now else ""), rollback.to_version)

    def _command(self, rollback: Rollback) -> list[str]:
        """The redeploy command for ``rollback``, every value checked: :class:`ContractError` if one is
        not valid, :class:`ConfigError` without a command; nothing runs in either case."""
        if not self.settings.command:
            raise ConfigError("BACKOUT_IMAGE_COMMAND is not set: the image target needs the command that "
                              'redeploys a tag, e.g. ["docker", "service", "update", "--image", '
                              '"{image}:{version}", "{service}"]')
        values = _values(rollback.target)
        values["version"] = names.check("version", rollback.to_version)
        if rollback.from_version is not None:
            values["from_version"] = names.check("version", rollback.from_version)
        return _format("BACKOUT_IMAGE_COMMAND", self.settings.command, values)


def tag_of(printed: str) -> str | None:
    """The tag in what an inspect command printed (its first line), if it is a valid version.

    >>> tag_of("registry.example.com:5000/shop/checkout:v2.15.0@sha256:" + "a" * 64 + "\\n")
    'v2.15.0'
    >>> tag_of("v2.15.0"), tag_of("registry.example.com:5000/shop/checkout"), tag_of("")
    ('v2.15.0', None, None)
    """
    lines = printed.strip().splitlines()
    reference = lines[0].strip().partition("@")[0] if lines else ""
    name, colon, tag = reference.rpartition(":")
    if not colon:
        tag = reference
    elif "/" in tag:  # the colon was a registry's port: no tag
        return None
    return tag if names.valid("version", tag) else None


def _values(target: Target) -> dict[str, str]:
    fields = validate(ImageTarget, target.model_dump(), "image target")
    return {k: v for k in TARGET_PLACEHOLDERS if (v := getattr(fields, k)) is not None}


def _check_template(setting: str, argv: tuple[str, ...], allowed: set[str]) -> None:
    """:class:`ConfigError` unless the program is spelled out and every placeholder of ``argv`` is a
    plain ``{name}`` from ``allowed``."""
    if argv and "{" in argv[0]:
        raise ConfigError(f"{setting}: the program {argv[0]!r} must be spelled out, not a placeholder")
    for arg in argv:
        try:
            parsed = list(string.Formatter().parse(arg))
        except ValueError as exc:
            raise ConfigError(f"{setting}: argument {arg!r}: {exc} (write {{{{ for a literal brace)") from None
        for _, field, spec, conversion in parsed:
            if field is not None and (field not in allowed or spec or conversion):
                raise ConfigError(f"{setting}: argument {arg!r}: placeholder {{{field}}} is not one of "
                                  f"{', '.join('{' + a + '}' for a in sorted(allowed))}")


def _format(setting: str, argv: tuple[str, ...], values: dict[str, str]) -> list[str]:
    missing = sorted({f for arg in argv for _, f, _, _ in string.Formatter().parse(arg)
                      if f is not None and f not in values})
    if missing:
        raise ContractError(f"the image target has no {', '.join(missing)}, which {setting} uses")
    return [arg.format_map(values) for arg in argv]


def _run(argv: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Exit code, stdout and the tail of stderr of ``argv``, run without a shell."""
    log.info("running %s", shlex.join(argv))
    try:
        done = subprocess.run(argv, shell=False, timeout=timeout_s, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ExecutionFailed(f"{shlex.join(argv)} did not finish within {timeout_s:g} s; it was killed") from None
    except OSError as exc:
        raise ExecutionFailed(f"{shlex.join(argv)} could not start: {exc}") from None
    err = done.stderr.strip() or done.stdout.strip()
    return done.returncode, done.stdout, err[-_SHOWN_OUTPUT_CHARS:]
