from lmsmith.cli import main

raise SystemExit(main())
