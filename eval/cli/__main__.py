from couplednoise.eval.cli import main

raise SystemExit(main())
