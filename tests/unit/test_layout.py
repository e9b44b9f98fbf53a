"""The project's layout: rooms that depend downward only, and a distribution that installs them all."""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

from tests.helpers import PROJECT_ROOT

NAMESPACE = "mnist_mlops"
# Each top-level folder is the package mnist_mlops.<folder>: a room.
ROOMS = ("common", "serve", "train", "registry")


def imports_of(path: Path) -> set[str]:
    """Every absolute module a file imports (at any depth of the file: function-level imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def room_graph() -> dict[str, set[str]]:
    """room -> the other rooms its modules import."""
    graph: dict[str, set[str]] = defaultdict(set)
    for room in ROOMS:
        for path in (PROJECT_ROOT / room).rglob("*.py"):
            for module in imports_of(path):
                parts = module.split(".")
                if parts[0] == NAMESPACE and len(parts) > 1 and parts[1] != room:
                    graph[room].add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path of rooms, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == 1:
                return [*path, node, neighbour]
            if neighbour not in state and (cycle := visit(neighbour, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_the_rooms():
    graph = room_graph()
    assert find_cycle(graph) is None, f"import cycle between rooms: {' -> '.join(find_cycle(graph))}"


def test_common_imports_no_other_room():
    assert room_graph().get("common", set()) == set()


def test_the_model_package_imports_nothing_of_the_project():
    """It ships inside every logged model under a name of its own: it may import only itself
    (relatively) and the model's logged requirements."""
    for path in (PROJECT_ROOT / "serve" / "model").glob("*.py"):
        ours = {m for m in imports_of(path) if m.split(".")[0] == NAMESPACE}
        assert not ours, f"{path.name} imports {sorted(ours)}"


def test_the_distribution_lists_every_package_of_every_room():
    """A wheel holds only the packages pyproject names: a subpackage missing there would be absent
    from a regular (not editable) install."""
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join((NAMESPACE, *init.parent.relative_to(PROJECT_ROOT).parts))
        for room in ROOMS
        for init in (PROJECT_ROOT / room).rglob("__init__.py")
    }
    assert listed == on_disk
    assert all(config["package-dir"][f"{NAMESPACE}.{room}"] == room for room in ROOMS)


def test_the_gateways_data_plane_does_not_import_its_control_plane():
    """The data plane (scoring and its stages) reads the shared state; only the shell that wires
    the two planes (the app factory and the command line) imports the control plane."""
    wiring = {"app.py", "cli.py", "__main__.py"}
    for path in (PROJECT_ROOT / "serve" / "gateway").glob("*.py"):
        if path.name in wiring:
            continue
        control = {m for m in imports_of(path) if m.startswith(f"{NAMESPACE}.serve.gateway.control")}
        assert not control, f"{path.name} imports {sorted(control)}"
