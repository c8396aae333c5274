"""Tests of the package's import graph: no circles between colorjax's modules, deferred imports
included; the leaf modules stay leaves; models import no training or metric code; no module uses
another's private names; colorjax imports sit at the top of files except where a file says why."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "colorjax"
# Modules that import no other colorjax module except these pure helpers (a package: none outside
# itself).
LEAVES = ("color", "config", "sharding", "ops", "torch_weights", "checkpoint", "report", "flops",
          "paths", "workdir", "compilation_cache")
HELPERS = {"paths", "workdir"}
# Files that may import colorjax modules inside functions, saying why: the CLI (each command loads
# only what it uses) and the model registry (one model module does not import the others).
DEFERRING = {"colorjax.cli", "colorjax.models"}


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """{module: the colorjax modules it imports anywhere in its body}."""
  modules = _modules()
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


def _is_within(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_no_other_colorjax_module(leaf):
  package = f"colorjax.{leaf}"
  graph = import_graph()
  imported = set()
  for module in graph:
    if _is_within(module, package):
      imported |= {t for t in graph[module] if not _is_within(t, package)}
  imported -= {f"colorjax.{h}" for h in HELPERS}
  assert not imported, f"{package} imports {sorted(imported)}"


def test_models_import_only_models_and_leaves():
  allowed = ("colorjax.models",) + tuple(f"colorjax.{leaf}" for leaf in LEAVES)
  for module, targets in import_graph().items():
    if _is_within(module, "colorjax.models"):
      outside = sorted(t for t in targets if not any(_is_within(t, a) for a in allowed))
      assert not outside, f"{module} imports {outside}: models know nothing of training or metrics"


def private_uses(source: str) -> list[str]:
  """`module._name` accesses and `from module import _name` imports of colorjax names in
  `source`, as 'line: text'."""
  tree = ast.parse(source)
  imported = set()  # local names bound to colorjax modules or their members
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
        and node.module.startswith("colorjax"):
      for alias in node.names:
        imported.add(alias.asname or alias.name)
        if alias.name.startswith("_"):
          found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("colorjax"):
          imported.add(alias.asname or alias.name.split(".")[0])
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
        and not node.attr.startswith("__"):
      root = node.value
      while isinstance(root, ast.Attribute):
        root = root.value
      if isinstance(root, ast.Name) and root.id in imported:
        found.append(f"{node.lineno}: {ast.unparse(node)}")
  return sorted(found, key=lambda use: int(use.split(":")[0]))


def test_no_module_uses_another_modules_private_names():
  found = {name: uses for name, path in _modules().items()
           if (uses := private_uses(path.read_text()))}
  assert not found, f"private names used across modules: {found}"


def test_the_private_use_finder_finds_them():
  source = ("import colorjax.train\nfrom colorjax import evaluate as ev\n"
            "from colorjax.data import _skip\nev._eval_step(1)\ncolorjax.train._update\n"
            "x = object()\nx._fine\nev.public")
  assert private_uses(source) == ["3: from colorjax.data import _skip", "4: ev._eval_step",
                                  "5: colorjax.train._update"]


def deferred_imports(source: str) -> list[str]:
  """colorjax imports below the top level of `source` (inside functions, classes, branches)."""
  tree = ast.parse(source)
  top = {id(node) for node in tree.body}
  found = []
  for node in ast.walk(tree):
    if id(node) in top:
      continue
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
        and node.module.startswith("colorjax"):
      found.append(f"{node.lineno}: from {node.module}")
    elif isinstance(node, ast.Import) and any(a.name.startswith("colorjax") for a in node.names):
      found.append(f"{node.lineno}: import {', '.join(a.name for a in node.names)}")
  return sorted(found, key=lambda use: int(use.split(":")[0]))


def test_colorjax_imports_are_at_the_top_of_files():
  found = {name: uses for name, path in _modules().items()
           if name not in DEFERRING and (uses := deferred_imports(path.read_text()))}
  assert not found, (f"colorjax imports inside functions: {found}; import at the top (only "
                     f"{sorted(DEFERRING)} may defer, saying why)")


def test_the_deferred_import_finder_finds_them():
  source = ("from colorjax import color\nimport numpy\n\ndef f():\n"
            "  from colorjax.models import heads\n  import colorjax.train\n  import os\n")
  assert deferred_imports(source) == ["5: from colorjax.models", "6: import colorjax.train"]
