"""Papermill parameters against a notebook's declared ones: ``-p profle cpu`` is an error, not a warning.

Light on purpose (no torch): a notebook's first cell can call :func:`check_parameters` cheaply, and
:func:`histolib.notebook.start` calls it before anything else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

from histolib.errors import ParamError

INJECTED_MARKER = "# Parameters"  # the first line of the cell papermill injects (papermill.translators)


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at its top level (``a = ...``, ``a: int = ...``, ``a, b = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []

    def collect(target) -> None:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                collect(t)
        elif isinstance(target, ast.Starred):
            collect(target.value)

    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                collect(t)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            collect(node.target)
    return names


def _ipython_history() -> list[str]:
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    ip = get_ipython()
    return list(ip.user_ns.get("In", [])) if ip is not None else []


def check_parameters(history: Sequence[str] | None = None, declared: Iterable[str] | None = None) -> list[str]:
    """Refuse papermill parameters that the notebook does not declare (papermill itself only warns).

    papermill puts the values of ``-p``/``-y``/``-f`` in a cell that begins with ``# Parameters``, right
    after the cell tagged ``parameters``. This finds the last such cell in the kernel's input history
    and compares the names it assigns with the declared ones.

    Args:
        history: executed cell sources in order (default: IPython's ``In``; empty outside IPython).
        declared: the notebook's parameters (default: the names assigned by the cell executed just before
            the injected one, which is the cell tagged ``parameters``).

    Returns:
        The injected names (``[]`` when papermill injected nothing).

    Raises:
        ParamError: naming the unknown parameters and the allowed ones.
    """
    history = _ipython_history() if history is None else list(history)
    at = next((i for i in range(len(history) - 1, -1, -1)
               if history[i].lstrip().startswith(INJECTED_MARKER)), None)
    if at is None:
        return []
    injected = assigned_names(history[at])
    if declared is None:
        before = [h for h in history[:at] if h.strip()]
        declared = assigned_names(before[-1]) if before else []
    declared = list(dict.fromkeys(declared))
    unknown = [n for n in injected if n not in declared]
    if unknown:
        raise ParamError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))} (papermill -p/-y); "
                         f"this notebook's parameters: {', '.join(declared) or 'none'}")
    return injected
