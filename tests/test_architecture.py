"""The package stays easy to live in (issue 17's limits): no class over 250 lines, no function over
70, no module over 500; the variant names are compared in one module only (models/variants.py)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mmfa_jax"
VARIANT_NAMES = {"mmfa", "face_vid2vid"}
LIMITS = {"module": 500, "class": 250, "function": 70}


def _trees():
  for path in sorted(PACKAGE.rglob("*.py")):
    source = path.read_text()
    yield path.relative_to(PACKAGE.parent), source, ast.parse(source)


def test_size_limits():
  too_long = []
  for path, source, tree in _trees():
    if len(source.splitlines()) > LIMITS["module"]:
      too_long.append(f"{path}: {len(source.splitlines())} lines")
    for node in ast.walk(tree):
      kind = {ast.ClassDef: "class", ast.FunctionDef: "function"}.get(type(node))
      if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
        too_long.append(f"{path}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
  assert not too_long, too_long


def test_variant_names_are_compared_in_one_module():
  places = set()
  for path, _, tree in _trees():
    for node in ast.walk(tree):
      if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        values = set()
        for operand in operands:
          elements = (
            operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
          )
          values |= {e.value for e in elements if isinstance(e, ast.Constant)}
        if values & VARIANT_NAMES:
          places.add(str(path))
  assert places <= {"mmfa_jax/models/variants.py"}, places
