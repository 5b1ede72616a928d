from clipsearch.cli.entry import main

raise SystemExit(main())
