#!/usr/bin/env bash
# Copy the pure-python packages vidur needs (cattrs, attrs, pyyaml, pluggy, tqdm,
# typing_extensions) from this machine's python into build/gpu_deps/<package>/, for a GPU
# machine that lacks some of them and cannot download (carry build/gpu_deps along; the GPU
# scripts add only the missing ones to PYTHONPATH). Compiled extensions are left out.
set -euo pipefail
PY="${PYTHON:-python}"
DEST="build/gpu_deps"
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" - "$DEST" <<'PY'
import importlib, shutil, sys
from pathlib import Path
dest = Path(sys.argv[1])
groups = {"cattrs": ["cattrs", "cattr"], "attrs": ["attrs", "attr"], "yaml": ["yaml"], "pluggy": ["pluggy"],
          "tqdm": ["tqdm"], "typing_extensions": ["typing_extensions"]}
for name, mods in groups.items():
    for mod in mods:
        m = importlib.import_module(mod)
        src = Path(m.__file__)
        out = dest / name
        out.mkdir(parents=True, exist_ok=True)
        if src.name == "__init__.py":
            shutil.copytree(src.parent, out / src.parent.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
        else:
            shutil.copy2(src, out / src.name)
    print(f"{name}: {getattr(importlib.import_module(mods[0]), '__version__', '?')}")
PY
du -sh "$DEST"
