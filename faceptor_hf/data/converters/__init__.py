"""One module per native release; importing this package registers every converter in ``NATIVE_DATASETS``.

Modules are found by listing this folder, so adding a converter is adding a file.
"""

import importlib
import pkgutil

for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
