from phiquant.cli import main

main()
