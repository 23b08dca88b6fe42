import sys

from outcall.cli import main

sys.exit(main())
