from jaxsim.cli import main

raise SystemExit(main())
