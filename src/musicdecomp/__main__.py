from musicdecomp.cli import main

raise SystemExit(main())
