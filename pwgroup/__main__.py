from pwgroup.cli import main

raise SystemExit(main())
