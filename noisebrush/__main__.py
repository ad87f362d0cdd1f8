import sys

from noisebrush.cli import main

sys.exit(main())
