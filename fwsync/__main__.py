from fwsync.cli import main

main()
