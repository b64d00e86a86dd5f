from avatarcli.cli import main

main()
