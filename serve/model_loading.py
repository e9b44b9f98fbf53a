"""Load a logged model with its own shipped code, not this checkout's.

Every logged model carries the modules it runs (``code_paths``: its copies of ``train/`` and
``serve/``), so a version logged months ago keeps answering as it did. But a process of ours has
already imported this project's ``serve`` and ``train`` packages (every CLI has), and Python then
resolves the model's ``import serve.model.pyfunc`` against those cached packages: the model runs
this checkout's code, or a mix of both when they differ (a version logged before the network
gained ``fused_for_inference`` failed to load that way). MLflow evicts cached modules by file name
only, not by package. So while a model loads, our packages are taken out of ``sys.modules``: the
model binds its own copies (the shipped modules import eagerly, nothing later), and the caller's
are put back afterwards. ``mlflow models serve`` never imports our packages, so it needs none of
this; the daemon Spark's Python workers fork from does, and forgets them before it forks
(``forget_our_packages``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

SHIPPED_PACKAGES = ("serve", "train")


def _ours() -> list[str]:
    return [name for name in sys.modules if name.partition(".")[0] in SHIPPED_PACKAGES]


def forget_our_packages() -> None:
    """Drop this checkout's ``serve`` and ``train`` modules from ``sys.modules`` for good, keeping
    every third-party module they imported: the next ``import serve...`` finds the model's copy."""
    for name in _ours():
        del sys.modules[name]


@contextlib.contextmanager
def shipped_code_first() -> Iterator[None]:
    """Within the block, ``import serve...``/``import train...`` find the model's code first."""
    saved = {name: sys.modules.pop(name) for name in _ours()}
    try:
        yield
    finally:
        forget_our_packages()
        sys.modules.update(saved)


def load_pyfunc(model_uri: str, check_environment: bool = True):
    """``mlflow.pyfunc.load_model`` running the model's own shipped code.

    ``check_environment=False`` skips MLflow's warnings about the model's environment (its pip
    requirements against the installed packages, its Python version): for processes whose parent
    has given them once for all (``warn_about_environment``). The requirements check reads the
    metadata of every installed distribution, about half a second per process.
    """
    import mlflow

    with shipped_code_first():
        return mlflow.pyfunc.load_model(model_uri, suppress_warnings=not check_environment)


def warn_about_environment(local_path: str) -> bool:
    """Log the warnings ``mlflow.pyfunc.load_model`` gives about the model at ``local_path``
    (a dependency it pins that is missing or at another version here, a Python version it was not
    logged with), without loading it. False, and nothing logged, when this MLflow lacks the
    functions that load_model calls for them, or the model cannot be read: each loader must then
    check for itself (and names what is wrong with the model when it fails to load it)."""
    try:
        from mlflow.models import Model
        from mlflow.pyfunc import (
            FLAVOR_NAME,
            PY_VERSION,
            _get_pip_requirements_from_model_path,
            _warn_potentially_incompatible_py_version_if_necessary,
        )
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches
    except ImportError:
        return False
    try:
        flavor = Model.load(local_path).flavors.get(FLAVOR_NAME) or {}
        requirements = _get_pip_requirements_from_model_path(local_path)
    except Exception:  # no MLmodel, an unreadable requirements file: the loader's error will say
        return False
    warn_dependency_requirement_mismatches(requirements)
    _warn_potentially_incompatible_py_version_if_necessary(model_py_version=flavor.get(PY_VERSION))
    return True
