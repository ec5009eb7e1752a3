"""Package structure: the import layers of docs/DESIGN.md and a light `import tfrec_onerec`."""
import ast
from pathlib import Path

import pytest

from fresh_process import run_fresh

PACKAGE = Path(__file__).parent.parent / "tfrec_onerec"

# Layer of every top-level module or subpackage; a module may import its own layer or lower ones.
LAYERS = {
    "_environment": 0, "console": 0, "serialization": 0, "features": 1, "data": 1,
    "clustering": 2, "compat": 2, "layers": 2, "losses": 2, "metrics": 2,
    "models": 3,
    "training": 4, "evaluation": 4, "export": 4, "families": 4,
    "cli": 5, "demo": 5, "serving": 5,
}


def layer_of(path: Path) -> tuple:
    part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return part, LAYERS.get(part)


def imported_parts(path: Path) -> set:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "tfrec_onerec"
                                     else [])
        for name in names:
            bits = name.split(".")
            if bits[0] == "tfrec_onerec" and len(bits) > 1:
                parts.add(bits[1])
    return parts


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_run_downward(path):
    part, layer = layer_of(path)
    assert layer is not None, f"{part} has no layer in LAYERS; add it"
    for imported in imported_parts(path):
        assert imported in LAYERS, f"{path.name} imports unknown part {imported}"
        assert LAYERS[imported] <= layer, f"{part} (layer {layer}) imports {imported} (layer {LAYERS[imported]})"


def test_import_is_light_and_sets_the_keras_environment():
    # the heavy packages must stay unimported (checked in the child)
    out = run_fresh("""
        import json, os
        import tfrec_onerec, tfrec_onerec.models, tfrec_onerec.export, tfrec_onerec.cli
        print(json.dumps(os.environ["TF_USE_LEGACY_KERAS"]))
    """, forbidden=("tfx", "apache_beam", "tensorflow_transform", "tensorflow_ranking", "tensorflow_recommenders",
                    "torch"))
    assert out == "1"
