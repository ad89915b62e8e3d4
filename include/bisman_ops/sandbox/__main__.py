import sys

from bisman_ops.sandbox.launcher import main

sys.exit(main())
