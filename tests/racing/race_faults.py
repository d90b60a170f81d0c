"""Run the evomerge CLI, dying (os._exit, as kill -9 does: no cleanup) in the middle of a staged evaluation.

EVOMERGE_CRASH_DECIDE=N: exit with status 9 at the N-th racing decision of this process (after a stage of a
candidate was scored, before the next one).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    target = int(os.environ.get("EVOMERGE_CRASH_DECIDE", "0"))
    if target:
        from evomerge.racing import request

        original = request.RaceRequest.decide
        calls = {"n": 0}

        def decide(self, *a, **k):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == target:
                os._exit(9)
            return original(self, *a, **k)

        request.RaceRequest.decide = decide  # type: ignore[method-assign]
    from evomerge.cli import main

    sys.argv = ["evomerge", *sys.argv[1:]]
    main()
