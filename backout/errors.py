"""Backout's exceptions.

    BackoutError                 root: every error the product raises on purpose
    ├── ContractError            a record does not match its contract (DESIGN.md)
    ├── ConfigError              a configuration file or setting is invalid
    ├── SampleRejected           a valid sample the detectors cannot use
    │   ├── DuplicateSample      same (service, metric, ts) seen already
    │   ├── OutOfOrderSample     older than the newest sample of its stream
    │   ├── FutureSample         far ahead of its partition's event time
    │   ├── LateSample           a new stream's first sample, far behind its partition's event time
    │   ├── ImpossibleValue      a value its metric cannot take (an error rate above 1, a negative latency)
    │   ├── UnknownMetric        a metric the configuration has no spec for
    │   └── UnexpectedRecord     a record of a type this stage does not take
    ├── BrokerError              the Kafka broker cannot be started or reached
    ├── UnknownIncident          no decision on the actions topic carries this incident id
    ├── AnswerRefused            an approval or denial that would change nothing
    ├── DemoError                a part of ``backout demo``'s stack did not start
    └── NotBuiltYet              a CLI command whose feature has not landed

The CLI prints ``str(error)`` as one red line and exits 1; messages say what
was expected and, where there is one, the fix.
"""


class BackoutError(Exception):
    """Root of every error Backout raises on purpose."""


class ContractError(BackoutError):
    """A record does not match its message contract."""


class ConfigError(BackoutError):
    """A configuration file or setting is invalid."""


class SampleRejected(BackoutError):
    """A well-formed sample that the detectors refuse; it goes to the dead letter topic."""


class DuplicateSample(SampleRejected):
    """A sample whose (service, metric, ts) was already seen."""


class OutOfOrderSample(SampleRejected):
    """A sample older than the newest one of its stream."""


class FutureSample(SampleRejected):
    """A sample stamped more than ``max_future_skew_s`` ahead of its partition's event time."""


class LateSample(SampleRejected):
    """A new stream's sample stamped more than ``max_lateness_s`` behind its partition's event time."""


class ImpossibleValue(SampleRejected):
    """A sample whose value its metric cannot take (an error rate above 1, a negative latency)."""


class UnknownMetric(SampleRejected):
    """A sample of a metric the configuration does not list: there is no spec to test it with."""


class UnexpectedRecord(SampleRejected):
    """A valid record of a type the stage does not take (the engine takes metrics and deploys only)."""


class BrokerError(BackoutError):
    """The Kafka broker cannot be started or reached."""


class UnknownIncident(BackoutError):
    """No decision on the actions topic carries this incident id."""


class AnswerRefused(BackoutError):
    """An approval or denial the gate would ignore (answered, executed, escalated, timed out)."""


class DemoError(BackoutError):
    """A part of ``backout demo``'s own stack (a service, nginx, a child process) did not start."""


class NotBuiltYet(BackoutError):
    """A command whose feature has not landed yet."""
