"""``python -m couplednoise`` = the ``couplednoise`` command (as ``accelerate launch -m couplednoise``).

An entry module only: ``import couplednoise`` never loads it, so the core stays torch-only.
"""

from couplednoise.eval.cli import main

raise SystemExit(main())
