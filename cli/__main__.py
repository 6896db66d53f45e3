from retouch.cli.main import main

main()
