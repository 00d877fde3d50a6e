from mfpipe.cli import main

raise SystemExit(main())
