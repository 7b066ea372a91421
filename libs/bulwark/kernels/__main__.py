"""`python -m bulwark.kernels [build [--force] | status] [--json]`: build Bulwark's int8 kernel, or say where
it is.

Needs only torch and a C++ compiler, so an image that has no more than Triton and torch can run it too.
"""

import sys

from bulwark.kernels import main

sys.exit(main())
