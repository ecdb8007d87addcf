from docintel.cli.main import main

main()
