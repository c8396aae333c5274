"""Tests of the package's import graph: no circles between colorjax's modules, deferred imports
included, and the leaf modules stay leaves."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "colorjax"
# Modules that import no other colorjax module except these pure helpers.
LEAVES = ("color", "sharding", "torch_weights", "flops", "paths", "compilation_cache")
HELPERS = {"paths"}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """{module: the colorjax modules it imports anywhere in its body}."""
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
          and node.module.startswith("colorjax"):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          targets.add(full if full in modules else node.module)
      elif isinstance(node, ast.Import):
        targets |= {a.name for a in node.names if a.name.startswith("colorjax")}
    # A package's own submodules are not a dependency of the package on itself.
    graph[name] = {t for t in targets if t != name and not t.startswith(name + ".")}
  return graph


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state and (found := visit(target)):
        return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_circle():
  cycle = _cycle(import_graph())
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_no_other_colorjax_module(leaf):
  imported = import_graph()[f"colorjax.{leaf}"] - {f"colorjax.{h}" for h in HELPERS}
  assert not imported, f"colorjax.{leaf} imports {sorted(imported)}"
