"""click.Choice that names the close choices when a value is not one of them (`--guide
AutoNormall`: did you mean `AutoNormal`?); click itself suggests only option names."""

from __future__ import annotations

from typing import Any

import click

from kiln.specerrors import did_you_mean


class SuggestingChoice(click.Choice):  # type: ignore[type-arg]  # click.Choice is generic in 8.2
    """A click.Choice whose error for an unknown value ends with `did you mean ...?`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            if not hint:
                raise
            self.fail(f"{e.message}{hint}", param, ctx)
