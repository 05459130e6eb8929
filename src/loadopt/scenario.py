"""A scenario file: everything one scheduling problem needs, as one validated JSON document."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from ._base import FrozenModel
from .compile import compile_problem
from .errors import InputError
from .horizon import Horizon
from .objective import Objective
from .problem import Problem
from .session import Session, check_sessions
from .signals import Signals
from .site import Site


class Scenario(FrozenModel):
    """Site, sessions, horizon, signals and objective, validated together."""

    site: Site
    horizon: Horizon
    sessions: tuple[Session, ...] = ()
    signals: Signals = Signals()
    objective: Objective = Objective()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        check_sessions(self.sessions, {e.id for e in self.site.evses})
        return self

    def compile(self) -> Problem:
        """The scenario's :class:`~loadopt.problem.Problem` (:func:`~loadopt.compile_problem`).

        Returns
        -------
        Problem
        """
        return compile_problem(self.site, self.sessions, self.horizon, self.signals, self.objective)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read and validate a scenario JSON file.

        Parameters
        ----------
        path
            The file.

        Returns
        -------
        Scenario

        Raises
        ------
        InputError
            The file cannot be read (missing, a directory, not UTF-8).
        ModelError
            Its content is not a valid scenario (the message names the field).
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reasons: dict[type[Exception], str] = {
                FileNotFoundError: "no such file",
                IsADirectoryError: "is a directory",
                PermissionError: "permission denied",
            }
            why = reasons.get(type(exc), repr(exc))
            if isinstance(exc, UnicodeDecodeError):
                why = "not a UTF-8 text file"
            raise InputError(f"scenario file {str(p)!r}: {why}") from None
        return cls.model_validate_json(text)

    def dump(self, path: str | Path) -> None:
        """Write the scenario as JSON (the format :meth:`load` reads).

        Parameters
        ----------
        path
            The file (overwritten).
        """
        Path(path).write_text(self.model_dump_json(indent=2))
