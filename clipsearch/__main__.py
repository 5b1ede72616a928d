from clipsearch.cli.app import main

raise SystemExit(main())
