"""A module no payload may ever import or run: the fuzz and security tests name it
in job hashes, then check it is not in sys.modules and that explode() left no file.
(Test modules must not import it: they read CANARY_FILE from tests.faults.garbage.)"""

from __future__ import annotations

from tests.faults.garbage import CANARY_FILE


def explode(*args, **kwargs) -> None:
    CANARY_FILE.write_text("a payload ran tests.faults.canary.explode")
