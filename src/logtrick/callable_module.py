"""Modules that are also their namesake function: ``lt.score(...)`` beside ``logtrick.score``.

The public API calls ``lt.score(dist_fn, params, x)`` and ``lt.surrogate(cost, log_prob)``, and
the code lives in the modules ``logtrick/score.py`` and ``logtrick/surrogate.py``. A package
attribute can hold only one of the two: binding the function over the submodule name made
``import logtrick.score as m`` give the function (``import a.b as m`` reads the attribute ``b``
of ``a``). Instead, such a module calls :func:`make_callable` on itself: it stays the module
(``import logtrick.score as m``, ``from logtrick.score import score``, ``m.fisher``) and calling
it calls its function of the same name, with that function's signature for ``inspect`` and
``help`` and the documentation.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["CallableModule", "make_callable"]


class CallableModule(types.ModuleType):
    """A module whose call is its function of the same name (looked up at each call, so a
    monkeypatched function is the one called)."""

    @property
    def function(self) -> Callable[..., Any]:
        """The module's function named like the module (``logtrick.score.score``)."""
        function: Callable[..., Any] = self.__dict__[self.__name__.rpartition(".")[2]]
        return function

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable[[str], types.ModuleType], tuple[str]]:
        """Pickled by name: unpickling imports the module (a module has no state to copy)."""
        return importlib.import_module, (self.__name__,)


def make_callable(module_name: str) -> None:
    """Make the module ``module_name`` (already in ``sys.modules``) a :class:`CallableModule`.

    Call it at the end of the module, after its namesake function is defined:
    ``make_callable(__name__)``.

    Raises:
        TypeError: the module has no callable of its own name.
    """
    module = sys.modules[module_name]
    name = module_name.rpartition(".")[2]
    if not callable(module.__dict__.get(name)):
        raise TypeError(f"module_name: {module_name!r} defines no function {name!r} to call")
    module.__class__ = CallableModule
