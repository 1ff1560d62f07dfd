"""Worker entry point: ``python -m dataplane --settings JSON --channel-fd N``.

Started by the control process's supervisor, never by hand. Exit codes tell
the supervisor what happened (see ``dataplane.worker``).
"""

import sys

from dataplane.worker import main

sys.exit(main(sys.argv[1:]))
