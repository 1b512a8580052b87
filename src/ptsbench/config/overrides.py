"""Command-line overrides Hydra would refuse with a parser traceback or a launcher's internal error, refused
first in one line that says what to type instead: a value that needs quoting (a space split by the shell,
``~`` or brackets inside a path) and ``hydra.launcher.n_jobs`` that runs no job."""

from __future__ import annotations

from ..errors import ConfigError


def check_override_syntax(argv: list[str]) -> None:
    """Every ``key=value`` in ``argv`` (the command line after the program) parses with Hydra's grammar, and
    no bare word follows one (the rest of a value the shell split at a space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    previous = ""
    for text in argv:
        if previous and "=" not in text and not text.startswith(("-", "~", "+")) and not previous.startswith("-"):
            key, _, value = previous.partition("=")
            raise ConfigError(
                f"'{text}' after {previous} is not an override: a value with spaces must be quoted as a whole, "
                f"e.g. '{key}=\"{value} {text}\"'"
            )
        if "=" in text and not text.startswith("-"):
            try:
                parser.parse_override(text)
            except HydraException as e:  # the parser raises it bare; parse_overrides wraps it
                key, _, value = text.partition("=")
                why = str(e).strip().splitlines()[0]
                raise ConfigError(
                    f"{key}: Hydra cannot parse the value {value!r} ({why}); quote it, e.g. '{key}=\"{value}\"'"
                ) from None
        previous = text if "=" in text else ""


def check_launcher_overrides(argv: list[str]) -> None:
    """``hydra.launcher.n_jobs`` is a positive number of jobs, or a negative one (joblib: all CPU cores but
    n-1); 0 would make joblib fail inside the launcher."""
    for text in argv:
        key, _, value = text.partition("=")
        if key.lstrip("+") != "hydra.launcher.n_jobs" or value.startswith("$"):
            continue
        try:
            n_jobs = int(value)
        except ValueError:
            n_jobs = 0
        if n_jobs == 0 or str(n_jobs) != value.strip():
            raise ConfigError(
                f"hydra.launcher.n_jobs={value}: must be a positive number of parallel jobs, or -1 for one per CPU "
                "core; leave it unset for one per GPU (or per two CPU cores) with hydra/launcher=parallel"
            )
