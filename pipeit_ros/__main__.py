"""`python -m pipeit_ros` is the `pipeit` command."""
import sys

from pipeit_ros.cli import main

sys.exit(main())
