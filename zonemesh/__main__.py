from zonemesh.cli.main import main

main()
