"""Hydra's sweep syntax as Optuna distributions.

``hydra.sweeper.params`` (and sweeps on the command line) use Hydra's override grammar:

    model.dropout: choice(0.0, 0.2, 0.5)          categorical
    model.num_layers: range(2, 10, 2)             integers 2, 4, 6, 8 (step 2)
    optim.lr: tag(log, interval(1e-4, 1e-1))      float, log scale
    model.dropout: interval(0.0, 0.5)             float (Hydra reads interval ends as floats)
    model.hidden_channels: tag(int, interval(16, 128))   integers 16..128

Anything else is a fixed value passed to every trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.core import ConfigError


@dataclass
class SearchSpace:
    distributions: dict[str, Any] = field(default_factory=dict)  # key -> optuna distribution
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the override's value text

    def grid(self) -> dict[str, list] | None:
        """Every key's values when all are categorical (what a grid sampler needs), else None."""
        from optuna.distributions import CategoricalDistribution

        if not all(isinstance(d, CategoricalDistribution) for d in self.distributions.values()):
            return None
        return {k: list(d.choices) for k, d in self.distributions.items()}

    def corners(self) -> list[dict[str, Any]]:
        """Points that together use every categorical value and both ends of every range:
        the first point, then one key changed at a time (checked before the study starts)."""
        first = {k: _ends(d)[0] for k, d in self.distributions.items()}
        points = [first]
        for key, dist in self.distributions.items():
            for value in _ends(dist)[1:]:
                points.append({**first, key: value})
        return points

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """One trial's command-line overrides: the fixed values, then the sampled ones."""
        out = [f"{k}={v}" for k, v in self.fixed.items()]
        out += [f"{k}={text(v)}" for k, v in values.items()]
        return out


def _ends(dist) -> list:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def text(value: Any) -> str:
    """A sampled value as Hydra override text (None -> null; strings as they were written)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(params: dict[str, str], arguments: list[str]) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` plus the command line's sweeps; a value
    Optuna cannot search is one :class:`ConfigError` naming the key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    parser = OverridesParser.create()
    space = SearchSpace()
    for line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"search space: cannot parse {line!r}: {first}") from err
        key = override.get_key_element()
        if not override.is_sweep_override():
            space.fixed[key] = override.get_value_element_as_str()
            continue
        space.fixed.pop(key, None)
        space.distributions[key.lstrip("+")] = _distribution(override, line)
    return space


def _distribution(override, line: str):
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
        if bad:
            raise ConfigError(
                f"search space: {line!r}: a choice must be a number, a string, true/false or "
                f"null, got {bad[0]!r}"
            )
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        start, stop, step = value.start, value.stop, value.step
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"search space: {line!r} holds no value")
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    if override.is_interval_sweep():
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high:
            raise ConfigError(f"search space: {line!r}: the interval's start must be below its end")
        if log and low <= 0:
            raise ConfigError(f"search space: {line!r}: a log interval must start above 0")
        if "int" in value.tags:
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(f"search space: {line!r} is a sweep Optuna cannot search")
