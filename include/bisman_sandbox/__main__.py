import sys

from bisman_sandbox.launcher import main

sys.exit(main())
