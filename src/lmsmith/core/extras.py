"""Optional dependencies: a missing one becomes the one line that names the extra to install.

The default install keeps to what `lmsmith build` needs; the rest come with an extra
(`pip install 'lmsmith[sweep]'`). Importing through `require` instead of a bare `import` turns
the ImportError a user would otherwise see deep inside a stage into a UserError that says what
needed the package and which extra brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lmsmith.core.errors import UserError


def require(module: str, *, extra: str, purpose: str, package: str | None = None, also: str = "") -> ModuleType:
    """Import `module`; if missing, raise "PURPOSE needs PACKAGE: pip install 'lmsmith[EXTRA]'ALSO"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = package or module.split(".")[0]
        raise UserError(f"{purpose} needs {name}: pip install 'lmsmith[{extra}]'{also}") from None
