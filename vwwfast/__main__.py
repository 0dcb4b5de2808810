from vwwfast.cli import main

raise SystemExit(main())
