from adabert.cli import main

raise SystemExit(main())
