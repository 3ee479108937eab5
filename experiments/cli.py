"""What the command-line entry points share: bad input ends as one line ``error: ...`` on stderr
and exit status 2, before anything is compiled or written."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UsageError(ValueError):
  """Bad command-line input (or an unusable workdir, file or data set it names)."""


def exit_status(main: Callable[[], object], *usage_errors: type[Exception]) -> int:
  """Runs ``main()`` and returns the exit status: 0, or 2 with the message of a ``UsageError``
  (or one of ``usage_errors``) printed as ``error: ...``; any other exception propagates."""
  try:
    main()
  except (UsageError, *usage_errors) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
